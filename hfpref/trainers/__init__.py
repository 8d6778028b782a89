"""
One package per training method (`hfpref/trainers/<method>/`, each a `<method>_config.py` beside a
`<method>_trainer.py`, as TRL's `trl/trainer/`). Names are imported on first use (PEP 562), so that training one
method never imports another method's extras (diffusers for reward-weighted diffusion, nltk for AlignCap).
"""

from .._lazy import lazy_exports


_SOURCES = {
    "AlignCapDPOConfig": ".aligncap_dpo",
    "AlignCapDPOTrainer": ".aligncap_dpo",
    "AlignCapKDConfig": ".aligncap_kd",
    "AlignCapKDTrainer": ".aligncap_kd",
    "AudibilityClassifierConfig": ".audibility_classifier",
    "AudibilityClassifierTrainer": ".audibility_classifier",
    "CaptionDPOConfig": ".caption_dpo",
    "CaptionDPOTrainer": ".caption_dpo",
    "CaptionGRPOConfig": ".caption_grpo",
    "CaptionGRPOTrainer": ".caption_grpo",
    "CaptionRLConfig": ".caption_rl",
    "CaptionRLTrainer": ".caption_rl",
    "CaptionSFTConfig": ".caption_sft",
    "CaptionSFTTrainer": ".caption_sft",
    "ClapContrastiveCollator": ".clap_contrastive",
    "ClapContrastiveConfig": ".clap_contrastive",
    "ClapContrastiveTrainer": ".clap_contrastive",
    "RewardModelConfig": ".reward_model",
    "RewardModelTrainer": ".reward_model",
    "RewardWeightedDiffusionConfig": ".reward_weighted_diffusion",
    "RewardWeightedDiffusionTrainer": ".reward_weighted_diffusion",
    "retrieval_metrics": ".clap_contrastive",
}
__all__ = sorted(_SOURCES)

__getattr__, __dir__ = lazy_exports(__name__, _SOURCES, globals())
