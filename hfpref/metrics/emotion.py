"""
Speech-emotion captioning metrics: the n-gram metrics AlignCap reports (BLEU-4, METEOR, ROUGE-L, CIDEr, from
[`~hfpref.metrics.captioning.evaluate_captions`]) and a clue-overlap score in the spirit of its AES_c.

AES_c ([Liang et al., 2024](https://huggingface.co/papers/2410.19134), section 4.2) asks GPT-3.5 how far the emotional
clues of a caption overlap those of the reference. Offline, [`clue_overlap`] measures it directly with the acoustic
prompt's parser ([`~hfpref.prompts.emotion_clues.extract_emotion_clues`]): the share of the reference clues (over
all references of the clip) that the caption reproduces. [`clue_precision`] is the other side, the share of the
caption's clues that the references support, so that listing every clue is not rewarded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..prompts.emotion_clues import extract_emotion_clues
from .captioning import _as_reference_lists, evaluate_captions


EMOTION_CAPTION_METRICS = ("bleu_4", "meteor", "rouge_l", "cider_d")


def clue_overlap(candidate: str, references: str | Sequence[str]) -> float:
    """
    Share of the references' emotional clues that `candidate` names; `nan` when the references name none.

    Example:
    ```python
    >>> clue_overlap("A man speaks quickly and sounds angry.", ["A man talks fast and loudly, sounding angry."])
    0.6666666666666666

    ```
    """
    expected = set(extract_emotion_clues(references))
    if not expected:
        return float("nan")
    return len(expected & set(extract_emotion_clues(candidate))) / len(expected)


def clue_precision(candidate: str, references: str | Sequence[str]) -> float:
    """
    Share of `candidate`'s emotional clues that the references name; `nan` when the candidate names none.

    Example:
    ```python
    >>> clue_precision("A man speaks quickly and sounds sad.", ["A man talks fast and loudly, sounding angry."])
    0.5

    ```
    """
    found = set(extract_emotion_clues(candidate))
    if not found:
        return float("nan")
    return len(found & set(extract_emotion_clues(references))) / len(found)


def evaluate_emotion_captions(
    candidates: Sequence[str],
    references: Sequence[Sequence[str]] | Sequence[str],
    *,
    metrics: Sequence[str] = EMOTION_CAPTION_METRICS,
    tokenizer: str = "ptb",
) -> dict:
    """
    AlignCap's table metrics of a set of emotion captions, plus `clue_overlap` (mean over clips whose references
    name clues) and `clue_precision` (mean over captions that name clues; 0 clues named counts as 0 here).

    Args:
        candidates (`Sequence[str]`): one caption per clip.
        references (`Sequence[Sequence[str]]`): each clip's reference captions.
        metrics (`Sequence[str]`, *optional*, defaults to `("bleu_4", "meteor", "rouge_l", "cider_d")`):
            metrics of [`~hfpref.metrics.captioning.evaluate_captions`].
        tokenizer (`str`, *optional*, defaults to `"ptb"`): its tokenizer (`"simple"` needs no Java).

    Returns:
        `dict`: the metrics, `clue_overlap`, `clue_precision`, and `skipped` (metrics that could not run, with why).

    Example:
    ```python
    >>> scores = evaluate_emotion_captions(
    ...     ["a woman speaks softly and sadly"], [["a woman speaks softly, sounding sad"]],
    ...     metrics=["rouge_l"], tokenizer="simple",
    ... )
    >>> round(scores["rouge_l"], 3), scores["clue_overlap"], scores["clue_precision"]
    (0.667, 1.0, 1.0)

    ```
    """
    candidates = list(candidates)
    references = _as_reference_lists(references)
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates for {len(references)} reference lists")
    scores = evaluate_captions(candidates, references, list(metrics), tokenizer=tokenizer)
    overlap = [clue_overlap(c, r) for c, r in zip(candidates, references)]
    precision = [clue_precision(c, r) for c, r in zip(candidates, references)]
    overlap = [o for o in overlap if not np.isnan(o)]
    scores["clue_overlap"] = float(np.mean(overlap)) if overlap else float("nan")
    scores["clue_precision"] = (
        float(np.mean([0.0 if np.isnan(p) else p for p in precision])) if precision else float("nan")
    )
    return scores
