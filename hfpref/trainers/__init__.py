from .caption_rl_config import CaptionRLConfig
from .caption_rl_trainer import CaptionRLTrainer
from .reward_model_config import RewardModelConfig
from .reward_model_trainer import RewardModelTrainer


__all__ = ["CaptionRLConfig", "CaptionRLTrainer", "RewardModelConfig", "RewardModelTrainer"]
