from .caption_rl_config import CaptionRLConfig
from .caption_rl_trainer import CaptionRLTrainer
from .clap_contrastive_config import ClapContrastiveConfig, ClapContrastiveScriptArguments, ClapModelArguments
from .clap_contrastive_trainer import ClapContrastiveCollator, ClapContrastiveTrainer, retrieval_metrics
from .kd_align_config import KDAlignConfig
from .kd_align_trainer import KDAlignTrainer
from .reward_model_config import RewardModelConfig
from .reward_model_trainer import RewardModelTrainer
from .reward_weighted_diffusion_config import RewardWeightedDiffusionConfig
from .reward_weighted_diffusion_trainer import RewardWeightedDiffusionTrainer


__all__ = [
    "CaptionRLConfig",
    "CaptionRLTrainer",
    "ClapContrastiveCollator",
    "ClapContrastiveConfig",
    "ClapContrastiveScriptArguments",
    "ClapContrastiveTrainer",
    "ClapModelArguments",
    "KDAlignConfig",
    "KDAlignTrainer",
    "RewardModelConfig",
    "RewardModelTrainer",
    "RewardWeightedDiffusionConfig",
    "RewardWeightedDiffusionTrainer",
    "retrieval_metrics",
]
