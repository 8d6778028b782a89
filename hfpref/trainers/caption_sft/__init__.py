"""Supervised fine-tuning of an audio captioner (transformers' Seq2SeqTrainer), the baseline that RL aligns."""

from .caption_sft_config import CaptionSFTConfig
from .caption_sft_trainer import CaptionSFTTrainer


__all__ = ["CaptionSFTConfig", "CaptionSFTTrainer"]
