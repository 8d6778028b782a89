from .audio import AudioDecodeError, decode_audio, decode_audio_column, drop_bad_audio, ensure_audio_column
from .fense import load_fense
from .loading import load_any_dataset
from .preference import (
    add_synthetic_negatives,
    challenging_split,
    load_binary_feedback,
    load_preference_dataset,
    split_by_clip,
)
from .schemas import SCHEMAS, validate_dataset
from .synthetic import EVENT_KINDS, make_speech_world, make_world


__all__ = [
    "EVENT_KINDS",
    "SCHEMAS",
    "AudioDecodeError",
    "add_synthetic_negatives",
    "challenging_split",
    "decode_audio",
    "decode_audio_column",
    "drop_bad_audio",
    "ensure_audio_column",
    "load_any_dataset",
    "load_binary_feedback",
    "load_fense",
    "load_preference_dataset",
    "make_speech_world",
    "make_world",
    "split_by_clip",
    "validate_dataset",
]
