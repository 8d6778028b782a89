"""
Judges score the candidate captions of one clip; [`~hfpref.judges.pairs.build_preference_pairs`] turns the scores
into (chosen, rejected) pairs, as AlignCap's PO-regularization does with GPT-3.5
([Liang et al., 2024](https://huggingface.co/papers/2410.19134), section 3.2).

Every judge has `score(candidates, *, references=None, audio=None) -> list[float]` (one clip, higher is better) and
a `stats` counter. A judge that cannot score a clip raises [`JudgeError`]; it never returns a made-up score.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..metrics.emotion import clue_overlap, clue_precision


class JudgeError(RuntimeError):
    """A judge could not score a clip (timeout, malformed answer, missing input); the message says which and why."""


class Judge:
    """Base class: subclasses implement `_score` and get input checks and the `stats` counter."""

    name = "judge"

    def __init__(self):
        self.stats: Counter = Counter()

    def _score(self, candidates: list[str], references: list[str] | None, audio: Any) -> list[float]:
        raise NotImplementedError

    def score(
        self, candidates: Sequence[str], *, references: Sequence[str] | str | None = None, audio=None
    ) -> list[float]:
        """
        Scores of `candidates` (captions of one clip), higher is better.

        Raises:
            [`JudgeError`]: when the clip cannot be scored; counted in `stats` under the reason.
        """
        candidates = list(candidates)
        if not candidates:
            raise ValueError("no candidates to score")
        if isinstance(references, str):
            references = [references]
        scores = self._score(candidates, None if references is None else list(references), audio)
        if len(scores) != len(candidates) or not all(np.isfinite(scores)):
            self.stats["invalid_scores"] += 1
            raise JudgeError(f"{self.name} returned {scores!r} for {len(candidates)} candidates")
        self.stats["scored_clips"] += 1
        return [float(s) for s in scores]


class ClueOverlapJudge(Judge):
    """
    The offline default: how well a candidate's emotional clues match the reference captions' (the acoustic-prompt
    parser on both sides). `mode="f1"` (default) is the harmonic mean of [`~hfpref.metrics.emotion.clue_overlap`]
    (recall) and [`~hfpref.metrics.emotion.clue_precision`], so wrong clues (factuality hallucinations) cost as much
    as missing ones; `mode="recall"` is the share of reference clues reproduced, as the clue-overlap metric.

    Args:
        mode (`str`, *optional*, defaults to `"f1"`): `"f1"` or `"recall"`.

    Example:
    ```python
    >>> judge = ClueOverlapJudge()
    >>> judge.score(["a man speaks fast and sounds angry", "a man speaks slowly, sounding sad"],
    ...             references=["a man talks quickly and loudly, sounding angry"])
    [0.8, 0.0]

    ```
    """

    name = "clue_overlap"
    MODES = ("f1", "recall")

    def __init__(self, mode: str = "f1"):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"mode={mode!r} is not one of {list(self.MODES)}")
        self.mode = mode

    def _score(self, candidates, references, audio):
        if not references:
            self.stats["missing_references"] += 1
            raise JudgeError("the clue-overlap judge needs the clip's reference captions")
        scores = []
        for candidate in candidates:
            recall = clue_overlap(candidate, references)
            if np.isnan(recall):
                self.stats["references_without_clues"] += 1
                raise JudgeError(f"the references name no emotional clue: {references!r}")
            precision = clue_precision(candidate, references)
            precision = 0.0 if np.isnan(precision) else precision
            if self.mode == "recall":
                scores.append(recall)
            else:
                scores.append(0.0 if recall + precision == 0 else 2 * recall * precision / (recall + precision))
        return scores


class RewardModelJudge(Judge):
    """
    A reward callable as judge, e.g. the CLAP reward model:
    `RewardModelJudge(get_reward_model_reward(reward_model, embedder))` (see [`~hfpref.rewards.functions`]). The
    clip's audio (and references) are passed to the reward as keyword arguments, repeated per candidate.

    Args:
        reward_func (`Callable`): `f(completions, audio=..., references=...) -> list[float]`.
    """

    name = "reward_model"

    def __init__(self, reward_func: Callable[..., list[float]]):
        super().__init__()
        self.reward_func = reward_func
        self.name = getattr(reward_func, "__name__", "reward_model")

    def _score(self, candidates, references, audio):
        if audio is None:
            self.stats["missing_audio"] += 1
            raise JudgeError(f"{self.name} judges audio: pass the clip's audio")
        kwargs = {"audio": [audio] * len(candidates)}
        if references is not None:
            kwargs["references"] = [references] * len(candidates)
        return list(self.reward_func(candidates, **kwargs))
