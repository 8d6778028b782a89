from dataclasses import dataclass, field

from transformers import Seq2SeqTrainingArguments

from ...hub.cards import CardConfigMixin
from ..base_config import AudioConfigMixin


@dataclass
class CaptionSFTConfig(CardConfigMixin, AudioConfigMixin, Seq2SeqTrainingArguments):
    r"""
    Configuration of supervised captioner training (`recipes/caption_sft.py`), on
    [`~transformers.Seq2SeqTrainingArguments`].

    Parameters:
        max_caption_tokens (`int`, *optional*, defaults to `64`): captions are truncated to this many tokens.
        caption_language (`str`, *optional*, defaults to `"en"`): language token of a multilingual Whisper
            captioner's decoder prompt (`<|startoftranscript|><|en|><|transcribe|><|notimestamps|>`), fixed in its
            generation config so decoding never detects a language (see
            [`~hfpref.models.captioning.prepare_captioner`]); ignored by captioners without language tokens.

    The audio is read from `audio_column` ([`~hfpref.trainers.base_config.AudioConfigMixin`]).
    """

    max_caption_tokens: int = field(default=64, metadata={"help": "Longest caption, in tokens."})
    caption_language: str = field(
        default="en", metadata={"help": "Language token of a multilingual Whisper captioner's decoder prompt."}
    )
    remove_unused_columns: bool = field(default=False, metadata={"help": "The collator picks its own columns."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Initial learning rate."})

    def __post_init__(self):
        from ...utils.checks import check_training_arguments

        check_training_arguments(self)  # a bad YAML stops here, before any data work
        if self.max_caption_tokens < 2:
            raise ValueError(f"max_caption_tokens={self.max_caption_tokens} must leave room for a token and eos")
        super().__post_init__()
