"""AlignCap preference optimisation: DPO (TRL's DPOTrainer) on speech-token prompts, usually with LoRA."""

from .aligncap_dpo_config import AlignCapDPOConfig
from .aligncap_dpo_trainer import AlignCapDPOTrainer


__all__ = ["AlignCapDPOConfig", "AlignCapDPOTrainer"]
