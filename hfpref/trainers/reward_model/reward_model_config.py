import ast
import math
from dataclasses import dataclass, field

from transformers import TrainingArguments

from ...hub.cards import CardConfigMixin
from ...utils.checks import check_training_arguments
from ..base_config import HfprefConfigMixin


LOSS_TYPES = ["bt", "bce", "mse"]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _number_list(name: str, value, kind: type, example: str) -> list:
    """A YAML or CLI list option as a list of `kind`: a list, or a string such as `"512,128"` or `"[512, 128]"`."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = ast.literal_eval(text if text.startswith("[") else f"[{text}]")
        except (ValueError, SyntaxError):
            raise ValueError(f"{name}={value!r} is not a list of numbers; write it as {example}") from None
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{name}={value!r} must be a list, e.g. {example}")
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (int, float)) or (kind is int and item != int(item)):
            raise ValueError(f"{name}={list(value)!r}: {item!r} is not {'an integer' if kind is int else 'a number'}")
        out.append(kind(item))
    return out


# The papers' schedules. Adam without weight decay is `adamw_torch` with `weight_decay=0`.
PRESETS: dict[str, dict] = {
    # Hegde et al., "Aligning Audio Captions with Human Preferences", section 4.2.
    "paper_pairwise": {
        "loss_type": "bt",
        "num_train_epochs": 70,
        "per_device_train_batch_size": 64,
        "bt_scale": 10.0,
        "l2_coef": 0.1,
    },
    # Liao et al., "BATON", section 4.1: 50 epochs, batch 64, lr 0.01, Adam.
    "paper_binary": {
        "loss_type": "bce",
        "num_train_epochs": 50,
        "per_device_train_batch_size": 64,
        "learning_rate": 0.01,
        "optim": "adamw_torch",
        "weight_decay": 0.0,
        "l2_coef": 0.0,
    },
}


@dataclass
class RewardModelConfig(CardConfigMixin, HfprefConfigMixin, TrainingArguments):
    r"""
    Configuration of the [`RewardModelTrainer`], which trains a [`~hfpref.rewards.CLAPRewardModel`] on cached
    embeddings. Only the parameters specific to reward modelling are listed here; see
    [`~transformers.TrainingArguments`] for the rest.

    Pairwise data (`loss_type="bt"`) has columns `audio_embedding`, `chosen_embedding`, `rejected_embedding`;
    pointwise binary feedback (`loss_type="bce"` or `"mse"`) has `audio_embedding`, `text_embedding`, `label`.

    Parameters:
        loss_type (`str`, *optional*, defaults to `"bt"`):
            `"bt"`: Bradley-Terry with a scaled difference, `-log sigmoid(s * (r_w - r_l))`;
            `"bce"` or `"mse"`: binary feedback.
        bt_scale (`float`, *optional*, defaults to `10.0`):
            The scale `s` of the reward difference (lost from the paper's text; 10 is hfpref's default).
        l2_coef (`float`, *optional*, defaults to `0.1`):
            Coefficient `lambda` of the L2 penalty on the head's parameters added to the loss (the paper: 0.1).
        l2_reduction (`str`, *optional*, defaults to `"mean"`):
            `"sum"`: `lambda * ||theta||^2`, the paper's formula as written; `"mean"`: `lambda * ||theta||^2 / |theta|`.
            With the paper's head (about 590k weights) and lambda = 0.1, the summed penalty outweighs the
            Bradley-Terry term and drives every reward to 0.5 (measured: held-out accuracy 0, margin 0), so
            hfpref averages it by default; `"sum"` reproduces the formula literally.
        use_margin (`bool`, *optional*, defaults to `False`):
            Subtract a `margin` column from the scaled difference (Llama 2's margin loss).
        ensemble_bootstrap (`bool`, *optional*, defaults to `True`):
            For a reward model with `num_members > 1` (an ensemble): each member's loss weighs every training row by
            its own Poisson(1) draw, fixed for the run (a bootstrap resample of the rows per member, seeded by
            `seed`); `False`: the members differ by their initialisation only. The loss is the sum of the members'
            losses, so each member trains as it would alone.
        category_column (`str` or `None`, *optional*, defaults to `"category"`):
            Column whose values get their own evaluation accuracy (FENSE's HC/HI/HM/MM), when present.
        reward_histogram (`bool`, *optional*, defaults to `True`):
            Save a histogram PNG of predicted rewards in `output_dir` at each evaluation (as BATON's Figure 4).

    Presets: `RewardModelConfig.from_preset("paper_pairwise", output_dir=...)` (70 epochs, batch 64) and
    `"paper_binary"` (50 epochs, batch 64, lr 0.01, Adam).
    """

    presets = PRESETS

    loss_type: str = field(default="bt", metadata={"help": f"One of {LOSS_TYPES}."})
    bt_scale: float = field(default=10.0, metadata={"help": "Scale s of the reward difference in the BT loss."})
    l2_coef: float = field(default=0.1, metadata={"help": "Coefficient of the L2 penalty on the head's weights."})
    l2_reduction: str = field(default="mean", metadata={"help": "'mean' (||theta||^2 / |theta|) or 'sum'."})
    use_margin: bool = field(default=False, metadata={"help": "Use the `margin` column in the BT loss."})
    ensemble_bootstrap: bool = field(
        default=True, metadata={"help": "Each member of an ensemble trains on its own bootstrap resample of the rows."}
    )
    category_column: str | None = field(
        default="category", metadata={"help": "Column with per-category evaluation accuracy, when present."}
    )
    reward_histogram: bool = field(default=True, metadata={"help": "Save a reward histogram PNG at each evaluation."})

    # TrainingArguments defaults that suit a small MLP on cached embeddings.
    learning_rate: float = field(default=1e-3, metadata={"help": "Initial learning rate."})
    per_device_train_batch_size: int = field(default=64, metadata={"help": "Batch size per device for training."})
    per_device_eval_batch_size: int = field(default=256, metadata={"help": "Batch size per device for evaluation."})
    logging_steps: float = field(default=10, metadata={"help": "Log every X updates steps."})
    optim: str = field(default="adamw_torch", metadata={"help": "The optimizer to use."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "The trainer selects its own columns; keep the rest for metrics."}
    )

    def __post_init__(self):
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type={self.loss_type!r} is not one of {LOSS_TYPES}")
        if not _is_number(self.bt_scale) or not 0 < self.bt_scale < math.inf:
            raise ValueError(f"bt_scale={self.bt_scale!r} must be a finite positive number (hfpref's default: 10)")
        if self.l2_reduction not in ("sum", "mean"):
            raise ValueError(f"l2_reduction={self.l2_reduction!r} is not one of ['sum', 'mean']")
        if not _is_number(self.l2_coef) or not 0 <= self.l2_coef < math.inf:
            raise ValueError(f"l2_coef={self.l2_coef!r} must be a finite number >= 0 (the paper: 0.1)")
        check_training_arguments(self)
        super().__post_init__()

    @property
    def pairwise(self) -> bool:
        return self.loss_type == "bt"
