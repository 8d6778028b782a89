from dataclasses import dataclass, field

from transformers import TrainingArguments


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
class AudibilityClassifierConfig(TrainingArguments):
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

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> "AudibilityClassifierConfig":
        """The paper schedule `preset` (one of `PRESETS`), with `overrides` on top."""
        if preset not in PRESETS:
            raise ValueError(f"preset={preset!r} is not one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[preset], **overrides})


@dataclass
class AudibilityScriptArguments:
    r"""
    Data arguments of `recipes/audibility_classifier.py`.

    Parameters:
        dataset_name (`str`, *optional*):
            Audibility data: a `.csv`/`.json`/`.jsonl`/`.parquet` file (e.g. from `hfpref audibility-data`), a
            `save_to_disk` folder or a Hub dataset; `None` trains on the seed set shipped with hfpref.
        dataset_train_split (`str`, *optional*, defaults to `"train"`): split to train on.
        dataset_test_split (`str`, *optional*):
            Held-out split; when the data has none, `test_size` of it is held out (stratified by label).
        text_column (`str`, *optional*, defaults to `"sentence"`): column with the sentences.
        label_column (`str`, *optional*, defaults to `"label"`): column with the labels (1/0 or audible/non_audible).
        test_size (`float`, *optional*, defaults to `0.2`): share held out when there is no test split.
        split_seed (`int`, *optional*, defaults to `0`): seed of that split.
        max_length (`int`, *optional*, defaults to `64`): sentences are truncated to this many tokens.
    """

    dataset_name: str | None = None
    dataset_train_split: str = "train"
    dataset_test_split: str | None = None
    text_column: str = "sentence"
    label_column: str = "label"
    test_size: float = 0.2
    split_seed: int = 0
    max_length: int = 64

    def __post_init__(self):
        if not 0.0 < self.test_size < 1.0:
            raise ValueError(f"test_size={self.test_size} must lie in (0, 1)")
        if self.max_length < 2:
            raise ValueError(f"max_length={self.max_length} must be >= 2")


@dataclass
class AudibilityModelArguments:
    r"""
    The classifier to fine-tune.

    Parameters:
        model_name_or_path (`str`, *optional*, defaults to `"distilbert-base-uncased"`):
            A checkpoint with a tokenizer (safetensors only, no remote code); a 2-label head is added.
        tiny_classifier (`bool`, *optional*, defaults to `False`):
            Build a 2-layer DistilBERT from a config with a WordPiece tokenizer trained on the training sentences
            instead (offline tests and smoke runs).
        tiny_hidden_size (`int`, *optional*, defaults to `32`): width of that tiny DistilBERT.
    """

    model_name_or_path: str = "distilbert-base-uncased"
    tiny_classifier: bool = False
    tiny_hidden_size: int = 32

    def __post_init__(self):
        if self.tiny_hidden_size < 2 or self.tiny_hidden_size % 2:
            raise ValueError(f"tiny_hidden_size={self.tiny_hidden_size} must be an even number >= 2 (2 heads)")
