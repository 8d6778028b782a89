from dataclasses import dataclass, field

from transformers import TrainingArguments

from ...hub.cards import CardConfigMixin
from ...utils.checks import check_training_arguments
from ..base_config import AudioConfigMixin


LOSS_TYPES = ["symmetric", "model"]


@dataclass
class ClapContrastiveConfig(CardConfigMixin, AudioConfigMixin, TrainingArguments):
    r"""
    Configuration of the [`ClapContrastiveTrainer`], which fits or adapts a `transformers` `ClapModel` on (audio,
    caption) pairs with the contrastive objective of LAION-CLAP (https://huggingface.co/papers/2211.06687). Only the
    parameters specific to contrastive audio-text training are listed here; see [`~transformers.TrainingArguments`]
    for the rest. Some defaults differ from `TrainingArguments` (see the end of this docstring).

    Parameters:
        audio_column (`str`, *optional*, defaults to `"audio"`):
            Column holding the audio: `datasets.Audio` (decoding or not), file paths or `{"bytes", "path"}` dicts. It
            is never decoded through `datasets`; [`~hfpref.data.audio.decode_audio`] decodes it at the feature
            extractor's sampling rate.
        text_column (`str`, *optional*, defaults to `"caption"`):
            Column holding each clip's caption. Evaluation always uses it.
        references_column (`str` or `None`, *optional*, defaults to `"references"`):
            Column holding a list of captions per clip. When set and present in the training set, each training step
            pairs a clip with one of its references drawn at random (text augmentation); rows with an empty list fall
            back to `text_column`. Ignored when absent.
        max_audio_seconds (`float` or `None`, *optional*, defaults to `None`):
            Clips longer than this are cut to it before feature extraction: a random window in training, the first
            window in evaluation. `None` hands whole clips to the feature extractor, which crops (`"rand_trunc"`) or
            fuses (`"fusion"`) them to its own `max_length_s`.
        cache_audio_features (`bool`, *optional*, defaults to `False`):
            Keep each clip's spectrogram in memory after its first use (keyed by the clip's content), for clips whose
            features involve no random crop: no longer than the feature extractor's `max_length_s` or
            `max_audio_seconds`, and every clip in evaluation. From the second epoch on this skips the feature
            extractor, which dominates a tiny CLAP's step (about 1.8x faster steps on the synthetic world). It costs one spectrogram per
            clip (64 KB for the tiny CLAP, 256 KB for the LAION checkpoints) in each dataloader process: leave it off
            for large datasets.
        freeze_text_encoder (`bool`, *optional*, defaults to `False`):
            Freeze the text encoder (`model.text_model`, kept in eval mode); `text_projection` still trains.
        freeze_audio_encoder (`bool`, *optional*, defaults to `False`):
            Freeze the audio encoder (`model.audio_model`, kept in eval mode so its batch-norm statistics stay);
            `audio_projection` still trains.
        loss_type (`str`, *optional*, defaults to `"symmetric"`):
            `"symmetric"`: the mean of the audio-to-text and text-to-audio cross-entropies over in-batch negatives,
            LAION-CLAP's equation (3). `"model"`: the loss `ClapModel` returns with `return_loss=True`; in
            `transformers` 5.x both of its terms rank audio for each caption (`logits_per_audio.t()` equals
            `logits_per_text` up to the temperature), so clips are never asked to pick their caption among others.
        retrieval_group_column (`str` or `None`, *optional*, defaults to `None`):
            Evaluation column whose equal values count as interchangeable in the retrieval metrics (a sound-class
            label, or `"events"` in the synthetic world), so that retrieving another clip of the same group is a hit.
            `None`: only a clip's own caption is a hit.
        hard_negatives_column (`str` or `None`, *optional*, defaults to `None`):
            Training column holding, per clip, a list of captions that describe it wrongly (an event hallucinated,
            omitted, swapped in order, substituted). Each clip then picks its caption among the batch's captions and its
            own hard negatives, as in T-CLAP (https://huggingface.co/papers/2404.17806); the text-to-audio term is
            unchanged, and evaluation never uses them. `None`: in-batch negatives only.
        synthetic_hard_negatives (`int`, *optional*, defaults to `0`):
            When positive, each training step gives each clip this many hard negatives of distinct kinds (fewer when
            its events admit fewer), drawn afresh with
            [`~hfpref.data.synthetic.audio_world.make_caption_variants`] from the clip's `"events"` column (the
            synthetic world's event names in temporal order). Exclusive with `hard_negatives_column`.

    Defaults that differ from `TrainingArguments`: `learning_rate=1e-3`, for a randomly initialised tiny CLAP (on the
    synthetic world it learns from 1e-3 to 3e-3, faster at 3e-3; adapting a pretrained checkpoint wants about `1e-5`);
    `per_device_train_batch_size=32` (in-batch negatives: a larger batch is a harder, more informative task; 64 learned
    faster per step on the synthetic world); `per_device_eval_batch_size=64`; `warmup_steps=0.05` (a fraction of the
    training steps); `logging_steps=10`; `remove_unused_columns=False` (the trainer selects the columns it reads).
    """

    text_column: str = field(default="caption", metadata={"help": "Column holding each clip's caption."})
    references_column: str | None = field(
        default="references",
        metadata={"help": "Column of caption lists; training draws one per clip and step. Ignored when absent."},
    )
    max_audio_seconds: float | None = field(
        default=None, metadata={"help": "Cut longer clips to this many seconds before feature extraction."}
    )
    cache_audio_features: bool = field(
        default=False, metadata={"help": "Keep each clip's spectrogram in memory after its first use."}
    )
    freeze_text_encoder: bool = field(default=False, metadata={"help": "Freeze model.text_model."})
    freeze_audio_encoder: bool = field(default=False, metadata={"help": "Freeze model.audio_model."})
    loss_type: str = field(default="symmetric", metadata={"help": f"One of {LOSS_TYPES}."})
    retrieval_group_column: str | None = field(
        default=None, metadata={"help": "Evaluation column whose equal values count as the same item in retrieval."}
    )
    hard_negatives_column: str | None = field(
        default=None,
        metadata={"help": "Training column of wrong captions per clip, added to its audio-to-text softmax (T-CLAP)."},
    )
    synthetic_hard_negatives: int = field(
        default=0,
        metadata={"help": "Hard negatives per clip and step, drawn from the synthetic world's 'events' column."},
    )

    # TrainingArguments defaults that suit a tiny CLAP trained from scratch.
    learning_rate: float = field(default=1e-3, metadata={"help": "Initial learning rate."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Batch size per device for training."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Batch size per device for evaluation."})
    warmup_steps: float = field(
        default=0.05, metadata={"help": "Linear warm-up: a number of steps, or a fraction of them when below 1."}
    )
    logging_steps: float = field(default=10, metadata={"help": "Log every X updates steps."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "The trainer selects the columns it reads; other columns are dropped."}
    )

    def __post_init__(self):
        for name in ("audio_column", "text_column"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name}={value!r} must be a non-empty column name")
        columns = {"audio_column": self.audio_column, "text_column": self.text_column}
        for name in ("references_column", "retrieval_group_column", "hard_negatives_column"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name}={value!r} must be a non-empty column name or None")
        for name in ("references_column", "hard_negatives_column"):
            if getattr(self, name) is not None:
                columns[name] = getattr(self, name)
        names = list(columns.values())
        if len(set(names)) != len(names):
            raise ValueError(
                f"audio_column, text_column, references_column and hard_negatives_column must differ, got {columns}"
            )
        if isinstance(self.synthetic_hard_negatives, bool) or not isinstance(self.synthetic_hard_negatives, int):
            raise ValueError(f"synthetic_hard_negatives={self.synthetic_hard_negatives!r} must be an integer")
        if self.synthetic_hard_negatives < 0:
            raise ValueError(f"synthetic_hard_negatives={self.synthetic_hard_negatives} must be 0 (off) or positive")
        if self.synthetic_hard_negatives and self.hard_negatives_column is not None:
            raise ValueError(
                f"synthetic_hard_negatives={self.synthetic_hard_negatives} draws the hard negatives from 'events'; "
                f"set it to 0 to use hard_negatives_column={self.hard_negatives_column!r}, or unset the column"
            )
        if self.max_audio_seconds is not None and not self.max_audio_seconds > 0:
            raise ValueError(
                f"max_audio_seconds={self.max_audio_seconds} must be positive, or None to keep whole clips"
            )
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type={self.loss_type!r} is not one of {LOSS_TYPES}")
        if self.loss_type != "symmetric" and (self.hard_negatives_column is not None or self.synthetic_hard_negatives):
            raise ValueError(
                f"Hard negatives need loss_type='symmetric' (the model's own loss has no place for them), got "
                f"loss_type={self.loss_type!r}"
            )
        check_training_arguments(self)
        super().__post_init__()
