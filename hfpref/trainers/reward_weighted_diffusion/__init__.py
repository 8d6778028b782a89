"""BATON: reward-weighted fine-tuning of a text-to-audio latent diffusion model."""

from .reward_weighted_diffusion_config import RewardWeightedDiffusionConfig
from .reward_weighted_diffusion_trainer import RewardWeightedDiffusionTrainer


__all__ = ["RewardWeightedDiffusionConfig", "RewardWeightedDiffusionTrainer"]
