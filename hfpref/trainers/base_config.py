"""
What every method's config shares, in one place: the papers' schedules as named presets, and the audio column.

These are mixins, not [`~transformers.TrainingArguments`] subclasses, so that a config can put them in front of any
arguments class (`TrainingArguments`, `Seq2SeqTrainingArguments`, TRL's `DPOConfig` or `GRPOConfig`) without
re-declaring, and so resetting, the defaults that class sets:

```python
@dataclass
class CaptionRLConfig(AudioConfigMixin, TrainingArguments):
    presets = PRESETS
    ...
```

The dataclass then lists the arguments class's fields first, then `audio_column`, then the method's own fields; the
method's `__post_init__` validates its own fields and calls `super().__post_init__()`, which reaches the arguments
class (the mixins have none).
"""

from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar


ConfigT = TypeVar("ConfigT", bound="HfprefConfigMixin")


class HfprefConfigMixin:
    r"""
    Named presets for a method's config: `Config.from_preset("paper", output_dir=...)`.

    Class attributes:
        presets (`dict[str, dict[str, Any]]`):
            Preset name -> field values, e.g. a paper's schedule (epochs, batch size, optimizer). Each config sets its
            own; the default is no preset.

    Example:

    ```python
    >>> from hfpref.trainers import RewardModelConfig
    >>> args = RewardModelConfig.from_preset("paper_pairwise", output_dir="out", report_to="none")
    >>> args.num_train_epochs, args.per_device_train_batch_size, args.loss_type
    (70, 64, 'bt')

    ```
    """

    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def from_preset(cls: type[ConfigT], preset: str, **overrides) -> ConfigT:
        """The schedule `preset` (one of `presets`), with `overrides` on top."""
        if preset not in cls.presets:
            raise ValueError(f"preset={preset!r} is not one of {sorted(cls.presets)}")
        return cls(**{**cls.presets[preset], **overrides})


@dataclass
class AudioConfigMixin(HfprefConfigMixin):
    r"""
    [`HfprefConfigMixin`] for methods that read audio from a dataset column.

    Parameters:
        audio_column (`str`, *optional*, defaults to `"audio"`):
            Column holding the audio (a `datasets.Audio` feature, file paths or `{"bytes", "path"}` dicts).
    """

    audio_column: str = field(default="audio", metadata={"help": "Column holding the audio."})
