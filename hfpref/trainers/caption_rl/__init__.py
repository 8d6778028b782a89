"""RL fine-tuning of seq2seq audio captioners: SCST, RLOO and PPO-style updates with a reward model."""

from .caption_rl_config import CaptionRLConfig
from .caption_rl_trainer import CaptionRLTrainer


__all__ = ["CaptionRLConfig", "CaptionRLTrainer"]
