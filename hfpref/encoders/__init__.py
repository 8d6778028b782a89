"""Encoders: the CLAP embedder and its on-disk embedding cache."""

from .cache import EmbeddingCache
from .clap import (
    DEFAULT_CLAP_CHECKPOINT,
    ClapEmbedder,
    build_tiny_clap,
    load_clap,
    model_fingerprint,
    tiny_clap_config,
    tiny_clap_feature_extractor,
    train_clap_tokenizer,
)


__all__ = [
    "DEFAULT_CLAP_CHECKPOINT",
    "ClapEmbedder",
    "EmbeddingCache",
    "build_tiny_clap",
    "load_clap",
    "model_fingerprint",
    "tiny_clap_config",
    "tiny_clap_feature_extractor",
    "train_clap_tokenizer",
]
