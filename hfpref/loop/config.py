"""The settings of `hfpref loop`: one dataclass, read from a YAML file and overridden by command-line flags."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..quickstart.stages import CAPTIONERS, DEFAULT_CAPTIONER, DEFAULT_SIZE, SIZES


LOOP_JUDGES = ("oracle", "reward_model", "annotate", "llm")
DEFAULT_LOOP_OUTPUT_DIR = "outputs/loop"


@dataclass
class LoopConfig:
    r"""
    How `hfpref loop` runs: rounds of generate, judge, reward model, RL and evaluation on the synthetic world.

    Round 0 is the quickstart's first stages (world, CLAP, SFT captioner, its preference pairs, reward model); each
    round `k >= 1` draws a fresh pool of clips, has the round `k - 1` captioner caption them (greedy and top-k), has
    the judge pick, retrains the reward model on every round's pairs, runs RL from the round `k - 1` captioner with
    its KL term to round 0's, and evaluates against round `k - 1` and round 0.

    Args:
        output_dir (`str`, *optional*, defaults to `"outputs/loop"`):
            `round-0/`, `round-1/`, ... and the report (`results.json`, `results.md`, `win_rates.png`) go here.
        rounds (`int`, *optional*, defaults to `2`):
            Rounds after round 0.
        judge (`str`, *optional*, defaults to `"oracle"`):
            Who picks between the two captions of a pool clip: `"oracle"` (the synthetic world's, which also writes
            a correction when both fail), `"reward_model"` (the previous round's reward model, or
            `judge_reward_model`), `"annotate"` (people, in the annotation app: the loop serves the round's items
            and waits) or `"llm"` (an OpenAI-compatible endpoint scoring each caption against the clip's references).
        size (`str`, *optional*, defaults to `"small"`):
            The quickstart size of every stage (`tiny`, `small`, `medium`).
        seed (`int`, *optional*, defaults to `0`):
            Seed of the world, the pools and every stage.
        captioner (`str`, *optional*, defaults to `"whisper"`):
            The captioner round 0 trains from scratch (`"whisper"` or `"audio-llm"`).
        pool_clips (`int`, *optional*):
            Fresh clips judged per round; defaults to the size's `preference_clips` (round 0's).
        control (`bool`, *optional*, defaults to `False`):
            Also run the last round again without new pairs (`round-<k>-control/`: RL from round `k - 1` on round
            `k - 1`'s reward model): what more RL alone gives, against what new preference data gives.
        force (`bool`, *optional*, defaults to `False`):
            Run every stage again, even finished ones.
        reward_warm_start (`bool`, *optional*, defaults to `False`):
            Each round's reward ensemble (and, from round 2, its selection model) continues training from the previous
            round's (`init_from`) on every round's pairs, instead of starting from new heads.
        judge_reward_model (`str`, *optional*):
            The `"reward_model"` judge's model (it reads the round-0 CLAP's embeddings); by default each round's
            judge is the previous round's reward model.
        llm_base_url (`str`, *optional*), llm_model (`str`, *optional*), llm_api_key (`str`, *optional*),
        llm_timeout (`float`, *optional*, defaults to `30.0`): the `"llm"` judge's endpoint.
        annotate_answers_per_item (`int`, *optional*, defaults to `1`):
            The `"annotate"` judge waits until every item has this many answers (from different annotators) ...
        annotate_deadline_minutes (`float`, *optional*):
            ... or until this many minutes after the round's session began (kept across restarts); then the items
            with answers are used and the others are counted as unanswered. `None`: no deadline.
        annotate_host (`str`, *optional*, defaults to `"127.0.0.1"`), annotate_port (`int`, *optional*, defaults to
        `7860`, 0 picks a free one), annotate_allowed_hosts (`list[str]`, *optional*): where the app listens (see
            `hfpref annotate`); the address is printed and written to `round-<k>/annotation/server.json`.
        push_to_hub (`bool`, *optional*, defaults to `False`):
            Push the preference dataset (every round's pairs, with a `round` column) to `hub_dataset_id` after each
            round's preferences stage.
        hub_dataset_id (`str`, *optional*), hub_private (`bool`, *optional*, defaults to `False`): the Hub dataset.
    """

    output_dir: str = DEFAULT_LOOP_OUTPUT_DIR
    rounds: int = 2
    judge: str = "oracle"
    size: str = DEFAULT_SIZE
    seed: int = 0
    captioner: str = DEFAULT_CAPTIONER
    pool_clips: int | None = None
    control: bool = False
    force: bool = False
    reward_warm_start: bool = False
    judge_reward_model: str | None = None
    llm_base_url: str | None = None
    llm_model: str | None = None
    llm_api_key: str | None = None
    llm_timeout: float = 30.0
    annotate_answers_per_item: int = 1
    annotate_deadline_minutes: float | None = None
    annotate_host: str = "127.0.0.1"
    annotate_port: int = 7860
    annotate_allowed_hosts: list[str] = field(default_factory=list)
    push_to_hub: bool = False
    hub_dataset_id: str | None = None
    hub_private: bool = False

    def __post_init__(self):
        if self.rounds < 1:
            raise ValueError(f"rounds={self.rounds} must be at least 1")
        if self.control and self.rounds < 2:
            raise ValueError("control repeats the last round without new pairs: it needs rounds >= 2")
        if self.judge not in LOOP_JUDGES:
            raise ValueError(f"judge={self.judge!r} is not one of {list(LOOP_JUDGES)}")
        if self.size not in SIZES:
            raise ValueError(f"size={self.size!r} is not one of {sorted(SIZES)}")
        if self.captioner not in CAPTIONERS:
            raise ValueError(f"captioner={self.captioner!r} is not one of {list(CAPTIONERS)}")
        if self.pool_clips is not None and self.pool_clips < 2:
            raise ValueError(f"pool_clips={self.pool_clips} must be at least 2 (pairs are split by clip)")
        if self.judge == "llm" and not (self.llm_base_url and self.llm_model):
            raise ValueError("judge 'llm' needs llm_base_url and llm_model")
        if self.annotate_answers_per_item < 1:
            raise ValueError(f"annotate_answers_per_item={self.annotate_answers_per_item} must be at least 1")
        if self.annotate_deadline_minutes is not None and self.annotate_deadline_minutes <= 0:
            raise ValueError(f"annotate_deadline_minutes={self.annotate_deadline_minutes} must be > 0")
        if self.push_to_hub and not self.hub_dataset_id:
            raise ValueError("push_to_hub needs hub_dataset_id (the Hub dataset the pairs grow in)")

    @property
    def pool_size(self) -> int:
        return self.pool_clips or SIZES[self.size].preference_clips

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> LoopConfig:
        """The config in the YAML file at `path`, with `overrides` (flags given on the command line) on top."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"loop config {path} does not exist")
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a mapping of loop settings, not {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{path}: unknown loop settings {unknown}; the settings are {sorted(known)}")
        return cls(**{**values, **overrides})
