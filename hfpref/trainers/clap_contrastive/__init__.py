"""Contrastive (CLAP-style) training of the audio-text encoder the reward model is built on."""

from .clap_contrastive_config import ClapContrastiveConfig
from .clap_contrastive_trainer import ClapContrastiveCollator, ClapContrastiveTrainer, retrieval_metrics


__all__ = ["ClapContrastiveCollator", "ClapContrastiveConfig", "ClapContrastiveTrainer", "retrieval_metrics"]
