from dataclasses import dataclass, field

from transformers import Seq2SeqTrainingArguments


@dataclass
class CaptionScriptArguments:
    r"""
    Data arguments shared by the captioning recipes (`caption_sft.py`, `caption_rl.py`).
    Exactly one source: `dataset_name` or `synthetic_clips`.

    Parameters:
        dataset_name (`str`, *optional*): Hub id, `save_to_disk` folder or data file with an audio column.
        dataset_train_split (`str`, *optional*, defaults to `"train"`): training split.
        dataset_test_split (`str`, *optional*): evaluation split; without one, `test_size` of the rows are held out.
        synthetic_clips (`int`, *optional*): use a synthetic world of this many clips instead.
        synthetic_seed (`int`, *optional*, defaults to `0`): seed of the synthetic world and the split.
        test_size (`float`, *optional*, defaults to `0.1`): share held out when there is no test split.
        caption_column (`str`, *optional*, defaults to `"caption"`): caption column (SFT targets).
        max_train_samples (`int`, *optional*): keep only the first `max_train_samples` training rows.
    """

    dataset_name: str | None = None
    dataset_train_split: str = "train"
    dataset_test_split: str | None = None
    synthetic_clips: int | None = None
    synthetic_seed: int = 0
    test_size: float = 0.1
    caption_column: str = "caption"
    max_train_samples: int | None = None

    def __post_init__(self):
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise ValueError(f"max_train_samples={self.max_train_samples} must be a positive number of rows")
        sources = [name for name in ("dataset_name", "synthetic_clips") if getattr(self, name)]
        if len(sources) != 1:
            raise ValueError(f"give exactly one data source of ['dataset_name', 'synthetic_clips'], got {sources}")
        if not 0.0 < self.test_size < 1.0:
            raise ValueError(f"test_size={self.test_size} must lie in (0, 1)")


@dataclass
class CaptionerArguments:
    r"""
    The captioner to fine-tune.

    Parameters:
        model_name_or_path (`str`, *optional*):
            An `AutoModelForSpeechSeq2Seq` checkpoint (Whisper-architecture captioner, `SpeechEncoderDecoderModel`)
            with its processor. Loaded from safetensors; remote code is never trusted.
        tiny_captioner (`bool`, *optional*, defaults to `False`):
            Build a 2-layer Whisper-architecture captioner from a config, with a tokenizer trained on the
            training captions (offline runs and tests).
        tiny_clip_seconds (`float`, *optional*, defaults to `4.0`): the tiny captioner's audio window.
    """

    model_name_or_path: str | None = None
    tiny_captioner: bool = False
    tiny_clip_seconds: float = 4.0

    def __post_init__(self):
        if bool(self.model_name_or_path) == self.tiny_captioner:
            raise ValueError("give either model_name_or_path or tiny_captioner: true (exactly one)")


@dataclass
class CaptionSFTConfig(Seq2SeqTrainingArguments):
    r"""
    Configuration of supervised captioner training (`recipes/caption_sft.py`), on
    [`~transformers.Seq2SeqTrainingArguments`].

    Parameters:
        audio_column (`str`, *optional*, defaults to `"audio"`): audio column.
        max_caption_tokens (`int`, *optional*, defaults to `64`): captions are truncated to this many tokens.
    """

    audio_column: str = field(default="audio", metadata={"help": "Audio column."})
    max_caption_tokens: int = field(default=64, metadata={"help": "Longest caption, in tokens."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "The collator picks its own columns."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Initial learning rate."})

    def __post_init__(self):
        from ..utils.checks import check_training_arguments

        check_training_arguments(self)  # a bad YAML stops here, before any data work
        if self.max_caption_tokens < 2:
            raise ValueError(f"max_caption_tokens={self.max_caption_tokens} must leave room for a token and eos")
        super().__post_init__()
