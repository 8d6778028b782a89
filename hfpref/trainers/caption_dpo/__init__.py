"""Direct Preference Optimization of audio captioners (audio LLMs and seq2seq) on (audio, chosen, rejected) pairs."""

from .caption_dpo_config import CaptionDPOConfig
from .caption_dpo_trainer import CaptionDPOTrainer


__all__ = ["CaptionDPOConfig", "CaptionDPOTrainer"]
