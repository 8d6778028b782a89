from ..models.modeling_clap_reward import (
    ClapMismatchError,
    CLAPRewardConfig,
    CLAPRewardModel,
    CLAPRewardOutput,
    check_clap_pairing,
)
from .functions import (
    REWARD_FUNCTIONS,
    get_cider_reward,
    get_clap_similarity_reward,
    get_reward_func,
    get_reward_model_reward,
    length_penalty,
    with_length_penalty,
    with_repetition_penalty,
)
from .losses import binary_feedback_loss, bradley_terry_loss, l2_penalty


__all__ = [
    "CLAPRewardConfig",
    "CLAPRewardModel",
    "CLAPRewardOutput",
    "ClapMismatchError",
    "REWARD_FUNCTIONS",
    "binary_feedback_loss",
    "bradley_terry_loss",
    "check_clap_pairing",
    "get_cider_reward",
    "get_clap_similarity_reward",
    "get_reward_func",
    "get_reward_model_reward",
    "l2_penalty",
    "length_penalty",
    "with_length_penalty",
    "with_repetition_penalty",
]
