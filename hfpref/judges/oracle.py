"""
The synthetic world's oracle as a judge: it knows each clip's true events and grades any caption written in the
world's vocabulary ([`~hfpref.data.synthetic.audio_world`]) against them, standing in for the human annotators of
"Aligning Audio Captions with Human Preferences" (https://huggingface.co/papers/2509.14659) in offline tests and the
quickstart.

Everything the oracle decides lives here:

- [`oracle_score`] / [`oracle_details`]: the grade of one caption, `0.5 * recall + 0.3 * precision + 0.2 * order`
  over the event kinds it names ([`ORACLE_WEIGHTS`]); [`oracle_prefers`]: which of two captions it prefers;
- [`OracleJudge`]: the [`~hfpref.judges.base.Judge`] interface. The true events are not a caption or audio, so they
  reach it through the `events=` keyword of `score` (a row's `events` column of
  [`~hfpref.data.synthetic.audio_world.make_world`]);
- [`get_oracle_reward`]: the oracle as a TRL reward function, reading the `events` column TRL passes as a keyword;
- [`make_oracle_preferences`] (pairwise) and [`make_oracle_feedback`] (binary), the oracle-labelled preference data
  of a synthetic world, and [`make_oracle_reward_data`], which a reward recipe's `synthetic_clips` source runs.

It is not in [`~hfpref.judges.registry`]: the judges there score AlignCap's speech-world candidates from their
references or audio, and the oracle needs the audio world's true events.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import datasets
import numpy as np

from ..data.completions import completion_text
from ..data.synthetic.audio_world import make_caption_variants, make_world, parse_events
from .base import Judge, JudgeError


# Weights of the oracle's score: naming what is there matters most, inventing what is
# not comes next, and getting the order right is worth the rest.
ORACLE_WEIGHTS = {"recall": 0.5, "precision": 0.3, "order": 0.2}


def oracle_details(caption: str, events: Sequence[str]) -> dict:
    """Grades a caption against the true events of a clip, component by component.

    Args:
        caption (`str`):
            Caption to grade, parsed with [`~hfpref.data.synthetic.audio_world.parse_events`].
        events (`Sequence[str]`):
            True event kinds of the clip, in temporal order.

    Returns:
        `dict` with keys:
            - `recall` (`float`): fraction of true events the caption mentions.
            - `precision` (`float`): fraction of mentioned events that are true (0 when none is mentioned).
            - `order` (`float`): fraction of correctly ordered pairs among the matched events; 1 with a
              single match, 0 with none.
            - `score` (`float`): `0.5 * recall + 0.3 * precision + 0.2 * order`, see `ORACLE_WEIGHTS`.
            - `mentioned`, `matched`, `hallucinated`, `missed` (`list[str]`): the event kinds behind them.
    """
    true_position = {name: i for i, name in enumerate(events)}
    mentioned = parse_events(caption)
    matched = [name for name in mentioned if name in true_position]
    recall = len(matched) / len(true_position) if true_position else 0.0
    precision = len(matched) / len(mentioned) if mentioned else 0.0
    if len(matched) >= 2:
        pairs = [(a, b) for i, a in enumerate(matched) for b in matched[i + 1 :]]
        order = sum(true_position[a] < true_position[b] for a, b in pairs) / len(pairs)
    else:
        order = float(len(matched))
    score = (
        ORACLE_WEIGHTS["recall"] * recall + ORACLE_WEIGHTS["precision"] * precision + ORACLE_WEIGHTS["order"] * order
    )
    return {
        "recall": recall,
        "precision": precision,
        "order": order,
        "score": score,
        "mentioned": mentioned,
        "matched": matched,
        "hallucinated": [name for name in mentioned if name not in true_position],
        "missed": [name for name in events if name not in mentioned],
    }


def oracle_score(caption: str, events: Sequence[str]) -> float:
    """Scores a caption in [0, 1] against the true events of a clip, standing in for a human judge.

    The score is `0.5 * recall + 0.3 * precision + 0.2 * order` over the event kinds the caption
    names (see [`oracle_details`]): a caption naming exactly the true events in their order scores
    1, an empty caption or one naming only absent events scores 0.

    Args:
        caption (`str`):
            Caption to grade.
        events (`Sequence[str]`):
            True event kinds of the clip, in temporal order.

    Returns:
        `float`: the score.

    Example:

    ```python
    >>> events = ["siren", "clicking"]
    >>> oracle_score("a siren wails, followed by rapid clicking", events)
    1.0
    >>> round(oracle_score("rapid clicking, then a siren wails", events), 3)  # wrong order
    0.8
    >>> round(oracle_score("a siren wails", events), 3)  # one event missed
    0.75
    >>> oracle_score("", events)
    0.0

    ```
    """
    return oracle_details(caption, events)["score"]


def oracle_prefers(caption_a: str, caption_b: str, events: Sequence[str], tol: float = 1e-9) -> int:
    """Which of two captions the oracle judge prefers.

    Args:
        caption_a (`str`):
            First caption.
        caption_b (`str`):
            Second caption.
        events (`Sequence[str]`):
            True event kinds of the clip, in temporal order.
        tol (`float`, *optional*, defaults to `1e-9`):
            Score differences within this are a tie.

    Returns:
        `int`: `1` if `caption_a` scores higher, `-1` if `caption_b` does, `0` for a tie.
    """
    diff = oracle_score(caption_a, events) - oracle_score(caption_b, events)
    return 0 if abs(diff) <= tol else (1 if diff > 0 else -1)


class OracleJudge(Judge):
    """
    The synthetic world's oracle as a judge: [`oracle_score`] of each candidate against the clip's true events.

    The events come with each call, `score(candidates, events=[...])`, from the clip's `events` column; a call without
    them raises [`~hfpref.judges.base.JudgeError`] and is counted in `stats["missing_events"]`. References and audio
    are accepted, as by every judge, and not read.

    Example:
    ```python
    >>> judge = OracleJudge()
    >>> judge.score(["a siren wails, followed by rapid clicking", "a siren wails"], events=["siren", "clicking"])
    [1.0, 0.75]

    ```
    """

    name = "oracle"

    def __init__(self):
        super().__init__()
        self._events: list[str] | None = None

    def score(
        self,
        candidates: Sequence[str],
        *,
        events: Sequence[str] | None = None,
        references: Sequence[str] | str | None = None,
        audio=None,
    ) -> list[float]:
        """
        Scores of `candidates` (captions of one clip) in [0, 1], higher is better.

        Args:
            candidates (`Sequence[str]`): captions of one clip.
            events (`Sequence[str]`): the clip's true event kinds, in temporal order.
            references, audio: accepted as by every [`~hfpref.judges.base.Judge`], not read.

        Raises:
            [`~hfpref.judges.base.JudgeError`]: when `events` is missing.
        """
        if events is None:
            self.stats["missing_events"] += 1
            raise JudgeError(
                "the oracle grades against the clip's true events: pass events=[...] (its `events` column)"
            )
        self._events = list(events)
        try:
            return super().score(candidates, references=references, audio=audio)
        finally:
            self._events = None

    def _score(self, candidates, references, audio):
        return [oracle_score(candidate, self._events) for candidate in candidates]


def get_oracle_reward() -> Callable[..., list[float]]:
    """
    The synthetic world's oracle as a TRL reward: [`oracle_score`] of each completion, in [0, 1].

    It knows each clip's true events, read from the `events` column TRL passes as a keyword argument, and stands in
    for human judges in offline tests and the quickstart (a reward model trained on human preferences takes its
    place on real data).

    Returns:
        `Callable`: `oracle_reward(completions, events, **kwargs) -> list[float]`.

    Example:
    ```python
    >>> oracle_reward = get_oracle_reward()
    >>> completions = ["a siren wails, then rapid clicking", [{"role": "assistant", "content": "a bell rings"}]]
    >>> oracle_reward(completions, events=[["siren", "clicking"], ["siren"]])
    [1.0, 0.0]

    ```
    """

    def oracle_reward(completions, events, **kwargs) -> list[float]:
        if len(events) != len(completions):
            raise ValueError(f"{len(events)} `events` rows for {len(completions)} completions")
        return [oracle_score(completion_text(c), e) for c, e in zip(completions, events)]

    return oracle_reward


def make_oracle_preferences(world: datasets.Dataset, *, seed: int = 0, pairs_per_clip: int = 4) -> datasets.Dataset:
    """Pairwise preference data on a synthetic world, judged by the oracle in place of human annotators.

    For each clip, candidate captions are the degraded variants of
    [`~hfpref.data.synthetic.audio_world.make_caption_variants`] plus the
    caption of a random other clip; pairs are drawn among the candidates and the oracle decides which
    is preferred (ties are dropped, as FENSE drops pairs whose votes sum to 0). Like FENSE's categories,
    `category` says what the pair compares: `"correct-vs-<mistake>"` or `"<mistake>-vs-<mistake>"`.

    Args:
        world (`datasets.Dataset`):
            Output of [`~hfpref.data.synthetic.audio_world.make_world`].
        seed (`int`, *optional*, defaults to `0`):
            Seed of the variants and the pairing.
        pairs_per_clip (`int`, *optional*, defaults to `4`):
            Most pairs drawn per clip (fewer when a clip has few candidates or ties).

    Returns:
        `datasets.Dataset` in the pairwise schema: `clip_id`, `audio`, `chosen`, `rejected`, `margin` (oracle
        score difference), `category`, `events`, `references`.

    Example:

    ```python
    >>> from hfpref.data.synthetic.audio_world import make_world
    >>> pairs = make_oracle_preferences(make_world(3, clip_seconds=1.0), seed=0)
    >>> all(oracle_score(c, e) > oracle_score(r, e) for c, r, e in zip(pairs["chosen"], pairs["rejected"], pairs["events"]))
    True

    ```
    """
    if pairs_per_clip < 1:
        raise ValueError(f"pairs_per_clip={pairs_per_clip} must be >= 1")
    if len(world) < 2:
        raise ValueError(f"make_oracle_preferences needs at least 2 clips (another clip's caption), got {len(world)}")
    rng = np.random.default_rng(seed)
    captions = list(world["caption"])
    rows: dict[str, list] = {k: [] for k in ("row", "chosen", "rejected", "margin", "category")}
    for i, events in enumerate(world["events"]):
        candidates = make_caption_variants(events, rng)
        other = int(rng.integers(len(world) - 1))
        candidates["other_clip"] = captions[other + (other >= i)]
        names = list(candidates)
        pairs = [(a, b) for x, a in enumerate(names) for b in names[x + 1 :]]
        for k in rng.permutation(len(pairs))[:pairs_per_clip]:
            a, b = pairs[k]
            score_a, score_b = oracle_score(candidates[a], events), oracle_score(candidates[b], events)
            if abs(score_a - score_b) < 1e-9:
                continue
            (win, lose), margin = ((a, b) if score_a > score_b else (b, a)), abs(score_a - score_b)
            rows["row"].append(i)
            rows["chosen"].append(candidates[win])
            rows["rejected"].append(candidates[lose])
            rows["margin"].append(margin)
            rows["category"].append(f"{win}-vs-{lose}")
    pairs_ds = world.select(rows.pop("row")).select_columns(["clip_id", "audio", "events", "references"])
    for name, values in rows.items():
        pairs_ds = pairs_ds.add_column(name, values)
    return pairs_ds


def make_oracle_feedback(world: datasets.Dataset, *, seed: int = 0) -> datasets.Dataset:
    """
    Binary feedback on a synthetic world: each clip with its true caption (label 1) and a wrong one (label 0).

    The wrong caption is a random degraded variant (hallucination, omission, swap, substitution); the oracle
    confirms the label, standing in for BATON's human annotators.

    Example:
    ```python
    >>> from hfpref.data.synthetic.audio_world import make_world
    >>> feedback = make_oracle_feedback(make_world(3, clip_seconds=1.0))
    >>> sorted(set(feedback["label"]))
    [0, 1]

    ```
    """
    rng = np.random.default_rng(seed)
    rows, captions, labels, categories = [], [], [], []
    for i, events in enumerate(world["events"]):
        variants = make_caption_variants(events, rng)
        wrong = sorted(k for k in variants if k != "correct")
        pick = wrong[int(rng.integers(len(wrong)))]
        for name, label in (("correct", 1), (pick, 0)):
            if (oracle_score(variants[name], events) == 1.0) != bool(label):
                raise AssertionError(f"oracle disagrees with variant {name!r} of clip {i}")
            rows.append(i)
            captions.append(variants[name])
            labels.append(label)
            categories.append(name)
    out = world.select(rows).select_columns(["clip_id", "audio"])
    return out.add_column("caption", captions).add_column("label", labels).add_column("category", categories)


def make_oracle_reward_data(n_clips: int, *, pairwise: bool, seed: int = 0) -> datasets.Dataset:
    """
    The reward data of a synthetic world of `n_clips` clips, labelled by the oracle: pairwise preferences
    ([`make_oracle_preferences`]) or binary feedback ([`make_oracle_feedback`]).

    A reward recipe's `synthetic_clips` source: the recipe passes it to
    [`~hfpref.data.reward_data.load_reward_splits`] as `synthetic_data`.

    Example:
    ```python
    >>> pairs = make_oracle_reward_data(3, pairwise=True)
    >>> {"chosen", "rejected", "category"} <= set(pairs.column_names)
    True

    ```
    """
    world = make_world(n_clips, seed=seed)
    return make_oracle_preferences(world, seed=seed) if pairwise else make_oracle_feedback(world, seed=seed)
