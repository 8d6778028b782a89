"""AlignCap preference optimisation: DPO (TRL's DPOTrainer) on speech-token prompts, usually with LoRA."""

from .aligncap_dpo_trainer import AlignCapDPOTrainer


__all__ = ["AlignCapDPOTrainer"]
