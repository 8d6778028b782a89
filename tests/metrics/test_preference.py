import math

import pytest

from hfpref.metrics import category_counts, fleiss_kappa, weighted_deviation, win_rate


HUMAN, COUNTS = [47.97, 53.93], [707, 250]


@pytest.mark.parametrize(
    "metric_rates, expected",
    [([50.00, 64.85], 4.35), ([43.24, 85.64], 11.78), ([42.71, 47.57], 5.55), ([51.80, 59.14], 4.19)],
    ids=["S-BERT", "FENSE", "CLAPAT", "Reward"],
)
def test_weighted_deviation_reproduces_table_4(metric_rates, expected):
    assert round(weighted_deviation(metric_rates, HUMAN, COUNTS), 2) == expected


def test_weighted_deviation_by_hand_and_with_mappings():
    # (1 * |0.5 - 0.4| + 3 * |0.2 - 0.6|) / 4 = (0.1 + 1.2) / 4
    assert weighted_deviation([0.5, 0.2], [0.4, 0.6], [1, 3]) == pytest.approx(0.325)
    by_split = weighted_deviation({"NC": 0.5, "C": 0.2}, {"C": 0.6, "NC": 0.4}, {"NC": 1, "C": 3})
    assert by_split == pytest.approx(0.325)
    with pytest.raises(ValueError, match="splits differ"):
        weighted_deviation({"NC": 0.5}, {"C": 0.6}, {"NC": 1})
    with pytest.raises(ValueError, match="one rate per split"):
        weighted_deviation([0.5, 0.2], [0.4], [1, 3])


def test_win_rate_counts_wins_over_non_ties():
    assert win_rate([3, 1, 2, 5, 0], [1, 1, 4, 2, 0]) == pytest.approx(2 / 3)
    assert win_rate([1, -1, 0, 2, 0]) == pytest.approx(2 / 3)  # signed preferences
    with pytest.raises(ValueError, match="all 2 cases are ties"):
        win_rate([1.0, 1.05], [1.0, 1.0], tie_tolerance=0.1)
    with pytest.raises(ValueError, match="all 3 cases are ties"):
        win_rate([0, 0, 0])
    with pytest.raises(ValueError, match="2 scores for A but 1"):
        win_rate([1, 2], [1])


def test_fleiss_kappa_wikipedia_worked_example():
    table = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    # P_bar = 0.378, P_e = 0.213 on Wikipedia; kappa = 0.210
    assert round(fleiss_kappa(table), 3) == 0.210


def test_fleiss_kappa_extremes_and_label_input():
    assert fleiss_kappa(category_counts([["a", "a", "a"], ["b", "b", "b"]])) == pytest.approx(1.0)
    # Two raters always disagreeing on a balanced two-category task: P_bar = 0, P_e = 0.5, kappa = -1.
    assert fleiss_kappa([[1, 1], [1, 1]]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa([[2, 1], [1, 1]])
    with pytest.raises(ValueError, match="undefined"):
        fleiss_kappa([[3, 0], [3, 0]])
    assert not math.isnan(fleiss_kappa(category_counts([[1, 1, -1, 0], [1, 1, 1, 0]], categories=[-1, 0, 1])))
