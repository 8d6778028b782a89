"""Agreement of caption metrics with human pairwise judgments, under the FENSE protocol.

Zhou et al., "Can Audio Captions Be Evaluated with Image Caption Metrics?" (https://huggingface.co/papers/2110.04684)
judge a metric by how often it prefers the caption that the majority of four annotators preferred. This module
follows their experiment code (repository `blmoistawinde/fense`, branch `experiment-code`, `experiment/main.py` and
`experiment/dataloader.py`) step by step, which reproduces their published totals on the released data to 0.1:
BLEU-4 61.6 / 60.5 and CIDEr 71.0 / 63.2 (AudioCaps-Eval / Clotho-Eval).

1. References: a judged human caption is removed from its own reference list (every copy: HC, each caption without
   itself; HI and HM, both captions without caption_1; MM, all 5), as [`~hfpref.data.load_fense`] gives them.
2. Lists shorter than 4 (a removed caption that appeared twice) are padded back to 4 by repeating their own first
   captions (`expand_refs`: `[r0, r1, r2] -> [r0, r1, r2, r0]`).
3. MM pairs are scored 5 times, each time against 4 of the 5 references (one left out in turn), and the 5 sentence
   scores are averaged, so that human and machine candidates both meet 4 references.
4. Sentence scores come from one corpus call per group: the human-candidate pairs (HC, HI, HM) and the MM pairs are
   scored separately, and so are the two sides (every caption_1, every caption_2). This matters for CIDEr, whose
   document frequencies come from the references of the call. FENSE's "CIDEr" is the COCO toolkit's, which is
   CIDEr-D (clipping, length penalty, x 10); every judged pair counts in the corpus, **including pairs the annotators
   tied on**, although those are left out of the accuracy. Load the data with `load_fense(path, drop_ties=False)`
   for the published CIDEr numbers: without the tied pairs CIDEr-D gives 71.1 / 63.1.
5. Accuracy: over the pairs with a non-zero vote sum, the metric agrees when `(s_1 - s_2) * vote_sum > 0`, so a
   metric tie counts as a disagreement. BLEU is the COCO toolkit's sentence BLEU after its PTB tokenizer.

Variants checked against the published totals (AudioCaps / Clotho): plain CIDEr (no clipping or length penalty)
71.1 / 63.1; CIDEr-D without the padding of step 2, 70.9 / 63.2; without the leave-one-out of step 3, BLEU-4
61.6 / 60.7 and CIDEr-D 71.4 / 63.5; one corpus for all pairs and sides, CIDEr-D 71.5 / 63.0. Only the protocol
above gives all four numbers. The same protocol gives METEOR 71.7 / 65.4 (published 71.7 / 65.4) and ROUGE-L
64.9 / 60.6 (published 64.9 / 60.5).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..data.fense import FENSE_CATEGORIES
from .captioning import evaluate_sentences
from .tokenization import MetricUnavailableError


FENSE_REFERENCE_COUNT = 4
# Metrics whose sentence score depends on the whole scored set (CIDEr-D's document frequencies).
CORPUS_DEPENDENT_METRICS = ("cider_d",)

SentenceScorer = Callable[[list[str], list[list[str]]], Sequence[float]]


def pad_references(references: Sequence[str], min_count: int = FENSE_REFERENCE_COUNT) -> list[str]:
    """
    Pad a reference list to `min_count` captions by repeating its own captions from the start, as FENSE does.

    Example:
    ```python
    >>> pad_references(["a", "b", "c"])
    ['a', 'b', 'c', 'a']

    ```
    """
    padded = list(references)
    if not padded:
        raise ValueError("pad_references: cannot pad an empty reference list.")
    i = 0
    while len(padded) < min_count:
        padded.append(padded[i])
        i += 1
    return padded


def _score_group(
    metric: str | SentenceScorer, candidates: list[str], references: list[list[str]], **metric_kwargs
) -> np.ndarray:
    if callable(metric):
        scores = metric(candidates, references)
    else:
        result = evaluate_sentences(candidates, references, [metric], **metric_kwargs)
        if metric in result["skipped"]:
            raise MetricUnavailableError(f"{metric}: {result['skipped'][metric]}")
        scores = result[metric]
    scores = np.asarray(scores, dtype=float)
    if scores.shape != (len(candidates),):
        raise ValueError(f"the metric returned {scores.shape} scores for {len(candidates)} candidates.")
    return scores


def fense_candidate_scores(
    ds,
    metric: str | SentenceScorer,
    *,
    min_references: int = FENSE_REFERENCE_COUNT,
    mm_leave_one_out: bool = True,
    **metric_kwargs,
) -> tuple[np.ndarray, np.ndarray]:
    r"""
    Sentence-level scores of `caption_1` and `caption_2` of every FENSE pair, following the FENSE protocol (see the
    module docstring).

    Args:
        ds (`datasets.Dataset`):
            Output of [`~hfpref.data.load_fense`] (best with `drop_ties=False`, see the module docstring).
        metric (`str` or `Callable`):
            A sentence-level metric name (`bleu_1` ... `bleu_4`, `meteor`, `rouge_l`, `cider_d`, `sbert_sim`), or a
            scorer `f(candidates: list[str], references: list[list[str]]) -> list[float]` on untokenized captions.
        min_references (`int`, *optional*, defaults to `4`):
            Pad shorter reference lists to this length ([`pad_references`]); `0` turns padding off.
        mm_leave_one_out (`bool`, *optional*, defaults to `True`):
            Score MM candidates against each leave-one-out subset of their references and average.
        **metric_kwargs:
            Passed to [`evaluate_sentences`] (`tokenizer`, `sbert_model`).

    Returns:
        `tuple[np.ndarray, np.ndarray]`: the scores of `caption_1` and of `caption_2`, one per row of `ds`.
    """
    categories = list(ds["category"])
    caption_1, caption_2, preferred = list(ds["caption_1"]), list(ds["caption_2"]), list(ds["preferred"])
    chosen_refs, rejected_refs = list(ds["chosen_references"]), list(ds["rejected_references"])
    # Back from chosen/rejected to the judged orientation (kept ties have chosen = caption_1).
    refs_1 = [r if p != 2 else q for r, q, p in zip(chosen_refs, rejected_refs, preferred)]
    refs_2 = [q if p != 2 else r for r, q, p in zip(chosen_refs, rejected_refs, preferred)]
    # Groups in FENSE's order: (human-candidate pairs, MM pairs) x (caption_1, caption_2).
    groups = []
    for is_mm in (False, True):
        rows = [i for i, c in enumerate(categories) if (c == "MM") == is_mm]
        for side, (captions, refs) in enumerate(((caption_1, refs_1), (caption_2, refs_2))):
            candidates, references, owner = [], [], []
            for i in rows:
                subsets = [refs[i][:k] + refs[i][k + 1 :] for k in range(len(refs[i]))]
                for subset in subsets if is_mm and mm_leave_one_out and len(refs[i]) > 1 else [refs[i]]:
                    candidates.append(captions[i])
                    references.append(pad_references(subset, min_references))
                    owner.append(i)
            if candidates:
                groups.append((side, candidates, references, owner))

    if isinstance(metric, str) and metric not in CORPUS_DEPENDENT_METRICS:
        # Sentence scores that do not depend on the other items: one call (one METEOR JVM, one SBERT pass).
        flat = _score_group(
            metric, [c for g in groups for c in g[1]], [r for g in groups for r in g[2]], **metric_kwargs
        )
        bounds = np.cumsum([0] + [len(g[1]) for g in groups])
        group_scores = [flat[start:end] for start, end in zip(bounds[:-1], bounds[1:])]
    else:
        group_scores = [_score_group(metric, g[1], g[2], **metric_kwargs) for g in groups]

    sums, counts = np.zeros((2, len(ds))), np.zeros((2, len(ds)))
    for (side, _, _, owner), scores in zip(groups, group_scores):
        np.add.at(sums[side], owner, scores)
        np.add.at(counts[side], owner, 1)
    scores_1, scores_2 = sums / np.maximum(counts, 1)
    return scores_1, scores_2


def agreement_by_category(scores_1, scores_2, vote_sums, categories) -> dict[str, float]:
    r"""
    Percentage of human-majority pairs on which a metric prefers the caption the annotators preferred, per FENSE
    category and in total. Pairs with a zero vote sum are left out; a metric tie counts as a disagreement.

    Args:
        scores_1 (`Sequence[float]`): the metric's score of `caption_1` of each pair.
        scores_2 (`Sequence[float]`): the metric's score of `caption_2`.
        vote_sums (`Sequence[int]`): the signed human vote sum (`> 0`: caption_1 preferred).
        categories (`Sequence[str]`): `HC`, `HI`, `HM` or `MM` for each pair.

    Returns:
        `dict[str, float]`: `{"HC": .., "HI": .., "HM": .., "MM": .., "total": ..}` in percent (NaN for a category
        without human-majority pairs).

    Example:
    ```python
    >>> agreement_by_category([0.9, 0.5, 0.2, 0.4], [0.1, 0.5, 0.3, 0.1], [4, 2, -2, 0], ["HC", "HC", "MM", "MM"])
    {'HC': 50.0, 'HI': nan, 'HM': nan, 'MM': 100.0, 'total': 66.66666666666667}

    ```
    """
    difference = np.asarray(scores_1, dtype=float) - np.asarray(scores_2, dtype=float)
    votes = np.asarray(vote_sums, dtype=float)
    categories = np.asarray(categories)
    if not difference.shape == votes.shape == categories.shape:
        raise ValueError(f"shapes differ: {difference.shape}, {votes.shape}, {categories.shape}")
    agree, counted = difference * votes > 0, votes != 0
    result = {}
    for category in (*FENSE_CATEGORIES, "total"):
        mask = counted if category == "total" else counted & (categories == category)
        result[category] = float(100.0 * agree[mask].sum() / mask.sum()) if mask.any() else float("nan")
    return result


def pairwise_agreement(
    ds,
    metric: str | SentenceScorer,
    *,
    min_references: int = FENSE_REFERENCE_COUNT,
    mm_leave_one_out: bool = True,
    **metric_kwargs,
) -> dict[str, float]:
    r"""
    Agreement (%) of a caption metric with the FENSE human pairwise judgments, per category and in total.

    Each candidate is scored at sentence level against its own reference list (`chosen_references` /
    `rejected_references`) with FENSE's padding and grouping ([`fense_candidate_scores`]); the metric prefers the
    higher score, and a metric tie counts as a disagreement ([`agreement_by_category`]).

    Args:
        ds (`datasets.Dataset`):
            Output of [`~hfpref.data.load_fense`]. Load it with `drop_ties=False` to reproduce the published CIDEr
            numbers: FENSE takes CIDEr's document frequencies over every judged pair, tied ones included (they are
            left out of the percentages either way).
        metric (`str` or `Callable`):
            A sentence-level metric name (`bleu_1` ... `bleu_4`, `meteor`, `rouge_l`, `cider_d`, `sbert_sim`) or a
            scorer `f(candidates, references) -> list[float]`.
        min_references (`int`, *optional*, defaults to `4`):
            See [`fense_candidate_scores`].
        mm_leave_one_out (`bool`, *optional*, defaults to `True`):
            See [`fense_candidate_scores`].
        **metric_kwargs:
            Passed to [`evaluate_sentences`] (`tokenizer`, `sbert_model`).

    Returns:
        `dict[str, float]`: `{"HC", "HI", "HM", "MM", "total"}` -> percent.

    Raises:
        [`MetricUnavailableError`]: when the metric cannot run here (e.g. no Java for the PTB tokenizer).

    Example:
    ```python
    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({
    ...     "category": ["MM"], "caption_1": ["a dog barks"], "caption_2": ["a car passes"], "preferred": [1],
    ...     "vote_sum": [4], "chosen_references": [["a dog barks", "a dog is barking"]],
    ...     "rejected_references": [["a dog barks", "a dog is barking"]],
    ... })
    >>> pairwise_agreement(ds, "bleu_1", tokenizer="simple")["MM"]
    100.0

    ```
    """
    scores_1, scores_2 = fense_candidate_scores(
        ds, metric, min_references=min_references, mm_leave_one_out=mm_leave_one_out, **metric_kwargs
    )
    return agreement_by_category(scores_1, scores_2, ds["vote_sum"], ds["category"])
