"""Statistics over pairwise preferences: win rate, weighted deviation from human win rates, Fleiss' kappa.

The win rate and the weighted deviation are those of the RLHF audio-captioning paper (Table 4); Fleiss' kappa is
the inter-annotator agreement it reports for its human study.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def win_rate(scores_a, scores_b=None, *, tie_tolerance: float = 0.0) -> float:
    r"""
    Share of the non-tie cases that system A wins: `wins_a / (wins_a + wins_b)`, in [0, 1] (x 100 for the paper's %).

    A case is a tie when `|score_a - score_b| <= tie_tolerance`; ties are left out of the denominator, as in the
    RLHF audio-captioning paper ("the win rate is the percentage of RLHF wins among non-tie cases").

    Args:
        scores_a (`Sequence[float]`):
            A's score on each case; or, with `scores_b=None`, one signed preference per case (`> 0`: A wins,
            `< 0`: B wins, `0`: tie), e.g. a vote sum.
        scores_b (`Sequence[float]`, *optional*):
            B's score on the same cases.
        tie_tolerance (`float`, *optional*, defaults to `0.0`):
            Largest score difference that still counts as a tie.

    Returns:
        `float`: the win rate of A.

    Raises:
        `ValueError`: when every case is a tie (the win rate over non-tie cases is undefined; a NaN would slip
        silently into a table), or when the inputs are empty or of different lengths.

    Example:
    ```python
    >>> win_rate([0.9, 0.2, 0.5, 0.7], [0.1, 0.8, 0.5, 0.3])  # 2 wins, 1 loss, 1 tie
    0.6666666666666666
    >>> win_rate([1, -1, 0, 1])  # signed preferences
    0.6666666666666666

    ```
    """
    a = np.asarray(scores_a, dtype=float)
    difference = a if scores_b is None else a - np.asarray(scores_b, dtype=float)
    if scores_b is not None and len(scores_a) != len(scores_b):
        raise ValueError(f"win_rate: {len(scores_a)} scores for A but {len(scores_b)} for B.")
    if difference.size == 0:
        raise ValueError("win_rate: no cases.")
    if np.isnan(difference).any():
        raise ValueError("win_rate: the scores contain NaN.")
    wins = int((difference > tie_tolerance).sum())
    losses = int((difference < -tie_tolerance).sum())
    if wins + losses == 0:
        raise ValueError(
            f"win_rate: all {difference.size} cases are ties; the win rate over non-tie cases is undefined."
        )
    return wins / (wins + losses)


def weighted_deviation(metric_rates, human_rates, counts) -> float:
    r"""
    Weighted deviation of a metric's win rates from the human ones across splits:
    `sum_k n_k |m_k - h_k| / sum_k n_k` (the RLHF audio-captioning paper, Table 4; lower is closer to humans).

    Args:
        metric_rates (`Sequence[float]` or `Mapping[str, float]`):
            The metric's win rate on each split.
        human_rates (`Sequence[float]` or `Mapping[str, float]`):
            The human win rate on each split, in the same unit.
        counts (`Sequence[int]` or `Mapping[str, int]`):
            Number of cases in each split (the weights). With mappings, all three need the same keys.

    Returns:
        `float`: the deviation, in the unit of the rates.

    Example:
    ```python
    >>> round(weighted_deviation([50.00, 64.85], [47.97, 53.93], [707, 250]), 2)  # S-BERT, Table 4
    4.35

    ```
    """
    if isinstance(metric_rates, Mapping):
        keys = list(metric_rates)
        if not isinstance(human_rates, Mapping) or not isinstance(counts, Mapping):
            raise ValueError("weighted_deviation: pass all three as mappings, or all three as sequences.")
        if set(human_rates) != set(keys) or set(counts) != set(keys):
            raise ValueError(
                f"weighted_deviation: splits differ: metric {sorted(keys)}, human {sorted(human_rates)}, "
                f"counts {sorted(counts)}."
            )
        metric_rates, human_rates, counts = (
            [metric_rates[k] for k in keys],
            [human_rates[k] for k in keys],
            [counts[k] for k in keys],
        )
    m, h, n = (np.asarray(x, dtype=float) for x in (metric_rates, human_rates, counts))
    if not m.shape == h.shape == n.shape or m.ndim != 1 or m.size == 0:
        raise ValueError(f"weighted_deviation: need one rate per split, got shapes {m.shape}, {h.shape}, {n.shape}.")
    if (n < 0).any() or n.sum() <= 0:
        raise ValueError(f"weighted_deviation: counts {n.tolist()} must be non-negative with a positive sum.")
    return float((n * np.abs(m - h)).sum() / n.sum())


def category_counts(labels: Sequence[Sequence], categories: Sequence | None = None) -> np.ndarray:
    """
    Turn per-rater labels (one row per subject, one label per rater) into the subjects x categories count table that
    [`fleiss_kappa`] reads.

    Example:
    ```python
    >>> category_counts([[1, 1, -1, 0], [1, 1, 1, 1]], categories=[-1, 0, 1])
    array([[1, 1, 2],
           [0, 0, 4]])

    ```
    """
    if categories is None:
        categories = sorted({label for row in labels for label in row})
    index = {category: i for i, category in enumerate(categories)}
    table = np.zeros((len(labels), len(categories)), dtype=int)
    for row, subject in enumerate(labels):
        for label in subject:
            if label not in index:
                raise ValueError(f"category_counts: label {label!r} is not one of {list(categories)}.")
            table[row, index[label]] += 1
    return table


def fleiss_kappa(ratings) -> float:
    r"""
    Fleiss' kappa, the chance-corrected agreement of a fixed number of raters assigning subjects to categories
    (Fleiss, 1971): `(P_bar - P_e) / (1 - P_e)`.

    Args:
        ratings (array-like of shape `(n_subjects, n_categories)`):
            `ratings[i, j]` = how many raters put subject i in category j; every subject needs the same number of
            raters (at least 2). Build it from raw labels with [`category_counts`].

    Returns:
        `float`: kappa, 1 for perfect agreement, about 0 for chance level; raises a `ValueError` when undefined.

    Example:
    ```python
    >>> table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    ...          [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    >>> round(fleiss_kappa(table), 3)  # the worked example of Wikipedia's "Fleiss' kappa" article
    0.21

    ```
    """
    table = np.asarray(ratings, dtype=float)
    if table.ndim != 2 or table.shape[0] == 0 or table.shape[1] < 2:
        raise ValueError(f"fleiss_kappa: expected a (subjects, categories >= 2) table, got shape {table.shape}.")
    if (table < 0).any():
        raise ValueError("fleiss_kappa: counts must be non-negative.")
    raters = table.sum(axis=1)
    if not np.all(raters == raters[0]) or raters[0] < 2:
        raise ValueError(
            f"fleiss_kappa: every subject needs the same number (>= 2) of raters, got {sorted(set(raters))}."
        )
    n = raters[0]
    p_category = table.sum(axis=0) / table.sum()
    p_subject = ((table * (table - 1)).sum(axis=1)) / (n * (n - 1))
    p_bar, p_expected = p_subject.mean(), (p_category**2).sum()
    if p_expected == 1:
        raise ValueError("fleiss_kappa: all ratings fall in one category; kappa is undefined.")
    return float((p_bar - p_expected) / (1 - p_expected))
