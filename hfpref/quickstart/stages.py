"""
The quickstart's stages: how big each is ([`SIZES`]), the recipe config of each training stage ([`stage_configs`],
written to `recipes/quickstart/` by [`write_stage_configs`]), the runner that reuses a finished stage
([`_Stages`]), and the stages that synthesize the world and train: `world`, and `clap`, `sft`, `reward`, `rl`, each
through its recipe (`hfpref.scripts.<recipe>`, see [`TRAINING_STAGES`]).

The stage list and what each stage leaves on disk are declared in [`~hfpref.data.loading`], where a recipe run on its
own reads them to name the stage that writes a missing input.

A finished stage records the sha256 of every file it left ([`hash_outputs`]); before reusing the stage, the runner
checks them again, and a file that is gone, truncated or changed (a bit flip, an edit) makes the stage, and every
stage after it that reads it, run again, with a warning naming the file. Re-running rather than refusing is what the
quickstart does for every other sign of a stale stage (an edited config, a missing output): the stage remakes the file.
"""

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.loading import QUICKSTART_RECIPES, QUICKSTART_RECORDS, QUICKSTART_STAGE_OUTPUTS, QUICKSTART_STAGES
from ..utils.records import atomic_write_json, read_json_record


STAGES = QUICKSTART_STAGES
# The recipe each training stage runs (`hfpref.scripts.<recipe>`, `recipes/<recipe>.py`).
TRAINING_STAGES = QUICKSTART_RECIPES
# What each stage leaves on disk (relative to the output dir); a stage whose outputs are gone runs again.
STAGE_OUTPUTS = QUICKSTART_STAGE_OUTPUTS
DEFAULT_OUTPUT_DIR = "outputs/quickstart"
# The baseline captioner the quickstart trains from scratch: a 2-layer Whisper (encoder-decoder), or Qwen2-Audio's
# architecture (audio encoder, projector, decoder-only LLM) cut to 2 layers each side.
CAPTIONERS = ("whisper", "audio-llm")
DEFAULT_CAPTIONER = "whisper"
# Where `hfpref quickstart --captioner <c>` writes by default: one folder per captioner, never mixed (a folder holds
# one captioner's stages; [`check_captioner`] refuses a run of the other in it).
DEFAULT_OUTPUT_DIRS = {"whisper": DEFAULT_OUTPUT_DIR, "audio-llm": "outputs/quickstart-audio-llm"}

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuickstartSize:
    r"""
    How big each stage of the quickstart is.

    Args:
        train_clips (`int`): clips the CLAP is fitted on; RL samples captions for their audio (never their captions).
        sft_clips (`int`): the first `sft_clips` train clips, with their captions, train the baseline captioner.
        preference_clips (`int`): clips whose baseline captions the oracle judges (the preference dataset).
        test_clips (`int`): held-out clips of the final evaluation, scored once.
        validation_clips (`int`): held-out clips every choice is made on (the SFT and RL runs' evaluation), drawn after
            the test clips so that train, preference and test clips stay those of a world without them.
        clap_extra_clips (`int`): captioned clips only the CLAP is fitted on, beside the train clips (the world's
            `clap` split, drawn after the validation clips). A CLAP is pre-trained on far more audio-text pairs than
            the captioner is fine-tuned on (the paper's, on LAION-Audio-630K); its embeddings are all the reward model
            sees, and this is what raised the reward model's accuracy (README, "What we tried").
        clip_seconds (`int`): length of every clip (and the window of the CLAP and the captioner).
        clap_steps (`int`): contrastive steps of the tiny CLAP (batch 64).
        sft_epochs (`float`): SFT epochs, deliberately too few for the captioner to converge.
        reward_epochs (`int`): reward-model epochs.
        rl_steps (`int`): RL steps.
        rl_batch_size (`int`): clips per RL step (each sampled `RL_SAMPLES` times).
        top_k (`int`): top-k of the sampled caption in the preference stage.
    """

    train_clips: int
    sft_clips: int
    preference_clips: int
    test_clips: int
    validation_clips: int = 1024
    clap_extra_clips: int = 1536
    clip_seconds: int = 2
    clap_steps: int = 1200
    sft_epochs: float = 30.0
    reward_epochs: int = 40
    rl_steps: int = 150
    rl_batch_size: int = 16
    top_k: int = 5

    def __post_init__(self):
        if not 0 < self.sft_clips <= self.train_clips:
            raise ValueError(f"sft_clips={self.sft_clips} must be between 1 and train_clips={self.train_clips}")
        if self.clap_extra_clips < 0:
            raise ValueError(f"clap_extra_clips={self.clap_extra_clips} must be 0 or more")
        for name in (
            "preference_clips", "test_clips", "validation_clips", "clap_steps", "reward_epochs", "rl_steps",
            "rl_batch_size",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")


SIZES = {
    # A smoke test of the whole pipeline in well under a minute: every stage runs, nothing has time to learn.
    "tiny": QuickstartSize(
        train_clips=48,
        sft_clips=24,
        preference_clips=32,
        test_clips=24,
        validation_clips=16,
        clap_extra_clips=16,
        clap_steps=8,
        sft_epochs=1.0,
        reward_epochs=2,
        rl_steps=3,
        rl_batch_size=8,
    ),
    # 1,024 test clips: with 256 the RL win rate on non-challenging clips rested on as few as 8 non-tied clips.
    # The CLAP: 1,200 steps on 2,048 clips (512 train + 1,536 only it sees). On the 512 train clips alone, 800 steps
    # in place of 400 did not hold up over seeds (README, "What we tried").
    "small": QuickstartSize(train_clips=512, sft_clips=320, preference_clips=384, test_clips=1024),
    "medium": QuickstartSize(
        train_clips=1024,
        sft_clips=640,
        preference_clips=768,
        test_clips=1024,
        clap_extra_clips=3072,
        clap_steps=2400,
        reward_epochs=40,
        rl_steps=300,
    ),
}
DEFAULT_SIZE = "small"


# What the audio-LLM captioner changes in the SFT and RL configs. Trained from scratch, its audio encoder learns too
# (`freeze_audio_encoder` defaults to `True` for audio LLMs, which suits a pre-trained checkpoint, not random weights).
# The Whisper captioner's learning rate and epochs are kept: with them the audio-LLM baseline's greedy captions of the
# preference clips (the quickstart's validation data, never the test clips) score 0.74 with the oracle on seed 0
# (Whisper's 0.66), still short of convergence, so nothing was tuned for it; RL's settings are Whisper's too.
# The RL reward's ensemble: members and lambda of its conservative reward (mean - lambda * std); the selection reward
# model's seed is the run's seed plus this offset; how many times RL evaluates on the validation clips.
REWARD_MEMBERS = 4
ENSEMBLE_LAMBDA = 0.5
SELECTION_SEED_OFFSET = 1000
RL_EVALUATIONS = 5
# Captions RL samples per clip (RLOO's group).
RL_SAMPLES = 4
AUDIO_LLM_SFT = dict(tiny_architecture="qwen2_audio", freeze_audio_encoder=False)
AUDIO_LLM_RL = dict(freeze_audio_encoder=False)


def _check_captioner_name(captioner: str) -> None:
    if captioner not in CAPTIONERS:
        raise ValueError(f"captioner={captioner!r} is not one of {list(CAPTIONERS)}")


def _size(size: str | QuickstartSize) -> QuickstartSize:
    if isinstance(size, QuickstartSize):
        return size
    if size not in SIZES:
        raise ValueError(f"size={size!r} is not one of {sorted(SIZES)}")
    return SIZES[size]


# Stage configs: one flat dict per training stage, exactly what its recipe YAML holds.


def stage_configs(
    output_dir: str | Path = DEFAULT_OUTPUT_DIR,
    size: str | QuickstartSize = DEFAULT_SIZE,
    seed: int = 0,
    captioner: str = DEFAULT_CAPTIONER,
) -> dict[str, dict[str, Any]]:
    r"""
    The recipe configuration of each training stage, as the flat key/value mapping its YAML file holds.

    Args:
        output_dir (`str` or `Path`, *optional*, defaults to `"outputs/quickstart"`):
            Where the quickstart writes; every path in the configs is under it.
        size (`str` or [`QuickstartSize`], *optional*, defaults to `"small"`):
            `"small"`, `"medium"` or a custom size.
        seed (`int`, *optional*, defaults to `0`):
            Seed of every stage.
        captioner (`str`, *optional*, defaults to `"whisper"`):
            The baseline captioner trained from scratch in the SFT stage (and fine-tuned by RL): `"whisper"` (a
            2-layer Whisper) or `"audio-llm"` (Qwen2-Audio's architecture cut to 2 layers each side).

    Returns:
        `dict[str, dict]`: `{"clap": {...}, "sft": {...}, "reward": {...}, "selection": {...}, "rl": {...}}`; each
        parses with `hfpref.scripts.<script>.make_parser()` (see [`TRAINING_STAGES`]).

    Example:

    ```python
    >>> configs = stage_configs("outputs/quickstart")
    >>> configs["rl"]["model_name_or_path"], configs["rl"]["reward_model_name_or_path"]
    ('outputs/quickstart/sft', 'outputs/quickstart/reward-model')

    ```
    """
    size, out = _size(size), Path(output_dir).as_posix()
    _check_captioner_name(captioner)
    world = f"{out}/world"
    # TensorBoard logs of every training stage land in <stage output_dir>/runs (`tensorboard --logdir <output_dir>`).
    common = dict(report_to="tensorboard", seed=seed, save_strategy="no", push_to_hub=False)
    clap = dict(
        dataset_name=world,
        dataset_train_split="train+clap" if size.clap_extra_clips else "train",
        dataset_test_split="test",
        tiny=True,
        tiny_projection_dim=32,
        tiny_clip_seconds=float(size.clip_seconds),
        tiny_num_mel_bins=32,
        tiny_spec_size=64,
        tiny_text_dropout=0.0,
        references_column="references",
        retrieval_group_column="events",
        loss_type="symmetric",
        cache_audio_features=True,
        learning_rate=3.0e-3,
        warmup_steps=10,
        max_steps=size.clap_steps,
        per_device_train_batch_size=64,
        per_device_eval_batch_size=64,
        eval_strategy="no",
        logging_steps=max(1, min(25, size.clap_steps // 10)),
        output_dir=f"{out}/clap",
        **common,
    )
    sft = dict(
        dataset_name=world,
        dataset_train_split="train",
        dataset_test_split="validation",  # its evaluation loss: validation clips, never the test clips
        max_train_samples=size.sft_clips,
        caption_column="caption",
        tiny_captioner=True,
        tiny_clip_seconds=float(size.clip_seconds),
        num_train_epochs=size.sft_epochs,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=64,
        learning_rate=1.0e-3,
        warmup_steps=10,
        max_caption_tokens=32,
        eval_strategy="no",
        logging_steps=5,
        output_dir=f"{out}/sft",
        **common,
    )
    if captioner == "audio-llm":
        sft.update(AUDIO_LLM_SFT)
    reward = dict(
        dataset_name=f"{out}/preferences",
        dataset_train_split="train",
        dataset_test_split="test",
        clap_model_name_or_path=f"{out}/clap",
        embedding_cache_dir=f"{out}/embedding-cache",
        loss_type="bt",
        bt_scale=10.0,
        l2_coef=0.1,
        l2_reduction="mean",
        category_column="source",
        num_train_epochs=size.reward_epochs,
        per_device_train_batch_size=64,
        learning_rate=1.0e-3,
        hidden_sizes=[512, 128],
        dropout=0.1,
        reward_clamp=[0.01, 0.99],
        eval_strategy="epoch",
        logging_steps=5,
        output_dir=f"{out}/reward-model",
        **common,
    )
    # The reward model RL optimises is an ensemble (each member on its own bootstrap resample of the pairs) scored
    # conservatively, mean - lambda * std of its members (Coste et al. 2023). The RL checkpoint is picked by another
    # reward model, trained on the same pairs from another seed, that the policy never optimises against (Gao et al.
    # 2022's proxy/gold split, with a held-out model in place of the gold one); the choices: README, "What we tried".
    reward.update(num_members=REWARD_MEMBERS, ensemble_lambda=ENSEMBLE_LAMBDA)
    selection = dict(reward, num_members=1, ensemble_lambda=0.0, seed=seed + SELECTION_SEED_OFFSET)
    selection["output_dir"] = f"{out}/selection-reward-model"
    rl = dict(
        dataset_name=world,
        dataset_train_split="train",
        dataset_test_split="validation",  # its evaluation (greedy reward): validation clips, never the test clips
        model_name_or_path=f"{out}/sft",
        reward_funcs=["reward_model"],
        reward_model_name_or_path=f"{out}/reward-model",
        clap_model_name_or_path=f"{out}/clap",
        embedding_cache_dir=f"{out}/embedding-cache",
        # No length penalty (the paper's is 0.4 past the mean reference length): in this world a caption grows with
        # the events it names, and with the CLAP on 2,048 clips the penalty taught RL to drop events (validation
        # non-challenging win rate 0.46 with it over seeds 0-4, README "What we tried").
        length_penalty_alpha=0.0,
        # RLOO (Ahmadian et al. 2024): 4 samples a clip, each against the mean reward of the other three, in place of
        # the paper's SCST (one sample against the greedy caption). On the validation clips it kept the captions the
        # baseline got right better than SCST did at KL 0.4 or 0.8 (README, "What we tried").
        loss_type="rloo",
        num_samples=RL_SAMPLES,
        # Off the paper's recipe, for a 2-layer captioner: samples at temperature 1 are mostly long hallucinations (RL
        # win rate 0.44, non-challenging 0.22 on seed 0), and without a KL term to the baseline the policy drifts onto
        # captions the reward model itself ranks lower: temperature 0.7 (the policy optimised is the temperature-0.7
        # sampler) with KL 0.4 to the baseline.
        temperature=0.7,
        kl_coef=0.4,
        max_new_tokens=24,
        max_steps=size.rl_steps,
        per_device_train_batch_size=size.rl_batch_size,
        learning_rate=1.0e-4,
        warmup_steps=10,
        logging_steps=max(1, min(5, size.rl_steps // 10)),
        output_dir=f"{out}/rl",
        **common,
    )
    if captioner == "audio-llm":
        rl.update(AUDIO_LLM_RL)
    # Checkpoint selection: RL evaluates its greedy captions of the validation clips `RL_EVALUATIONS` times and keeps
    # the checkpoint the selection reward model scores highest (`eval_rewards/selection_reward`).
    every = max(1, size.rl_steps // RL_EVALUATIONS)
    rl.update(
        selection_reward_model=selection["output_dir"],
        eval_strategy="steps",
        eval_steps=every,
        save_strategy="steps",
        save_steps=every,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="rewards/selection_reward",
        greater_is_better=True,
        per_device_eval_batch_size=64,
    )
    return {"clap": clap, "sft": sft, "reward": reward, "selection": selection, "rl": rl}


CONFIG_HEADERS = {
    "clap": "Quickstart stage 2: fit a tiny CLAP contrastively on the synthetic world's train and clap clips.",
    "sft": "Quickstart stage 3: the baseline captioner, by SFT on part of the train clips, short of convergence.",
    "reward": "Quickstart stage 5: a CLAP reward-model ensemble (Bradley-Terry) on the oracle-judged captions.",
    "selection": "Quickstart stage 6: the held-out reward model that picks the RL checkpoint (never optimised).",
    "rl": "Quickstart stage 7: RLOO of the baseline on the ensemble's reward; the selection model keeps a checkpoint.",
}


def stage_config_name(captioner: str = DEFAULT_CAPTIONER, stage: str | None = None) -> str:
    """
    The file name of a stage's shipped config: `config_small.yaml`, `config_small_audio_llm.yaml`; the `selection`
    stage runs the reward recipe, its configs end in `_selection` (`reward_model/config_small_selection.yaml`).
    """
    _check_captioner_name(captioner)
    suffix = "" if captioner == DEFAULT_CAPTIONER else "_" + captioner.replace("-", "_")
    suffix += "_selection" if stage == "selection" else ""
    return f"config_{DEFAULT_SIZE}{suffix}.yaml"


def render_stage_config(stage: str, config: dict[str, Any], captioner: str = DEFAULT_CAPTIONER) -> str:
    """The YAML text of one stage's recipe config, with a header saying how to run it."""
    import yaml

    script = TRAINING_STAGES[stage]
    if captioner == DEFAULT_CAPTIONER:
        written = [
            "# Written by `hfpref quickstart --write-configs recipes/quickstart` (default size and seed); it reads the",
            "# outputs of the earlier stages under outputs/quickstart (run `make quickstart` once, or the stages before).",
        ]
    else:
        written = [
            "# Written by `hfpref quickstart --write-configs recipes/quickstart` (default size and seed, audio-LLM",
            f"# captioner); it reads the outputs of the earlier stages under {DEFAULT_OUTPUT_DIRS[captioner]} (run",
            f"# `hfpref quickstart --captioner {captioner}` once, or the stages before).",
        ]
    header = [
        f"# {CONFIG_HEADERS[stage]}",
        *written,
        f"#   accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/{script}.py \\",
        f"#       --config recipes/quickstart/{script}/{stage_config_name(captioner, stage)}",
    ]
    return "\n".join(header) + "\n" + yaml.safe_dump(config, sort_keys=False)


def write_stage_configs(directory: str | Path, output_dir: str | Path | None = None, seed: int = 0) -> list[Path]:
    """
    Write `<directory>/<recipe>/config_small.yaml` (Whisper captioner) and `config_small_audio_llm.yaml` (audio-LLM
    captioner) for every training stage; returns the paths. Each captioner's configs point under `output_dir`, by
    default its own quickstart folder ([`DEFAULT_OUTPUT_DIRS`]).
    """
    written = []
    for captioner in CAPTIONERS:
        out = output_dir if output_dir is not None else DEFAULT_OUTPUT_DIRS[captioner]
        for stage, config in stage_configs(out, DEFAULT_SIZE, seed, captioner).items():
            path = Path(directory) / TRAINING_STAGES[stage] / stage_config_name(captioner, stage)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(render_stage_config(stage, config, captioner))
            written.append(path)
    return written


def parse_stage_config(stage: str, config: dict[str, Any]) -> tuple:
    """The `(script_args, training_args, model_args)` of a stage, through its recipe parser (unknown keys are fatal)."""
    import importlib

    parser = importlib.import_module(f"hfpref.scripts.{TRAINING_STAGES[stage]}").make_parser()
    return tuple(parser.parse_dict(config, allow_extra_keys=False))


# Stage bookkeeping.


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# What each stage reads: a stage re-runs when its configuration or anything upstream of it changed.
DEPENDS_ON = {
    "world": [],
    "clap": ["world"],
    "sft": ["world"],
    "preferences": ["world", "sft"],
    "reward": ["clap", "preferences"],
    "selection": ["clap", "preferences"],
    "rl": ["world", "clap", "sft", "reward", "selection"],
    "evaluate": ["world", "clap", "sft", "reward", "rl"],
}


def _is_artifact(relative: Path) -> bool:
    """
    Whether a file under a stage's output folder is part of what the stage made, not a log or a cache: TensorBoard logs
    (`runs/`, a writer may still flush after the stage ends) and `datasets` cache files (`cache-*.arrow`, which later
    stages add beside the data they map) are neither hashed nor checked.
    """
    return relative.parts[0] != "runs" and not (relative.name.startswith("cache-") and relative.suffix == ".arrow")


def stage_output_files(output_dir: Path, stage: str, outputs: dict[str, list[str]] | None = None) -> list[Path]:
    """
    The files `stage` left: every artifact ([`_is_artifact`]) under the top-level folder (or the file) of each of its
    outputs (`outputs[stage]`, by default the quickstart's `STAGE_OUTPUTS`), relative to `output_dir`, sorted.
    """
    files = []
    for top in dict.fromkeys(path.split("/")[0] for path in (outputs or STAGE_OUTPUTS)[stage]):
        root = output_dir / top
        if root.is_file():
            files.append(Path(top))
        elif root.is_dir():
            files += [
                Path(top) / f.relative_to(root)
                for f in root.rglob("*")
                if f.is_file() and _is_artifact(f.relative_to(root))
            ]
    return sorted(files)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_outputs(output_dir: Path, stage: str, outputs: dict[str, list[str]] | None = None) -> dict[str, str]:
    """`{path relative to output_dir: sha256}` of every file `stage` left ([`stage_output_files`])."""
    return {path.as_posix(): _sha256(output_dir / path) for path in stage_output_files(output_dir, stage, outputs)}


def changed_output(output_dir: Path, recorded: dict[str, str] | None) -> str | None:
    """
    Why the outputs recorded as `recorded` (from [`hash_outputs`]) cannot be reused, or `None` when every file is
    there with its recorded sha256. Files added since (caches, logs) are not checked.
    """
    if not recorded:
        return "its record holds no content hashes (written by an older hfpref)"
    for relative, digest in recorded.items():
        path = output_dir / relative
        if not path.is_file():
            return f"{path} is gone"
        if _sha256(path) != digest:
            return f"{path} changed since the stage wrote it (sha256 {digest[:12]}... recorded; truncated or edited?)"
    return None


def check_captioner(output_dir: Path, captioner: str, force: bool) -> None:
    """
    Refuse to run the quickstart of `captioner` in a folder holding stages of the other captioner: its models, data and
    results would be overwritten stage by stage, and an interrupted run would leave the two mixed. `force` (every stage
    runs again) replaces them. A record without a captioner was written before there was a choice: Whisper.
    """
    _check_captioner_name(captioner)
    records = sorted((output_dir / QUICKSTART_RECORDS).glob("*.json"))
    other: dict[str, list[str]] = {}
    for path in records:
        record = read_json_record(path)
        if record is not None and record.get("captioner", "whisper") != captioner:
            other.setdefault(record.get("captioner", "whisper"), []).append(path.stem)
    if other and not force:
        held = "; ".join(f"{name!r}: {', '.join(stages)}" for name, stages in other.items())
        raise ValueError(
            f"{output_dir} holds the quickstart of another captioner (stages of {held}), not {captioner!r}: give "
            f"another --output-dir (the default for {captioner!r} is {DEFAULT_OUTPUT_DIRS[captioner]}), or --force to "
            "replace it"
        )


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its finished children, in MB."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024  # ru_maxrss is in KiB on Linux


class _Stages:
    """
    Runs stages in order, reusing a finished one whose configuration and inputs are unchanged and whose output files
    still hold what it wrote (their recorded sha256); any other finished stage runs again. Every record names the
    run's captioner ([`check_captioner`] refuses a folder holding the other's).

    The stage list, what each stage reads and leaves default to the quickstart's (`STAGE_OUTPUTS`, `DEPENDS_ON`);
    another pipeline (`hfpref loop`'s rounds) passes its own, and `upstream` fingerprints of stages in other folders.
    """

    def __init__(
        self,
        output_dir: Path,
        force: bool,
        captioner: str = DEFAULT_CAPTIONER,
        *,
        outputs: dict[str, list[str]] | None = None,
        depends_on: dict[str, list[str]] | None = None,
    ):
        self.output_dir, self.force, self.captioner = output_dir, force, captioner
        self.outputs = outputs or STAGE_OUTPUTS
        self.depends_on = depends_on or DEPENDS_ON
        self.stages = list(self.outputs)
        self.records: dict[str, dict] = {}
        self.reused: set[str] = set()

    def marker(self, stage: str) -> Path:
        return self.output_dir / QUICKSTART_RECORDS / f"{stage}.json"

    def run(self, stage: str, config: dict, fn, upstream: dict[str, str] | None = None) -> dict:
        """
        Run `fn` for `stage` (or reuse its finished run) and return its outputs. `upstream` maps names of stages in
        other folders to their fingerprints: the stage runs again when one changed, as for its own inputs.
        """
        index = self.stages.index(stage) + 1
        marker = self.marker(stage)
        config = _jsonable(config)
        inputs = {name: self.records[name]["fingerprint"] for name in self.depends_on[stage]}
        inputs.update(upstream or {})
        previous = read_json_record(marker)  # an unreadable record warns, naming it, and the stage runs again
        reuse = (
            not self.force
            and previous is not None
            and previous.get("config") == config
            and previous.get("inputs") == inputs
            and all((self.output_dir / path).exists() for path in self.outputs[stage])
        )
        if reuse:
            changed = changed_output(self.output_dir, previous.get("output_hashes"))
            if changed:
                logger.warning("quickstart stage %r runs again: %s", stage, changed)
                reuse = False
        if reuse:
            record = previous
            self.reused.add(stage)
            print(
                f"[{index}/{len(self.stages)}] {stage}: reused ({record['seconds']:.1f}s when it ran) - {record['summary']}"
            )
        else:
            if marker.exists():
                marker.unlink()
            start = time.perf_counter()
            outputs = fn()
            seconds = time.perf_counter() - start
            # A fresh fingerprint on every run: whatever reads this stage's outputs runs again after it.
            identity = [config, inputs, time.time_ns()]
            record = {
                "fingerprint": hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16],
                "captioner": self.captioner,
                "config": config,
                "inputs": inputs,
                "seconds": seconds,
                "peak_rss_mb": peak_rss_mb(),  # this process's peak so far: at least the stage's own
                "summary": outputs.pop("summary"),
                "outputs": outputs,
                "output_hashes": hash_outputs(self.output_dir, stage, self.outputs),
            }
            atomic_write_json(marker, _jsonable(record))
            record = read_json_record(marker)
            print(f"[{index}/{len(self.stages)}] {stage}: {seconds:.1f}s - {record['summary']}")
        self.records[stage] = record
        return record["outputs"]


# The stages that synthesize the world and train.


def world_settings(size: QuickstartSize, seed: int) -> dict:
    """The `world` stage's record of what it drew: a change re-draws the world (and re-runs what reads it)."""
    return {
        "train_clips": size.train_clips,
        "preference_clips": size.preference_clips,
        "test_clips": size.test_clips,
        "validation_clips": size.validation_clips,
        "clap_extra_clips": size.clap_extra_clips,
        "clip_seconds": size.clip_seconds,
        "seed": seed,
    }


def _world(output_dir: Path, size: QuickstartSize, seed: int) -> dict:
    from datasets import DatasetDict

    from ..data.synthetic.audio_world import make_world

    # The world's clips are drawn one after another from its seed: validation and then the CLAP's own clips come
    # last, so the first splits are the clips a world without them had.
    sizes = {
        "train": size.train_clips,
        "preference": size.preference_clips,
        "test": size.test_clips,
        "validation": size.validation_clips,
        "clap": size.clap_extra_clips,
    }
    sizes = {name: n for name, n in sizes.items() if n}
    ends = np.cumsum(list(sizes.values()))
    world = make_world(int(ends[-1]), seed=seed, clip_seconds=float(size.clip_seconds))
    splits = DatasetDict(
        {name: world.select(range(start, end)) for name, start, end in zip(sizes, [0, *ends[:-1]], ends)}
    )
    splits.save_to_disk(str(output_dir / "world"))
    counts = {name: len(split) for name, split in splits.items()}
    summary = ", ".join(f"{n} {name}" for name, n in counts.items()) + f" clips of {size.clip_seconds}s"
    return {"summary": summary, "clips": counts}


def _log_history(output_dir: Path) -> list[dict]:
    path = output_dir / "trainer_state.json"
    return json.loads(path.read_text())["log_history"] if path.is_file() else []


def _loss_trend(history: list[dict]) -> str:
    """`first -> last` of the logged training loss (the run's mean loss when it was too short to log)."""
    losses = [e["loss"] for e in history if "loss" in e]
    if losses:
        return f"{losses[0]:.2f} -> {losses[-1]:.2f}"
    return f"mean {next(e['train_loss'] for e in history if 'train_loss' in e):.2f}"


def _run_script(stage: str, config: dict):
    import importlib

    module = importlib.import_module(f"hfpref.scripts.{TRAINING_STAGES[stage]}")
    result = module.main(*parse_stage_config(stage, config))
    trainer = result[0] if isinstance(result, tuple) else result
    trainer.state.save_to_json(str(Path(config["output_dir"]) / "trainer_state.json"))
    return result


def _clap(config: dict, world_dir: Path) -> dict:
    from datasets import load_from_disk

    from ..trainers.clap_contrastive.clap_contrastive_trainer import retrieval_metrics

    trainer = _run_script("clap", config)
    test = load_from_disk(str(world_dir))["test"]
    audio, text = trainer.predict(test).predictions
    groups = [frozenset(events) for events in test["events"]]
    r1 = retrieval_metrics(audio, text, groups=groups, recall_at=(1,))["audio_to_text_r1"]
    chance = float(np.mean([sum(other == group for other in groups) / len(groups) for group in groups]))
    summary = f"contrastive loss {_loss_trend(trainer.state.log_history)}, test R@1 {r1:.2f} (chance {chance:.2f})"
    return {"summary": summary, "test_r1": r1, "test_r1_chance": chance}


def _sft(config: dict) -> dict:
    _, metrics = _run_script("sft", config)
    summary = f"train loss {_loss_trend(_log_history(Path(config['output_dir'])))}, validation loss {metrics['eval_loss']:.2f}"
    return {"summary": summary, "eval_loss": float(metrics["eval_loss"])}


# The held-out pairs that stand for human judgments: the oracle's pick between the baseline's two captions, and its
# corrections of both-fail clips. (Synthetic negatives train the reward model and are never held out.)
HUMAN_SOURCES = ("baseline", "correction")


def _reward(config: dict) -> dict:
    """The reward recipe, and its accuracy on the held-out human pairs (an ensemble's, and each member's)."""
    from datasets import load_from_disk

    _, metrics = _run_script("reward", config)
    held_out = list(load_from_disk(config["dataset_name"])["test"]["source"])
    counts = {source: held_out.count(source) for source in set(held_out)}
    human = [source for source in HUMAN_SOURCES if counts.get(source)]

    def human_accuracy(by_source: dict[str, float]) -> float:
        return sum(by_source[s] * counts[s] for s in human) / sum(counts[s] for s in human)

    by_source = {  # the ensemble's accuracy per source (each member's is eval_accuracy_<source>_member_<k>)
        k.removeprefix("eval_accuracy_"): float(v)
        for k, v in metrics.items()
        if k.startswith("eval_accuracy_") and "member_" not in k
    }
    size = config.get("num_members", 1)
    members = (
        [human_accuracy({s: float(metrics[f"eval_accuracy_{s}_member_{k}"]) for s in human}) for k in range(size)]
        if size > 1
        else []
    )
    accuracy = human_accuracy(by_source)
    summary = (
        f"held-out accuracy on the oracle's pairs {accuracy:.3f} ("
        + ", ".join(f"{k} {v:.3f} of {counts.get(k, 0)}" for k, v in by_source.items())
        + ")"
        + (f"; members {', '.join(f'{m:.3f}' for m in members)}" if members else "")
    )
    return {
        "summary": summary,
        "heldout_accuracy_human": accuracy,
        "heldout_accuracy_human_members": members,
        "heldout_accuracy": float(metrics["eval_accuracy"]),
        "heldout_accuracy_by_source": by_source,
        "heldout_pairs_by_source": counts,
    }


def _rl(config: dict) -> dict:
    trainer, metrics = _run_script("rl", config)
    logs = [e for e in trainer.state.log_history if "reward" in e]
    first, last = logs[: max(1, len(logs) // 5)], logs[-max(1, len(logs) // 5) :]
    reward = [float(np.mean([e["reward"] for e in part])) for part in (first, last)]
    # The selection reward of each evaluation on the validation clips, and the step load_best_model_at_end kept.
    # (The recipe's evaluation after training logs the kept checkpoint again, at the last step: the first entry of a
    # step is its own.)
    selection: dict[int, float] = {}
    for e in trainer.state.log_history:
        if "eval_rewards/selection_reward" in e:
            selection.setdefault(int(e["step"]), float(e["eval_rewards/selection_reward"]))
    best = trainer.state.best_model_checkpoint
    selected = int(Path(best).name.split("-")[-1]) if best else None
    summary = f"sampled reward {reward[0]:.3f} -> {reward[1]:.3f} over {len(logs)} logged steps"
    if selected is not None:
        summary += (
            f"; kept step {selected} of {sorted(selection)} (validation selection reward {selection[selected]:.3f})"
        )
    return {
        "summary": summary,
        "reward_first": reward[0],
        "reward_last": reward[1],
        "selected_step": selected,
        "selection_rewards": {str(step): value for step, value in sorted(selection.items())},
    }


def _load_captioner(path: Path):
    from ..scripts.utils import CaptionerArguments, load_captioner

    return load_captioner(CaptionerArguments(model_name_or_path=str(path)))
