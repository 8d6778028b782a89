import ast
import math
import re
from dataclasses import dataclass, field

from transformers import TrainingArguments

from ..utils.checks import check_training_arguments


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
class RewardModelConfig(TrainingArguments):
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
        category_column (`str` or `None`, *optional*, defaults to `"category"`):
            Column whose values get their own evaluation accuracy (FENSE's HC/HI/HM/MM), when present.
        reward_histogram (`bool`, *optional*, defaults to `True`):
            Save a histogram PNG of predicted rewards in `output_dir` at each evaluation (as BATON's Figure 4).

    Presets: `RewardModelConfig.from_preset("paper_pairwise", output_dir=...)` (70 epochs, batch 64) and
    `"paper_binary"` (50 epochs, batch 64, lr 0.01, Adam).
    """

    loss_type: str = field(default="bt", metadata={"help": f"One of {LOSS_TYPES}."})
    bt_scale: float = field(default=10.0, metadata={"help": "Scale s of the reward difference in the BT loss."})
    l2_coef: float = field(default=0.1, metadata={"help": "Coefficient of the L2 penalty on the head's weights."})
    l2_reduction: str = field(default="mean", metadata={"help": "'mean' (||theta||^2 / |theta|) or 'sum'."})
    use_margin: bool = field(default=False, metadata={"help": "Use the `margin` column in the BT loss."})
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

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> "RewardModelConfig":
        """The paper schedule `preset` (one of `PRESETS`), with `overrides` on top."""
        if preset not in PRESETS:
            raise ValueError(f"preset={preset!r} is not one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[preset], **overrides})


@dataclass
class RewardScriptArguments:
    r"""
    Data arguments of `recipes/reward_model.py`. Exactly one source: `dataset_name`, `fense_files` or `synthetic_clips`.

    Parameters:
        dataset_name (`str`, *optional*):
            A preference dataset: Hub id, `save_to_disk` folder, or a data file. A `.csv`/`.json`/`.jsonl` file is
            read as BATON-style binary feedback (audio path, prompt, label) when the loss is pointwise.
        dataset_train_split (`str`, *optional*, defaults to `"train"`): split to train on.
        dataset_test_split (`str`, *optional*):
            Split to evaluate on; when the dataset has none, `test_size` of the clips are held out.
        fense_files (`list[str]`, *optional*): FENSE judgment JSON files (AudioCaps-Eval, Clotho-Eval).
        fense_audio_dirs (`list[str]`, *optional*): one folder of clips per FENSE file (FENSE ships no audio).
        synthetic_clips (`int`, *optional*): build oracle-judged pairs on a synthetic world of this many clips.
        synthetic_negatives (`bool`, *optional*, defaults to `False`):
            Add pairs of a clip's true caption vs another clip's caption to the training split.
        test_size (`float`, *optional*, defaults to `0.2`): share of clips held out, split by clip.
        split_seed (`int`, *optional*, defaults to `0`): seed of the split, the negatives and the synthetic world.
        audio_column (`str`, *optional*, defaults to `"audio"`): audio column.
        text_column (`str`, *optional*, defaults to `"caption"`): text column of pointwise data (`"prompt"` for BATON).
        group_column (`str`, *optional*, defaults to `"clip_id"`):
            Rows sharing a value stay on one side of the split (for pointwise data without clip ids, e.g. `prompt`).
        clap_model_name_or_path (`str`, *optional*, defaults to `"laion/clap-htsat-unfused"`): the frozen CLAP.
        embedding_cache_dir (`str`, *optional*): where embeddings are cached (default: `<output_dir>/embedding-cache`).
        skip_bad_audio (`bool`, *optional*, defaults to `False`): drop undecodable clips (logged) instead of failing.
        strict_data (`bool`, *optional*, defaults to `False`):
            Refuse rows that would mislead training (an empty or whitespace caption, chosen == rejected) instead of
            dropping them with a logged count.
        embedding_dim (`int`, *optional*):
            Width of precomputed embedding columns (`audio_embedding`, `chosen_embedding`, `rejected_embedding`, or
            `text_embedding` for pointwise data). A dataset with those columns is trained on as is, never
            re-embedded; they may come from any encoder (CLAP or not), and their width must equal this value
            when it is set.
        embeddings_from (`str`, *optional*):
            What made the precomputed embeddings (e.g. the CLAP checkpoint), recorded as the reward model's
            `clap_checkpoint`; leave it unset for features of another encoder (the model then records no CLAP).
        eval_datasets (`list[str]`, *optional*):
            Named evaluation sets, `name=source` (a Hub id, `save_to_disk` folder or data file holding one split),
            e.g. `["clotho=data/clotho_eval_pairs"]`. With them the whole training source is trained on (no split)
            and each set is evaluated on its own (`eval_<name>_accuracy`).
    """

    dataset_name: str | None = None
    dataset_train_split: str = "train"
    dataset_test_split: str | None = None
    fense_files: list[str] | None = None
    fense_audio_dirs: list[str] | None = None
    synthetic_clips: int | None = None
    synthetic_negatives: bool = False
    test_size: float = 0.2
    split_seed: int = 0
    audio_column: str = "audio"
    text_column: str = "caption"
    group_column: str = "clip_id"
    clap_model_name_or_path: str = "laion/clap-htsat-unfused"
    embedding_cache_dir: str | None = None
    skip_bad_audio: bool = False
    strict_data: bool = False
    embedding_dim: int | None = None
    embeddings_from: str | None = None
    eval_datasets: list[str] | None = None

    def __post_init__(self):
        sources = [name for name in ("dataset_name", "fense_files", "synthetic_clips") if getattr(self, name)]
        if len(sources) != 1:
            raise ValueError(
                f"give exactly one data source of ['dataset_name', 'fense_files', 'synthetic_clips'], got {sources}"
            )
        if self.fense_files and len(self.fense_files) != len(self.fense_audio_dirs or []):
            raise ValueError(
                f"fense_audio_dirs must name one audio folder per FENSE file: {len(self.fense_files)} files, "
                f"{len(self.fense_audio_dirs or [])} folders"
            )
        if not 0.0 < self.test_size < 1.0:
            raise ValueError(f"test_size={self.test_size} must lie in (0, 1)")
        if self.embedding_dim is not None and (isinstance(self.embedding_dim, bool) or self.embedding_dim < 1):
            raise ValueError(f"embedding_dim={self.embedding_dim!r} must be a positive width")
        self.named_eval_datasets()

    def named_eval_datasets(self) -> dict[str, str]:
        """`eval_datasets` as `{name: source}`; refuses an entry without `name=` or a repeated name."""
        named: dict[str, str] = {}
        for entry in self.eval_datasets or []:
            name, sep, source = str(entry).partition("=")
            name, source = name.strip(), source.strip()
            if not sep or not name or not source or not re.fullmatch(r"[\w.-]+", name):
                raise ValueError(
                    f"eval_datasets entry {entry!r} is not name=source (a name of letters, digits, '_', '-', '.'), "
                    "e.g. clotho=data/clotho_eval_pairs"
                )
            if name in named or name == "train":
                raise ValueError(f"eval_datasets names {name!r} twice (or uses the reserved name 'train')")
            named[name] = source
        return named


@dataclass
class RewardHeadArguments:
    r"""
    Architecture of a new [`~hfpref.rewards.CLAPRewardModel`] (the embedding width comes from the CLAP).

    Parameters:
        hidden_sizes (`list[int]`, *optional*, defaults to `[512, 128]`): MLP hidden widths.
        dropout (`float`, *optional*, defaults to `0.1`): dropout after each hidden layer.
        reward_clamp (`list[float]`, *optional*, defaults to `[0.01, 0.99]`): reward clamp in training.
        init_from (`str`, *optional*): continue from a saved reward model instead of a new head.
    """

    hidden_sizes: list[int] = field(default_factory=lambda: [512, 128])
    dropout: float = 0.1
    reward_clamp: list[float] = field(default_factory=lambda: [0.01, 0.99])
    init_from: str | None = None

    def __post_init__(self):
        # Checked here, when the recipe parses its config, so a typo stops the run before any embedding work.
        self.hidden_sizes = _number_list("hidden_sizes", self.hidden_sizes, int, "[512, 128]")
        if not self.hidden_sizes or any(size < 1 for size in self.hidden_sizes):
            raise ValueError(f"hidden_sizes={self.hidden_sizes} must list positive widths, e.g. [512, 128]")
        if not _is_number(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout!r} must lie in [0, 1)")
        if self.reward_clamp is not None:
            self.reward_clamp = _number_list("reward_clamp", self.reward_clamp, float, "[0.01, 0.99]")
            if len(self.reward_clamp) != 2 or not 0.0 <= self.reward_clamp[0] < self.reward_clamp[1] <= 1.0:
                raise ValueError(f"reward_clamp={self.reward_clamp} must be [low, high] with 0 <= low < high <= 1")
