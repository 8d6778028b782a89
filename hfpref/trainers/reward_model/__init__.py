"""The reward model: a CLAP reward head trained on preference pairs (Bradley-Terry) or binary feedback (BCE/MSE)."""

from .reward_model_config import RewardModelConfig
from .reward_model_trainer import RewardModelTrainer


__all__ = ["RewardModelConfig", "RewardModelTrainer"]
