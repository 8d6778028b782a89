from dataclasses import dataclass, field

from transformers import TrainingArguments

from ...hub.cards import CardConfigMixin
from ..base_config import HfprefConfigMixin


# Classifier-Guided Captioning Across Modalities (https://huggingface.co/papers/2501.03183), section IV:
# DistilBERT, AdamW, batch 64, learning rate 3e-4, 40 epochs, learning rate x0.1 every 10 epochs.
PRESETS: dict[str, dict] = {
    "paper": {
        "optim": "adamw_torch",
        "per_device_train_batch_size": 64,
        "learning_rate": 3e-4,
        "num_train_epochs": 40,
        "lr_decay_every_epochs": 10,
        "lr_decay_factor": 0.1,
    },
}


@dataclass
class AudibilityClassifierConfig(CardConfigMixin, HfprefConfigMixin, TrainingArguments):
    r"""
    Configuration of the [`AudibilityClassifierTrainer`], which fine-tunes an `AutoModelForSequenceClassification`
    (DistilBERT by default) to tell audible sentences (label 1) from non-audible ones (label 0). Only the parameters
    specific to it are listed here; see [`~transformers.TrainingArguments`] for the rest.

    Parameters:
        lr_decay_every_epochs (`int` or `None`, *optional*, defaults to `None`):
            Multiply the learning rate by `lr_decay_factor` every this many epochs (a step schedule, the paper's
            x0.1 every 10 epochs); it replaces `lr_scheduler_type`. `None` keeps `lr_scheduler_type`.
        lr_decay_factor (`float`, *optional*, defaults to `0.1`):
            Factor of each step of the step schedule, in (0, 1].

    Presets: `AudibilityClassifierConfig.from_preset("paper", output_dir=...)` (AdamW, batch 64, lr 3e-4, 40 epochs,
    lr x0.1 every 10 epochs).

    Example:

    ```python
    >>> args = AudibilityClassifierConfig.from_preset("paper", output_dir="out", report_to="none")
    >>> args.per_device_train_batch_size, args.learning_rate, args.num_train_epochs, args.lr_decay_every_epochs
    (64, 0.0003, 40, 10)

    ```
    """

    presets = PRESETS

    lr_decay_every_epochs: int | None = field(
        default=None, metadata={"help": "Multiply the learning rate by lr_decay_factor every this many epochs."}
    )
    lr_decay_factor: float = field(default=0.1, metadata={"help": "Factor of each step of the step schedule."})

    learning_rate: float = field(default=3e-4, metadata={"help": "Initial learning rate."})
    per_device_train_batch_size: int = field(default=64, metadata={"help": "Batch size per device for training."})
    per_device_eval_batch_size: int = field(default=128, metadata={"help": "Batch size per device for evaluation."})
    optim: str = field(default="adamw_torch", metadata={"help": "The optimizer to use."})
    logging_steps: float = field(default=10, metadata={"help": "Log every X updates steps."})

    def __post_init__(self):
        if self.lr_decay_every_epochs is not None and self.lr_decay_every_epochs < 1:
            raise ValueError(
                f"lr_decay_every_epochs={self.lr_decay_every_epochs} must be >= 1 or None (no step decay)"
            )
        if not 0.0 < self.lr_decay_factor <= 1.0:
            raise ValueError(f"lr_decay_factor={self.lr_decay_factor} must lie in (0, 1]")
        super().__post_init__()
