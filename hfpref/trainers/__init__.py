from .reward_model_config import RewardModelConfig
from .reward_model_trainer import RewardModelTrainer


__all__ = ["RewardModelConfig", "RewardModelTrainer"]
