"""Decoder-only captioners (audio as speech tokens) trained with TRL's GRPOTrainer / RLOOTrainer and hfpref rewards."""

from .caption_grpo_config import CaptionGRPOConfig
from .caption_grpo_trainer import CaptionGRPOTrainer
from .caption_grpo_utils import audio_tokenizer_for, frame_band_tokens


__all__ = ["CaptionGRPOConfig", "CaptionGRPOTrainer", "audio_tokenizer_for", "frame_band_tokens"]
