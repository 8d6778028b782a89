"""
What every hfpref script shares: the argument parser.

[`HfprefParser`] is TRL's `TrlParser` (dataclasses from the command line and a `--config` YAML) plus what a
multi-process launch needs (see [`hfpref.utils.distributed`]): the engine the launch asked for (DDP, DeepSpeed ZeRO,
FSDP2) runs as configured even on a machine without a GPU, a launch that asked for several processes and started one
is refused, and every recipe prints one line at start: `hfpref <method>: 2 processes, deepspeed zero3 (gloo)`.

A `--config` YAML is read strictly ([`load_recipe_config`]) before TRL reads it: a key written twice (YAML keeps the
last one silently), a YAML alias (`*name`, the building block of a "billion laughs" bomb) and a key no dataclass takes
are refused, naming the file, the key and its line, before any value is rendered or expanded.
"""

import atexit
import difflib
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import yaml
from transformers import TrainingArguments
from trl import TrlParser

from hfpref.models.audibility_classifier import build_tiny_audibility_classifier
from hfpref.models.captioning import build_tiny_whisper_captioner
from hfpref.trainers.aligncap_kd.aligncap_kd_config import DEFAULT_INSTRUCTION
from hfpref.trainers.reward_model.reward_model_config import _is_number, _number_list
from hfpref.utils.distributed import Engine, announce_launch, prepare_launch


HUMAN_REWARDS = ["reward_model", "label"]
DEFAULT_CLAP = "laion/clap-htsat-unfused"
# The tiny CLAP of the smoke runs: 2 s windows, 32 mel bins, a 64-pixel HTSAT image (4x cheaper than the defaults).
TINY_CLAP = {"projection_dim": 32, "clip_seconds": 2.0, "num_mel_bins": 32, "spec_size": 64}
TINY_CLAP_DIR = "tiny_clap"
TINY_REWARD_MODEL_DIR = "tiny_reward_model"
TINY_LLM_DIR = "tiny_llm"


logger = logging.getLogger(__name__)


# The most values (list items, mapping entries, scalars) one config value may expand to. A recipe value is a few dozen;
# anything near this is a YAML alias bomb, refused before it is rendered.
MAX_CONFIG_VALUE_NODES = 100_000


class RecipeConfigLoader(yaml.SafeLoader):
    """
    `yaml.SafeLoader` for recipe configs: refuses a key written twice in one mapping and any alias (`*name`), naming
    the file and line. Aliases are refused outright: a flat recipe config never needs one, and nested aliases expand
    exponentially when rendered (the "billion laughs").
    """

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ValueError(
                f"{self.name}:{event.start_mark.line + 1}: the YAML alias *{event.anchor}: recipe configs take no "
                "anchors or aliases; write the value out"
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        lines: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = lines.get(key)
            except TypeError:  # an unhashable key: yaml's own error names it
                break
            if first is not None:
                raise ValueError(
                    f"{self.name}:{line}: the key {key!r} is written twice (first at line {first}); YAML would keep "
                    "the last one silently. Remove one."
                )
            lines[key] = line
        return super().construct_mapping(node, deep=deep)


def load_recipe_config(path: str | os.PathLike) -> tuple[dict, dict[str, int]]:
    r"""
    Read a recipe's `--config` YAML with [`RecipeConfigLoader`].

    Args:
        path (`str` or `os.PathLike`): the YAML file.

    Returns:
        `(config, lines)`: the top-level mapping and the line (1-based) of each of its keys.

    Raises:
        `ValueError`: naming the file and line of a repeated key or an alias, or when the file holds no mapping.

    Example:

    ```python
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "config.yaml"
    >>> _ = path.write_text("learning_rate: 1.0e-3\nseed: 0\nlearning_rate: 1.0\n")
    >>> load_recipe_config(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ...config.yaml:3: the key 'learning_rate' is written twice (first at line 1); ...

    ```
    """
    with open(path, encoding="utf-8") as handle:
        loader = RecipeConfigLoader(handle)
        loader.name = os.fspath(path)
        try:
            root = loader.get_single_node()
            config = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    if not isinstance(config, dict):
        raise ValueError(f"Config file {path} must contain a YAML mapping.")
    lines = {str(key_node.value): key_node.start_mark.line + 1 for key_node, _ in root.value}
    return config, lines


def expanded_size(value, limit: int = MAX_CONFIG_VALUE_NODES) -> int:
    """
    How many values (scalars, list items, mapping entries) `value` holds once every shared reference is expanded, as
    rendering it would write them out; counting stops above `limit`. Linear in the distinct objects, however deeply
    they are shared.

    Raises:
        `ValueError`: when `value` contains itself (a recursive alias).

    Example:

    ```python
    >>> a = ["lol"] * 9
    >>> b = [a] * 9
    >>> expanded_size(b)  # 1 (b) + 9 x (1 (a) + 9)
    91

    ```
    """
    sizes: dict[int, int] = {}
    visiting: set[int] = set()

    def size(node) -> int:
        if not isinstance(node, (list, tuple, dict)):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in visiting:
            raise ValueError("the value contains itself (a recursive YAML alias)")
        visiting.add(key)
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        total = 1
        for child in children:
            total += size(child)
            if total > limit:
                break
        visiting.discard(key)
        sizes[key] = total = min(total, limit + 1)
        return total

    return size(value)


def end_process_group() -> None:
    """
    Destroy the torch.distributed process group, if one is up, before the interpreter exits. A recipe parsed by
    [`HfprefParser`] runs this at exit: a gloo rank left to exit with its group alive sometimes aborted ("terminate
    called without an active exception", exit code -6) after its run had finished and saved, failing the launch.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class HfprefParser(TrlParser):
    """
    `TrlParser` that runs a multi-process launch on the engine it asked for (see the module docstring).

    Args:
        dataclass_types: as `TrlParser`.
        method (`str`, *optional*): the recipe's method name, printed in the start line
            `hfpref <method>: <N> processes, <engine> (<backend>)`; without it no line is printed.

    Example:
    ```python
    >>> from hfpref.trainers import CaptionRLConfig
    >>> parser = HfprefParser((CaptionRLConfig,))
    >>> parser.parse_args_and_config(["--output_dir", "out"])[0].use_cpu in (True, False)
    True

    ```
    """

    def __init__(self, dataclass_types=None, method: str | None = None, **kwargs):
        super().__init__(dataclass_types, **kwargs)
        self.method = method

    def parse_args_and_config(self, args=None, return_remaining_strings=False, fail_with_unknown_args=True):
        args = list(args) if args is not None else sys.argv[1:]
        if "--config" in args and args.index("--config") + 1 < len(args):
            # Before TRL reads it: TRL keeps a repeated key's last value and renders unknown keys' values.
            refuse_unknown = fail_with_unknown_args and not return_remaining_strings
            self.check_config_file(args[args.index("--config") + 1], unknown_keys=refuse_unknown)
        engine = Engine.from_env()
        needed = prepare_launch(engine)
        if needed:
            # Defaults, below whatever the YAML or the command line says; a config that says otherwise is refused below.
            self.set_defaults(**needed)
        parsed = super().parse_args_and_config(
            args, return_remaining_strings=return_remaining_strings, fail_with_unknown_args=fail_with_unknown_args
        )
        for value in parsed:
            if not isinstance(value, TrainingArguments):
                continue
            check_engine_arguments(value, engine, needed)
            if self.method:
                announce_launch(self.method, value)
        atexit.register(end_process_group)
        return parsed

    def config_keys(self) -> set[str]:
        """The keys a `--config` YAML may hold: every option of the dataclasses, and TRL's `env`."""
        return {action.dest for action in self._actions} | {"env"}

    def check_config_file(self, path: str, *, unknown_keys: bool = True) -> dict:
        """
        Read `path` with [`load_recipe_config`] (repeated keys and aliases are refused) and, with `unknown_keys`,
        refuse keys no dataclass takes, naming the file, each key, its line and the option it may be a typo of; the
        values are never rendered. Returns the config.
        """
        config, lines = load_recipe_config(path)
        unknown = [key for key in config if key not in self.config_keys()]
        if unknown_keys and unknown:
            known = sorted(self.config_keys())
            named = []
            for key in unknown:
                close = difflib.get_close_matches(str(key), known, n=1)
                named.append(
                    f"{key!r} (line {lines.get(str(key), '?')}{f', did you mean {close[0]!r}?' if close else ''})"
                )
            script = f"hfpref {self.method}" if self.method else "this script"
            raise ValueError(f"{path}: {script} takes no config keys {', '.join(named)}; remove or rename them")
        return config

    def set_defaults_with_config(self, **kwargs) -> list[str]:
        """
        TRL's `set_defaults_with_config`, refusing a value that expands to more than `MAX_CONFIG_VALUE_NODES` values (a
        YAML alias bomb read by TRL's own loader, as `hfpref train` does) before TRL renders the unknown ones.
        """
        for key, value in kwargs.items():
            try:
                size = expanded_size(value)
            except ValueError as error:
                raise ValueError(f"the config key {key!r}: {error}") from None
            if size > MAX_CONFIG_VALUE_NODES:
                raise ValueError(
                    f"the config key {key!r} expands to more than {MAX_CONFIG_VALUE_NODES} values (nested YAML "
                    "aliases, a 'billion laughs'?); recipe configs take no aliases"
                )
        return super().set_defaults_with_config(**kwargs)


def check_engine_arguments(training_args: TrainingArguments, engine: Engine, needed: dict) -> None:
    """Refuse training arguments that would silently turn the launch's engine into another one."""
    if not needed:
        return
    if engine.kind == "ddp" and not training_args.use_cpu:
        raise ValueError(
            f"{engine.world_size} processes were launched (WORLD_SIZE={engine.world_size}) on a machine without a "
            "GPU, but the config sets use_cpu: false, so each process would train alone on all the data; remove "
            "use_cpu from the config (or set it to true) to train them as one gloo process group"
        )
    if engine.kind in ("deepspeed", "fsdp"):
        if training_args.use_cpu:
            raise ValueError(
                f"the launch runs {engine.name} on {engine.world_size} processes, but the config sets use_cpu: true, "
                f"with which accelerate silently runs plain DDP instead; remove use_cpu (hfpref runs {engine.name} "
                "on the CPU over gloo)"
            )
        if training_args.ddp_backend not in (None, "gloo"):
            raise ValueError(
                f"ddp_backend={training_args.ddp_backend!r} on a machine without a GPU: {engine.name} runs on the "
                "CPU over gloo; remove ddp_backend from the config"
            )


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
        synthetic_clip_seconds (`float`, *optional*, defaults to `4.0`): clip length of the synthetic world.
        test_size (`float`, *optional*, defaults to `0.1`): share held out when there is no test split.
        caption_column (`str`, *optional*, defaults to `"caption"`): caption column (SFT targets).
        max_train_samples (`int`, *optional*): keep only the first `max_train_samples` training rows.
    """

    dataset_name: str | None = None
    dataset_train_split: str = "train"
    dataset_test_split: str | None = None
    synthetic_clips: int | None = None
    synthetic_seed: int = 0
    synthetic_clip_seconds: float = 4.0
    test_size: float = 0.1
    caption_column: str = "caption"
    max_train_samples: int | None = None

    def __post_init__(self):
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise ValueError(f"max_train_samples={self.max_train_samples} must be a positive number of rows")
        if self.synthetic_clip_seconds <= 0:
            raise ValueError(f"synthetic_clip_seconds={self.synthetic_clip_seconds} must be positive")
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
            A seq2seq captioner (`AutoModelForSpeechSeq2Seq`: Whisper architecture, `SpeechEncoderDecoderModel`) or
            an audio LLM (`Qwen2AudioForConditionalGeneration`), with its processor. Loaded from safetensors; remote
            code is never trusted.
        tiny_captioner (`bool`, *optional*, defaults to `False`):
            Build a tiny random captioner from a config (`tiny_architecture`), with a tokenizer trained on the
            training captions (offline runs and tests).
        tiny_architecture (`str`, *optional*, defaults to `"whisper"`):
            `"whisper"`: a 2-layer Whisper; `"qwen2_audio"`: Qwen2-Audio-7B-Instruct's architecture cut to 2 layers
            each side, its special tokens right after the trained vocabulary (a captioner trained from scratch).
        tiny_clip_seconds (`float`, *optional*, defaults to `4.0`): the tiny captioner's audio window.
        freeze_audio_encoder (`bool`, *optional*):
            Freeze the audio encoder; by default `True` for audio LLMs (the projector and LLM train) and `False` for
            seq2seq captioners.
        use_peft (`bool`, *optional*, defaults to `False`):
            Train LoRA adapters instead of all weights; for an audio LLM on the LLM's linear layers only.
        lora_r (`int`, *optional*, defaults to `16`), lora_alpha (`int`, *optional*, defaults to `32`),
        lora_dropout (`float`, *optional*, defaults to `0.05`): the LoRA adapters.
    """

    model_name_or_path: str | None = None
    tiny_captioner: bool = False
    tiny_architecture: str = "whisper"
    tiny_clip_seconds: float = 4.0
    freeze_audio_encoder: bool | None = None
    use_peft: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05

    def __post_init__(self):
        if bool(self.model_name_or_path) == self.tiny_captioner:
            raise ValueError("give either model_name_or_path or tiny_captioner: true (exactly one)")
        if self.tiny_architecture not in TINY_CAPTIONER_ARCHITECTURES:
            raise ValueError(
                f"tiny_architecture={self.tiny_architecture!r} is not one of {list(TINY_CAPTIONER_ARCHITECTURES)}"
            )
        if self.lora_r < 1 or self.lora_alpha < 1 or not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(
                f"lora_r={self.lora_r}, lora_alpha={self.lora_alpha} must be >= 1 and lora_dropout in [0, 1)"
            )


TINY_CAPTIONER_ARCHITECTURES = ("whisper", "qwen2_audio")


@dataclass
class CaptionRLScriptArguments(CaptionScriptArguments):
    r"""
    Data and reward arguments of `recipes/caption_rl.py` (the data fields are those of
    [`~hfpref.scripts.utils.CaptionScriptArguments`]).

    Parameters:
        reward_funcs (`list[str]`, *optional*, defaults to `["reward_model"]`): registered reward names.
        reward_model_name_or_path (`str`, *optional*): a saved CLAP reward model (for `"reward_model"`).
        tiny_reward_model (`bool`, *optional*, defaults to `False`):
            For `"reward_model"`, build a random reward head on a tiny CLAP whose tokenizer is trained on the training
            captions instead ([`~hfpref.scripts.utils.resolve_reward_model`]: offline smoke runs, seeded by the
            training `seed`); exclusive with `reward_model_name_or_path` and `clap_model_name_or_path`.
        clap_model_name_or_path (`str`, *optional*): CLAP for CLAP rewards (default: the reward model's).
        embedding_cache_dir (`str`, *optional*): CLAP embedding cache (default: `<output_dir>/embedding-cache`).
        length_penalty_alpha (`float`, *optional*, defaults to `0.4`): length penalty (the paper: 0.4 on AudioCaps).
        expected_length (`float`, *optional*): `L_exp` in words; default the mean reference length of the data.
        repetition_penalty (`float`, *optional*): repetition penalty strength; `None` for none.
        reward_ensemble_lambda (`float`, *optional*): for a reward-model ensemble, reward `mean - lambda * std` of
            its members with this lambda (default: the one it was saved with).
        selection_reward_model (`str`, *optional*): a second reward model the policy is never optimised against (a
            weight-0 reward named `selection_reward`): evaluation logs `eval_rewards/selection_reward`, the mean
            reward of the greedy captions of the held-out clips, so `metric_for_best_model: rewards/selection_reward`
            with `load_best_model_at_end: true` keeps the checkpoint it scores best.
        ref_model_name_or_path (`str`, *optional*): the frozen reference of the KL term (`kl_coef > 0`), a captioner
            with the policy's tokenizer; by default a frozen copy of the policy as loaded. Iterated rounds (`hfpref
            loop`) start each round's policy from the previous round's and keep the KL to round 0's captioner.
    """

    reward_funcs: list[str] = field(default_factory=lambda: ["reward_model"])
    reward_model_name_or_path: str | None = None
    tiny_reward_model: bool = False
    clap_model_name_or_path: str | None = None
    embedding_cache_dir: str | None = None
    length_penalty_alpha: float | None = 0.4
    expected_length: float | None = None
    repetition_penalty: float | None = None
    reward_ensemble_lambda: float | None = None
    selection_reward_model: str | None = None
    ref_model_name_or_path: str | None = None

    def __post_init__(self):
        super().__post_init__()
        check_reward_model_source(self, needed="reward_model" in self.reward_funcs)


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
        clap_model_name_or_path (`str`, *optional*, defaults to `"laion/clap-htsat-unfused"`):
            The frozen CLAP; exclusive with `tiny_clap`.
        tiny_clap (`bool`, *optional*, defaults to `False`):
            Build a random tiny CLAP whose tokenizer is trained on the training split's captions instead, seeded by the
            training `seed` and saved to `<output_dir>/tiny_clap`, which the reward model records as its CLAP (offline
            smoke runs; [`~hfpref.scripts.utils.save_tiny_clap`]).
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
    clap_model_name_or_path: str | None = None
    tiny_clap: bool = False
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
        if self.tiny_clap and self.clap_model_name_or_path:
            raise ValueError(
                f"give either clap_model_name_or_path (got {self.clap_model_name_or_path!r}) or tiny_clap: true, "
                "not both"
            )
        if not self.tiny_clap and not self.clap_model_name_or_path:
            self.clap_model_name_or_path = DEFAULT_CLAP
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
        num_members (`int`, *optional*, defaults to `1`): heads of an ensemble, each trained on its own bootstrap
            resample (`ensemble_bootstrap` of the training config), saved as one artifact.
        ensemble_lambda (`float`, *optional*, defaults to `0.0`): the ensemble's reward is `mean - ensemble_lambda *
            std` of its members' (a RL recipe can override it: `reward_ensemble_lambda`).
    """

    hidden_sizes: list[int] = field(default_factory=lambda: [512, 128])
    dropout: float = 0.1
    reward_clamp: list[float] = field(default_factory=lambda: [0.01, 0.99])
    init_from: str | None = None
    num_members: int = 1
    ensemble_lambda: float = 0.0

    def __post_init__(self):
        # Checked here, when the recipe parses its config, so a typo stops the run before any embedding work.
        self.hidden_sizes = _number_list("hidden_sizes", self.hidden_sizes, int, "[512, 128]")
        if not self.hidden_sizes or any(size < 1 for size in self.hidden_sizes):
            raise ValueError(f"hidden_sizes={self.hidden_sizes} must list positive widths, e.g. [512, 128]")
        if self.num_members < 1 or not (_is_number(self.ensemble_lambda) and self.ensemble_lambda >= 0):
            raise ValueError(
                f"num_members={self.num_members} must be >= 1 and ensemble_lambda={self.ensemble_lambda!r} >= 0"
            )
        if not _is_number(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout!r} must lie in [0, 1)")
        if self.reward_clamp is not None:
            self.reward_clamp = _number_list("reward_clamp", self.reward_clamp, float, "[0.01, 0.99]")
            if len(self.reward_clamp) != 2 or not 0.0 <= self.reward_clamp[0] < self.reward_clamp[1] <= 1.0:
                raise ValueError(f"reward_clamp={self.reward_clamp} must be [low, high] with 0 <= low < high <= 1")


@dataclass
class ClapContrastiveScriptArguments:
    r"""
    Data arguments of `recipes/clap_contrastive.py`: a dataset to load, or a synthetic world to make on the fly.

    Parameters:
        dataset_name (`str`, *optional*):
            Hub dataset id, `save_to_disk` folder, folder of data files or `.json`/`.jsonl`/`.csv`/`.parquet` file,
            loaded with [`~hfpref.data.load_any_dataset`]. Exclusive with `synthetic_clips`.
        dataset_train_split (`str`, *optional*, defaults to `"train"`):
            Split to train on; `"a+b"` joins splits (the quickstart's CLAP trains on `train+clap`).
        dataset_test_split (`str` or `None`, *optional*, defaults to `"test"`):
            Split to evaluate on; `None` for no evaluation set.
        synthetic_clips (`int`, *optional*, defaults to `0`):
            When positive, train on [`~hfpref.data.make_world`]`(synthetic_clips, seed=synthetic_seed)` instead of
            `dataset_name`.
        synthetic_eval_clips (`int`, *optional*, defaults to `0`):
            Size of a held-out synthetic world (seed `synthetic_seed + 1`) to evaluate on; `0` for none.
        synthetic_seed (`int`, *optional*, defaults to `0`):
            Seed of the synthetic training world.
        synthetic_sampling_rate (`int`, *optional*, defaults to `16000`):
            Sampling rate the synthetic clips are written at (decoding resamples to the model's rate).
        synthetic_clip_seconds (`float`, *optional*, defaults to `4.0`):
            Length of each synthetic clip, in seconds.
        strict_data (`bool`, *optional*, defaults to `False`):
            Refuse rows whose caption is empty or whitespace only instead of dropping them with a logged count.
    """

    dataset_name: str | None = field(default=None, metadata={"help": "Hub id, local folder or data file."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_test_split: str | None = field(default="test", metadata={"help": "Split to evaluate on; None for none."})
    synthetic_clips: int = field(default=0, metadata={"help": "Train on a synthetic world of this many clips."})
    synthetic_eval_clips: int = field(default=0, metadata={"help": "Evaluate on a held-out world of this size."})
    synthetic_seed: int = field(default=0, metadata={"help": "Seed of the synthetic training world."})
    synthetic_sampling_rate: int = field(default=16000, metadata={"help": "Sampling rate of the synthetic clips."})
    synthetic_clip_seconds: float = field(default=4.0, metadata={"help": "Length of each synthetic clip, in seconds."})
    strict_data: bool = field(
        default=False, metadata={"help": "Refuse rows with an empty caption instead of dropping them with a count."}
    )

    def __post_init__(self):
        if self.synthetic_clips < 0 or self.synthetic_eval_clips < 0:
            raise ValueError(
                f"synthetic_clips={self.synthetic_clips} and synthetic_eval_clips={self.synthetic_eval_clips} "
                "must be >= 0"
            )
        if (self.dataset_name is None) == (self.synthetic_clips == 0):
            raise ValueError(
                f"Give exactly one data source: dataset_name (got {self.dataset_name!r}) or a positive "
                f"synthetic_clips (got {self.synthetic_clips})"
            )
        if self.synthetic_sampling_rate <= 0 or self.synthetic_clip_seconds <= 0:
            raise ValueError(
                f"synthetic_sampling_rate={self.synthetic_sampling_rate} and synthetic_clip_seconds="
                f"{self.synthetic_clip_seconds} must be positive"
            )


@dataclass
class ClapModelArguments:
    r"""
    Model arguments of `recipes/clap_contrastive.py`: a CLAP checkpoint to adapt, or a tiny CLAP to fit from scratch.

    Parameters:
        model_name_or_path (`str`, *optional*):
            Hub id or local directory of a `ClapModel` and its `ClapProcessor`, loaded with
            [`~hfpref.encoders.load_clap`] (remote code is never trusted). Exclusive with `tiny`.
        model_revision (`str`, *optional*):
            Hub revision (branch, tag or commit) of `model_name_or_path`.
        tiny (`bool`, *optional*, defaults to `False`):
            Build a randomly initialised tiny CLAP with [`~hfpref.encoders.build_tiny_clap`], its tokenizer trained on
            the training captions (and references).
        tiny_projection_dim (`int`, *optional*, defaults to `32`):
            Embedding width of the tiny CLAP.
        tiny_vocab_size (`int`, *optional*, defaults to `512`):
            Largest vocabulary of the tiny CLAP's tokenizer.
        tiny_sampling_rate (`int`, *optional*, defaults to `16000`):
            Sampling rate, in Hz, the tiny CLAP's feature extractor takes.
        tiny_clip_seconds (`float`, *optional*, defaults to `5.0`):
            Audio window of the tiny CLAP's feature extractor.
        tiny_num_mel_bins (`int`, *optional*, defaults to `64`):
            Mel bins of the tiny CLAP.
        tiny_spec_size (`int`, *optional*, defaults to `128`):
            Side of the tiny HTSAT's spectrogram image (`2.0` s, `32` bins and `64` is 4x cheaper).
        tiny_text_dropout (`float`, *optional*):
            Dropout of the tiny text tower; `None` keeps the config default.
        tiny_audio_dropout (`float`, *optional*):
            Dropout of the tiny audio tower; `None` keeps the config default.
    """

    model_name_or_path: str | None = field(default=None, metadata={"help": "CLAP checkpoint (Hub id or folder)."})
    model_revision: str | None = field(default=None, metadata={"help": "Hub revision of model_name_or_path."})
    tiny: bool = field(default=False, metadata={"help": "Build a randomly initialised tiny CLAP instead."})
    tiny_projection_dim: int = field(default=32, metadata={"help": "Embedding width of the tiny CLAP."})
    tiny_vocab_size: int = field(default=512, metadata={"help": "Largest vocabulary of the tiny tokenizer."})
    tiny_sampling_rate: int = field(default=16000, metadata={"help": "Sampling rate of the tiny CLAP, in Hz."})
    tiny_clip_seconds: float = field(default=5.0, metadata={"help": "Audio window of the tiny CLAP, in seconds."})
    tiny_num_mel_bins: int = field(default=64, metadata={"help": "Mel bins of the tiny CLAP."})
    tiny_spec_size: int = field(default=128, metadata={"help": "Spectrogram image side of the tiny HTSAT."})
    tiny_text_dropout: float | None = field(default=None, metadata={"help": "Dropout of the tiny text tower."})
    tiny_audio_dropout: float | None = field(default=None, metadata={"help": "Dropout of the tiny audio tower."})

    def __post_init__(self):
        if (self.model_name_or_path is None) == (not self.tiny):
            raise ValueError(
                f"Give exactly one model: model_name_or_path (got {self.model_name_or_path!r}) or tiny=True "
                f"(got tiny={self.tiny})"
            )
        if self.tiny_projection_dim < 1:
            raise ValueError(f"tiny_projection_dim={self.tiny_projection_dim} must be a positive integer")


@dataclass
class AlignCapScriptArguments:
    r"""
    Data arguments shared by `recipes/aligncap_kd.py` and `recipes/aligncap_dpo.py`.

    Parameters:
        dataset_name (`str`, *optional*):
            A Hub dataset or local path with `audio_column` and `caption_column`; `None` synthesizes the speech world.
        dataset_train_split (`str`, *optional*, defaults to `"train"`): training split.
        dataset_test_split (`str`, *optional*, defaults to `"test"`): held-out split.
        audio_column (`str`, *optional*, defaults to `"audio"`): audio column.
        caption_column (`str`, *optional*, defaults to `"caption"`): caption column (one string per clip).
        speech_world_clips (`int`, *optional*, defaults to `96`): clips of the synthetic speech world (no dataset).
        speech_world_test_clips (`int`, *optional*, defaults to `24`): of which held out.
        speech_world_backend (`str`, *optional*, defaults to `"auto"`): `"auto"`, `"espeak"` or `"procedural"`.
        speech_world_seconds (`float`, *optional*, defaults to `2.0`): clip length of the speech world.
        speech_tokenizer_path (`str`, *optional*):
            A SpeechTokenizer checkpoint (directory with `config.json` + weights, or the config JSON); `None` builds a
            tiny one whose first codebook is fitted by k-means on the training clips, saved to
            `<output_dir>/speech_tokenizer` (offline only; DPO only with `tiny_llm`).
        speech_tokenizer_weights (`str`, *optional*): weights file, when not beside the config.
        instruction (`str`, *optional*, defaults to `"Describe the speaker's emotion."`): the user's instruction.
        tiny_llm (`bool`, *optional*, defaults to `False`):
            Build a random 2-layer Llama with a tokenizer trained on the captions instead of loading
            `model_name_or_path` (exactly one of the two; offline runs and tests), saved to `<output_dir>/tiny_llm` as
            the base the LoRA adapter names. The training `seed` seeds the world and tiny models.
    """

    dataset_name: str | None = None
    dataset_train_split: str = "train"
    dataset_test_split: str = "test"
    audio_column: str = "audio"
    caption_column: str = "caption"
    speech_world_clips: int = 96
    speech_world_test_clips: int = 24
    speech_world_backend: str = "auto"
    speech_world_seconds: float = 2.0
    speech_tokenizer_path: str | None = None
    speech_tokenizer_weights: str | None = None
    instruction: str = DEFAULT_INSTRUCTION
    tiny_llm: bool = False

    def __post_init__(self):
        if self.speech_world_backend not in ("auto", "espeak", "procedural"):
            raise ValueError(
                f"speech_world_backend={self.speech_world_backend!r} is not one of ['auto', 'espeak', 'procedural']"
            )
        if self.dataset_name is None and not 0 < self.speech_world_test_clips < self.speech_world_clips:
            raise ValueError(
                f"speech_world_test_clips={self.speech_world_test_clips} must be between 1 and "
                f"speech_world_clips - 1 = {self.speech_world_clips - 1}"
            )


@dataclass
class AlignCapDPOScriptArguments(AlignCapScriptArguments):
    r"""
    Arguments of `recipes/aligncap_dpo.py`: the speech-emotion data arguments plus where the pairs come from.

    Parameters:
        pairs_dataset (`str`, *optional*):
            Saved pairs (`hfpref pairs` output, or any `prompt`/`chosen`/`rejected` dataset); `None` builds them here
            from the model's beam-search candidates on the training clips.
        judge (`str`, *optional*, defaults to `"clue_overlap"`): `"clue_overlap"`, `"reward_model"` or `"llm"`.
        rejected (`str`, *optional*, defaults to `"all"`): `"all"` other candidates, or the `"worst"`.
        num_beams (`int`, *optional*, defaults to `4`): beam width of the candidates.
        max_new_tokens (`int`, *optional*, defaults to `48`):
            Longest candidate caption, in tokens (also of the greedy captions judged before and after training).
        reward_model_name_or_path (`str`, *optional*): a saved CLAP reward model (`judge="reward_model"`).
        tiny_reward_model (`bool`, *optional*, defaults to `False`):
            For `judge="reward_model"`, a random reward head on a tiny CLAP built on the training references instead,
            as in [`~hfpref.scripts.utils.CaptionRLScriptArguments`] (offline smoke runs).
        llm_base_url (`str`, *optional*): OpenAI-compatible endpoint (`judge="llm"`).
        llm_model (`str`, *optional*): model name at that endpoint.
    """

    pairs_dataset: str | None = None
    judge: str = "clue_overlap"
    rejected: str = "all"
    num_beams: int = 4
    max_new_tokens: int = 48
    reward_model_name_or_path: str | None = None
    tiny_reward_model: bool = False
    llm_base_url: str | None = None
    llm_model: str | None = None

    def __post_init__(self):
        super().__post_init__()
        from hfpref.judges.pairs import REJECTED_MODES  # noqa: PLC0415 (the judges need the speech extra)
        from hfpref.judges.registry import JUDGES  # noqa: PLC0415

        if self.judge not in JUDGES:
            raise ValueError(f"judge={self.judge!r} is not one of {list(JUDGES)}")
        if self.rejected not in REJECTED_MODES:
            raise ValueError(f"rejected={self.rejected!r} is not one of {list(REJECTED_MODES)}")
        if self.num_beams < 2:
            raise ValueError(f"num_beams={self.num_beams} must be >= 2 to give a pair")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} must be a positive number of tokens")
        check_reward_model_source(self, needed=self.judge == "reward_model")


@dataclass
class RewardWeightedDiffusionScriptArguments:
    r"""
    Data arguments of `recipes/reward_weighted_diffusion.py`: human feedback, reward-labelled generated audio, the original
    training data, the reward model and the evaluation prompts.

    Either a feedback file (`feedback_file`: the `feedback.csv` written by `hfpref tta-generate`, its `label` column
    filled with 0/1 for the annotated part and left empty for the rest) or the synthetic world (`synthetic_clips`:
    world clips with their true and a wrong caption, labelled by the oracle, plus `n_prompts` built prompts rendered by
    the starting pipeline as the unlabelled part).

    Parameters:
        feedback_file (`str`, *optional*):
            BATON feedback (`.csv`, `.json` or `.jsonl`): rows labelled 0/1 are the human part, rows with an empty
            label are scored by the reward model, rows labelled `skip` / -1 are dropped and counted.
        synthetic_clips (`int`, *optional*):
            Size of the synthetic world used instead of `feedback_file` (and as `pretrain_dataset` when none is given).
        synthetic_clip_seconds (`float`, *optional*, defaults to `1.0`):
            Clip length of the synthetic world.
        pretrain_dataset (`str`, *optional*):
            The original training data (audio + `pretrain_text_column`): Hub id, `save_to_disk` folder or data file.
            Required with `beta > 0` unless `synthetic_clips` is set.
        pretrain_split (`str`, *optional*, defaults to `"train"`):
            Its split.
        reward_model_name_or_path (`str`, *optional*):
            The binary reward model ([`~hfpref.rewards.CLAPRewardModel`], e.g. trained with
            `recipes/reward_model/config_binary_bce.yaml`); exactly one of this and `tiny_reward_model`.
        tiny_reward_model (`bool`, *optional*, defaults to `False`):
            Build a random reward head on a tiny CLAP whose tokenizer is trained on the feedback prompts (or the
            synthetic world's captions) instead ([`~hfpref.scripts.utils.resolve_reward_model`]: offline smoke runs,
            seeded by the training `seed`); `tiny_pipeline` then builds on its CLAP.
        clap_model_name_or_path (`str`, *optional*):
            The CLAP the reward model was trained on; defaults to the reward model's `clap_checkpoint`.
        embedding_cache_dir (`str`, *optional*):
            Where CLAP embeddings are cached (default `<output_dir>/embedding-cache`).
        mix_ratio (`float`, *optional*, defaults to `1.0`):
            Reward-labelled rows per human row (the paper: 1:1).
        human_reward (`str`, *optional*, defaults to `"reward_model"`):
            Weight of a human row: its reward-model score (`"reward_model"`) or its 0/1 label (`"label"`).
        label_set (`list[str]`, *optional*):
            Labels the prompt builder draws from (synthetic world: its event kinds by default).
        n_prompts (`int`, *optional*, defaults to `48`):
            Built prompts rendered for the reward-labelled part (synthetic world only).
        clips_per_prompt (`int`, *optional*, defaults to `5`):
            Clips rendered per built prompt (the paper: 5).
        eval_prompts (`int`, *optional*, defaults to `32`):
            Held-out built prompts (half integrity, half temporal) rendered before and after training; 0 skips the
            evaluation.
        eval_clips_per_prompt (`int`, *optional*, defaults to `2`):
            Clips per evaluation prompt.
        num_inference_steps (`int`, *optional*, defaults to `50`):
            Denoising steps of every rendering.
        guidance_scale (`float`, *optional*, defaults to `2.5`):
            Classifier-free guidance of every rendering (AudioLDM's default; 1 disables it).
        audio_length_in_s (`float`, *optional*):
            Length of rendered clips; the pipeline's default when unset.
        generation_seed (`int`, *optional*, defaults to `0`):
            Seed of the rendered clips' initial noise (the same for the before / after evaluation).
    """

    feedback_file: str | None = None
    synthetic_clips: int | None = None
    synthetic_clip_seconds: float = 1.0
    pretrain_dataset: str | None = None
    pretrain_split: str = "train"
    reward_model_name_or_path: str | None = None
    tiny_reward_model: bool = False
    clap_model_name_or_path: str | None = None
    embedding_cache_dir: str | None = None
    mix_ratio: float = 1.0
    human_reward: str = "reward_model"
    label_set: list[str] | None = None
    n_prompts: int = 48
    clips_per_prompt: int = 5
    eval_prompts: int = 32
    eval_clips_per_prompt: int = 2
    num_inference_steps: int = 50
    guidance_scale: float = 2.5
    audio_length_in_s: float | None = None
    generation_seed: int = 0

    def __post_init__(self):
        sources = [name for name in ("feedback_file", "synthetic_clips") if getattr(self, name)]
        if len(sources) != 1:
            raise ValueError(f"give exactly one data source of ['feedback_file', 'synthetic_clips'], got {sources}")
        if not self.reward_model_name_or_path and not self.tiny_reward_model:
            raise ValueError(
                "reward_model_name_or_path (or tiny_reward_model: true) is required: the binary reward model that "
                "scores the pairs"
            )
        check_reward_model_source(self, needed=True)
        if self.human_reward not in HUMAN_REWARDS:
            raise ValueError(f"human_reward={self.human_reward!r} is not one of {HUMAN_REWARDS}")
        if self.mix_ratio < 0:
            raise ValueError(f"mix_ratio={self.mix_ratio} must be >= 0")
        for name in ("n_prompts", "clips_per_prompt", "eval_clips_per_prompt", "num_inference_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be a positive integer")
        if self.eval_prompts < 0:
            raise ValueError(f"eval_prompts={self.eval_prompts} must be >= 0")


@dataclass
class TTAPipelineArguments:
    r"""
    The text-to-audio pipeline of `recipes/reward_weighted_diffusion.py`.

    Parameters:
        pipeline_name_or_path (`str`, *optional*, defaults to `"cvssp/audioldm-s-full-v2"`):
            An AudioLDM pipeline: Hub id or `save_pretrained` folder (safetensors only).
        tiny_pipeline (`bool`, *optional*, defaults to `False`):
            Build a tiny pipeline from configs instead (offline smoke runs), on the text tower of
            `clap_model_name_or_path`, with its VAE fitted for `tiny_vae_steps` on the pretrain clips.
        tiny_vae_steps (`int`, *optional*, defaults to `100`):
            VAE fitting steps of the tiny pipeline.
    """

    pipeline_name_or_path: str = field(
        default="cvssp/audioldm-s-full-v2", metadata={"help": "AudioLDM pipeline: Hub id or folder."}
    )
    tiny_pipeline: bool = field(default=False, metadata={"help": "Build a tiny pipeline from configs."})
    tiny_vae_steps: int = field(default=100, metadata={"help": "VAE fitting steps of the tiny pipeline."})


@dataclass
class AudibilityScriptArguments:
    r"""
    Data arguments of `hfpref/scripts/audibility_classifier.py`.

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
        tiny_dropout (`float`, *optional*): every dropout of that tiny DistilBERT; `None` keeps DistilBERT's.
    """

    model_name_or_path: str = "distilbert-base-uncased"
    tiny_classifier: bool = False
    tiny_hidden_size: int = 32
    tiny_dropout: float | None = None

    def __post_init__(self):
        if self.tiny_hidden_size < 2 or self.tiny_hidden_size % 2:
            raise ValueError(f"tiny_hidden_size={self.tiny_hidden_size} must be an even number >= 2 (2 heads)")


def check_reward_model_source(args, *, needed: bool) -> None:
    """
    Refuse `tiny_reward_model` beside `reward_model_name_or_path` or `clap_model_name_or_path` (the tiny reward model
    brings its own CLAP), or where no reward model is read (`needed=False`).
    """
    if not args.tiny_reward_model:
        return
    given = [name for name in ("reward_model_name_or_path", "clap_model_name_or_path") if getattr(args, name, None)]
    if given:
        raise ValueError(f"tiny_reward_model: true builds the reward model and its CLAP; remove {given}")
    if not needed:
        raise ValueError(
            "tiny_reward_model: true, but nothing reads a reward model here (add 'reward_model' to reward_funcs, "
            "or use judge: reward_model)"
        )


def load_caption_splits(args):
    """
    Train/test captioning data from [`~hfpref.scripts.utils.CaptionScriptArguments`]: a synthetic
    world, or a dataset with an audio column (split `test_size` when it has no test split).

    A row of the training or test split whose caption (`caption_column`) or one of whose `references` is empty,
    whitespace only or not text is refused, naming the split, the row (counted in the data as loaded, before any
    hold-out) and the column ([`~hfpref.data.loading.check_caption_rows`]): SFT would train the captioner to stop at
    once, and RL would score captions against nothing.
    """
    from datasets import DatasetDict

    from hfpref.data.loading import check_caption_rows, load_any_dataset, select_splits
    from hfpref.data.synthetic.audio_world import make_world

    if args.synthetic_clips:
        data = make_world(args.synthetic_clips, seed=args.synthetic_seed, clip_seconds=args.synthetic_clip_seconds)
    else:
        data = load_any_dataset(args.dataset_name)
    name = args.dataset_name or "the synthetic world"
    parts = (
        {split: data[split] for split in (args.dataset_train_split, args.dataset_test_split) if split in data}
        if isinstance(data, DatasetDict)
        else {args.dataset_train_split: data}
    )
    for split, part in parts.items():
        for column in dict.fromkeys([args.caption_column, "references"]):
            check_caption_rows(part, column, name=f"{name}, split {split!r}")
    splits = select_splits(
        data,
        name=name,
        train_split=args.dataset_train_split,
        test_split=args.dataset_test_split,
        test_size=args.test_size,
        seed=args.synthetic_seed,
    )
    limit = getattr(args, "max_train_samples", None)
    if limit is not None:
        splits["train"] = splits["train"].select(range(min(limit, len(splits["train"]))))
    return splits


def expected_length_for(script_args, train) -> float | None:
    """
    `L_exp` of the length penalty: `script_args.expected_length`, else (with a length penalty) the mean length of
    the training references (or captions) in words.
    """
    if script_args.expected_length is not None or not script_args.length_penalty_alpha:
        return script_args.expected_length
    from hfpref.rewards.functions import expected_caption_length

    column = "references" if "references" in train.column_names else script_args.caption_column
    expected_length = expected_caption_length(train[column])
    logger.info("expected caption length from %s: %.2f words", column, expected_length)
    return expected_length


def write_card_and_push(trainer, training_args: TrainingArguments, **card) -> None:
    """
    The end of every script's run after `save_model`: the model card (`trainer.create_model_card(**card)`), then
    `push_to_hub` when asked, which renders the same card again (transformers passes `card` on to
    `create_model_card`) before it uploads the folder.
    """
    trainer.create_model_card(**card)
    if training_args.push_to_hub:
        trainer.push_to_hub(**card)
        trainer.accelerator.print(f"Pushed to https://huggingface.co/{trainer.hub_model_id}.")


def load_captioner(args, texts: Iterable[str] | None = None, seed: int = 0):
    """
    The captioner of [`~hfpref.scripts.utils.CaptionerArguments`]: a checkpoint (safetensors only, no remote code;
    a seq2seq captioner through `AutoModelForSpeechSeq2Seq`, an audio LLM through its own class) or, with
    `tiny_captioner`, a tiny one built from a config with a tokenizer trained on `texts`, its random weights drawn
    from `seed` (the run's seed). The audio encoder is frozen
    as `freeze_audio_encoder` says ([`~hfpref.scripts.utils.captioner_peft_config`] gives the LoRA config).

    Returns:
        `(model, processor)`.
    """
    from transformers import AutoConfig, AutoModelForSpeechSeq2Seq, AutoProcessor

    from hfpref.models.audio_llm import AUDIO_LLM_ARCHITECTURES, build_tiny_qwen2_audio_captioner, is_audio_llm

    if args.tiny_captioner:
        if texts is None:
            raise ValueError("tiny_captioner needs the training captions to train its tokenizer")
        if args.tiny_architecture == "qwen2_audio":
            model, processor = build_tiny_qwen2_audio_captioner(
                texts, shipped_ids=False, clip_seconds=args.tiny_clip_seconds, seed=seed
            )
        else:
            model, processor = build_tiny_whisper_captioner(texts, clip_seconds=args.tiny_clip_seconds, seed=seed)
    else:
        from hfpref.utils.distributed import zero3_init_disabled
        from hfpref.utils.safe_loading import check_pretrained_path, load_pretrained

        check_pretrained_path(args.model_name_or_path, what="model_name_or_path")
        config = AutoConfig.from_pretrained(args.model_name_or_path, trust_remote_code=False)
        architecture = (getattr(config, "architectures", None) or [""])[0]
        if not config.is_encoder_decoder and hasattr(config, "audio_config"):
            if architecture not in AUDIO_LLM_ARCHITECTURES:
                raise ValueError(
                    f"{args.model_name_or_path} is a {architecture or config.model_type} audio LLM; hfpref captions "
                    f"with {list(AUDIO_LLM_ARCHITECTURES)}"
                )
            import transformers

            model_class = getattr(transformers, architecture)
        else:
            model_class = AutoModelForSpeechSeq2Seq
        # Safetensors only (a folder with only .bin weights is refused, naming it); remote code is never trusted.
        # Loaded whole even under ZeRO-3 (DeepSpeed partitions it when the trainer prepares it): transformers'
        # zero.Init load re-initialises Whisper's sinusoidal positions from a partitioned, empty weight and fails,
        # and a captioner (whisper-large: 1.5B) fits every process whole.
        with zero3_init_disabled():
            model = load_pretrained(model_class, args.model_name_or_path)
        processor = load_pretrained(AutoProcessor, args.model_name_or_path)
    freeze = args.freeze_audio_encoder if args.freeze_audio_encoder is not None else is_audio_llm(model)
    if freeze:
        from hfpref.models.audio_llm import freeze_audio_tower

        if is_audio_llm(model):
            freeze_audio_tower(model)
        else:
            model.get_encoder().requires_grad_(False)
    return model, processor


def captioner_peft_config(args, model):
    """
    The LoRA config of `use_peft` (`None` without it): for an audio LLM on the LLM's linear layers only (the audio
    encoder and projector keep their weights), for a seq2seq captioner on its attention projections.
    """
    if not args.use_peft:
        return None
    from peft import LoraConfig

    from hfpref.models.audio_llm import is_audio_llm, language_model_lora_targets

    targets = language_model_lora_targets(model) if is_audio_llm(model) else ["q_proj", "k_proj", "v_proj", "out_proj"]
    return LoraConfig(
        r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, target_modules=targets
    )


def load_causal_lm(model_args):
    """
    `(model, tokenizer)`: the causal LM of TRL's `ModelConfig` (`model_name_or_path`, `model_revision`, `dtype`), from
    safetensors, remote code never trusted.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hfpref.utils.safe_loading import load_pretrained

    tokenizer = load_pretrained(AutoTokenizer, model_args.model_name_or_path, revision=model_args.model_revision)
    model = load_pretrained(
        AutoModelForCausalLM, model_args.model_name_or_path, revision=model_args.model_revision, dtype=model_args.dtype
    )
    return model, tokenizer


def load_audibility_classifier(model_args, texts: Iterable[str] | None = None):
    """
    The classifier of [`~hfpref.scripts.utils.AudibilityModelArguments`] with a fresh
    2-label head: a checkpoint (safetensors only, no remote code) or, with `tiny_classifier`, a 2-layer DistilBERT
    whose tokenizer is trained on `texts`.

    Returns:
        `(model, tokenizer)`.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if model_args.tiny_classifier:
        if texts is None:
            raise ValueError("tiny_classifier needs the training sentences to train its tokenizer")
        return build_tiny_audibility_classifier(
            texts, hidden_size=model_args.tiny_hidden_size, dropout=model_args.tiny_dropout
        )
    from hfpref.utils.safe_loading import load_pretrained

    tokenizer = load_pretrained(AutoTokenizer, model_args.model_name_or_path)
    if len(tokenizer) <= 10:
        raise ValueError(
            f"the tokenizer of {model_args.model_name_or_path} has {len(tokenizer)} tokens (only special tokens): "
            "its vocabulary files are missing (offline without a local copy?)"
        )
    model = load_pretrained(
        AutoModelForSequenceClassification,
        model_args.model_name_or_path,
        num_labels=2,
        id2label={0: "non_audible", 1: "audible"},
        label2id={"non_audible": 0, "audible": 1},
        use_safetensors=True,
    )
    return model, tokenizer


def save_on_main_process(training_args: TrainingArguments, save: Callable[[], None], *, what: str) -> None:
    """
    Run `save()` on the process that saves (`training_args.should_save`: the main process, or the main process of each
    node with `save_on_each_node`) while the other processes of the launch wait, so that all of them read the same
    files afterwards.
    """
    with training_args.main_process_first(local=training_args.save_on_each_node, desc=what):
        if training_args.should_save:
            save()


def save_tiny_clap(texts: Iterable[str], save_directory: str, *, seed: int) -> None:
    """
    A random tiny CLAP ([`~hfpref.encoders.build_tiny_clap`] with the sizes of `TINY_CLAP`) whose tokenizer is trained
    on `texts`, saved with its processor to `save_directory`. The same texts and seed give the same files in every
    process and every run.
    """
    from hfpref.encoders.clap import build_tiny_clap

    model, processor = build_tiny_clap(texts, seed=seed, **TINY_CLAP)
    model.save_pretrained(save_directory)
    processor.save_pretrained(save_directory)


def save_tiny_reward_model(texts: Iterable[str], save_directory: str, *, seed: int) -> None:
    """
    A random [`~hfpref.rewards.CLAPRewardModel`] head (one hidden layer of 16) on a tiny CLAP ([`save_tiny_clap`])
    saved in `<save_directory>/tiny_clap`, which the reward model records as its CLAP; seeded by `seed`.
    """
    import torch

    from hfpref.encoders.clap import ClapEmbedder
    from hfpref.rewards import CLAPRewardConfig, CLAPRewardModel

    clap_directory = os.path.join(save_directory, TINY_CLAP_DIR)
    save_tiny_clap(texts, clap_directory, seed=seed)
    embedder = ClapEmbedder.from_pretrained(clap_directory, show_progress=False)
    config = CLAPRewardConfig(
        embedding_dim=embedder.embedding_dim,
        hidden_sizes=[16],
        clap_checkpoint=clap_directory,
        clap_fingerprint=embedder.fingerprint,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLAPRewardModel(config)
    model.save_pretrained(save_directory)


def resolve_reward_model(script_args, training_args: TrainingArguments, texts: Iterable[str]) -> str | None:
    """
    The reward model of a script: `script_args.reward_model_name_or_path`, or with `script_args.tiny_reward_model` a
    tiny one ([`save_tiny_reward_model`] on `texts`, seeded by `training_args.seed`) saved to
    `<output_dir>/tiny_reward_model` by the main process before any process reads it.
    """
    if not script_args.tiny_reward_model:
        return script_args.reward_model_name_or_path
    path = os.path.join(training_args.output_dir, TINY_REWARD_MODEL_DIR)
    texts = list(texts)
    save_on_main_process(
        training_args, lambda: save_tiny_reward_model(texts, path, seed=training_args.seed), what="tiny reward model"
    )
    return path


def save_tiny_llm(model, tokenizer, training_args: TrainingArguments) -> str:
    """
    Save an LLM built in memory (`tiny_llm`) with its tokenizer to `<output_dir>/tiny_llm` (main process) and record
    that folder as the model's `name_or_path`, so that a LoRA adapter trained on it names a base that loads:
    `AutoModelForCausalLM.from_pretrained(output_dir)` then gives the adapted model.
    """
    path = os.path.join(training_args.output_dir, TINY_LLM_DIR)

    def save():
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)

    save_on_main_process(training_args, save, what="tiny LLM")
    model.name_or_path = model.config._name_or_path = path
    return path


@dataclass
class CaptionGRPOScriptArguments(CaptionScriptArguments):
    r"""
    Data and reward arguments of `recipes/caption_grpo.py`: the data fields of
    [`~hfpref.scripts.utils.CaptionScriptArguments`], with the synthetic world as the default source, and the reward
    fields of [`~hfpref.scripts.utils.CaptionRLScriptArguments`], with the synthetic world's oracle among the rewards.

    Parameters:
        synthetic_clips (`int`, *optional*):
            Clips of the synthetic world; when neither this nor `dataset_name` is given, a world of 64 clips.
        reward_funcs (`list[str]`, *optional*, defaults to `["reward_model"]`):
            Rewards by name: those of `hfpref.rewards.functions.REWARD_FUNCTIONS`, or `"oracle"`, the synthetic
            world's judge ([`~hfpref.judges.oracle.get_oracle_reward`]), which reads each clip's true events from the
            `events` column (offline runs only). The length and repetition penalties wrap the first one.
        reward_model_name_or_path (`str`, *optional*): a saved CLAP reward model (for `"reward_model"`).
        tiny_reward_model (`bool`, *optional*, defaults to `False`):
            For `"reward_model"`, a random reward head on a tiny CLAP built on the training captions instead, as in
            [`~hfpref.scripts.utils.CaptionRLScriptArguments`].
        clap_model_name_or_path (`str`, *optional*): CLAP for CLAP rewards (default: the reward model's).
        embedding_cache_dir (`str`, *optional*): CLAP embedding cache (default: `<output_dir>/embedding-cache`).
        length_penalty_alpha (`float`, *optional*, defaults to `0.4`): length penalty (the paper: 0.4 on AudioCaps).
        expected_length (`float`, *optional*): `L_exp` in words; default the mean reference length of the data.
        reward_repetition_penalty (`float`, *optional*):
            Strength of the repetition penalty on the reward; `None` for none. (`repetition_penalty` is
            `GRPOConfig`'s, a sampling setting.)
        tiny_llm (`bool`, *optional*, defaults to `False`):
            Build a random 2-layer Llama with a tokenizer trained on the training captions instead of loading
            `model_name_or_path` (offline runs and tests); its weights are seeded by the training `seed`.
    """

    synthetic_clips: int | None = None
    reward_funcs: list[str] = field(default_factory=lambda: ["reward_model"])
    reward_model_name_or_path: str | None = None
    tiny_reward_model: bool = False
    clap_model_name_or_path: str | None = None
    embedding_cache_dir: str | None = None
    length_penalty_alpha: float | None = 0.4
    expected_length: float | None = None
    reward_repetition_penalty: float | None = None
    tiny_llm: bool = False

    def __post_init__(self):
        if not self.dataset_name and not self.synthetic_clips:
            self.synthetic_clips = 64
        super().__post_init__()
        check_reward_model_source(self, needed="reward_model" in self.reward_funcs)
