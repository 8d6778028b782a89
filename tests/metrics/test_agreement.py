import math
import shutil

import pytest
from datasets import Dataset

from hfpref.data import load_fense
from hfpref.metrics import agreement_by_category, fense_candidate_scores, pad_references, pairwise_agreement


needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="the PTB tokenizer needs Java")


def test_pad_references_repeats_from_the_start():
    assert pad_references(["a", "b", "c"]) == ["a", "b", "c", "a"]
    assert pad_references(["a"]) == ["a", "a", "a", "a"]
    assert pad_references(["a", "b", "c", "d", "e"]) == ["a", "b", "c", "d", "e"]


def test_metric_tie_is_a_disagreement_and_human_ties_are_left_out():
    rates = agreement_by_category(
        [0.5, 0.9, 0.1, 0.7, 0.3], [0.5, 0.1, 0.2, 0.2, 0.9], [3, 4, -2, 0, 2], ["HC", "HI", "HM", "MM", "MM"]
    )
    assert rates["HC"] == 0.0 and rates["HI"] == 100.0 and rates["HM"] == 100.0 and rates["MM"] == 0.0
    assert rates["total"] == pytest.approx(50.0)  # 2 of 4 human-majority pairs; the human tie is not counted


def _toy_fense():
    return Dataset.from_dict(
        {
            "category": ["HC", "MM", "MM"],
            "caption_1": ["a dog barks", "a dog", "a bird"],
            "caption_2": ["a dog is barking", "a dog barks loudly", "a bird sings"],
            "preferred": [2, 1, 0],
            "vote_sum": [-2, 4, 0],
            # HC row: chosen = caption_2, whose references exclude itself.
            "chosen_references": [["a dog barks", "a puppy barks"], ["r1", "r2", "r3"], ["s1", "s2"]],
            "rejected_references": [["a dog is barking", "a puppy barks"], ["r1", "r2", "r3"], ["s1", "s2"]],
        }
    )


def test_fense_protocol_padding_leave_one_out_and_orientation():
    calls = []

    def scorer(candidates, references):
        calls.append((list(candidates), [list(r) for r in references]))
        return [float(len(refs[0])) for refs in references]  # a score that reveals which reference lists came in

    s1, s2 = fense_candidate_scores(_toy_fense(), scorer)
    # Four groups: HH side 1, HH side 2, MM side 1, MM side 2.
    assert len(calls) == 4
    hh_1, hh_2, mm_1, _ = calls
    assert hh_1 == (["a dog barks"], [["a dog is barking", "a puppy barks", "a dog is barking", "a puppy barks"]])
    assert hh_2[1] == [["a dog barks", "a puppy barks", "a dog barks", "a puppy barks"]]
    # MM: each candidate against each leave-one-out subset (3 for 3 references, 2 for 2), padded to 4.
    assert mm_1[0] == ["a dog"] * 3 + ["a bird"] * 2
    assert mm_1[1][:3] == [["r2", "r3", "r2", "r3"], ["r1", "r3", "r1", "r3"], ["r1", "r2", "r1", "r2"]]
    assert mm_1[1][3:] == [["s2"] * 4, ["s1"] * 4]
    assert s1[1] == pytest.approx((2 + 2 + 2) / 3) and s2.shape == (3,)


def test_pairwise_agreement_with_a_callable():
    by_length = lambda candidates, references: [len(c) for c in candidates]  # noqa: E731
    rates = pairwise_agreement(_toy_fense(), by_length)
    # HC: caption_2 (longer) preferred, vote -2 -> agree; MM row 2: caption_2 longer but caption_1 preferred.
    assert rates["HC"] == 100.0 and rates["MM"] == 0.0 and rates["total"] == 50.0
    assert math.isnan(rates["HI"])


@pytest.fixture(scope="module")
def fense_sets(fense_dir):
    # drop_ties=False: FENSE takes CIDEr's document frequencies over every judged pair, tied ones included.
    return {name: load_fense(fense_dir / f"{name}_eval.json", drop_ties=False) for name in ("audiocaps", "clotho")}


@needs_java
@pytest.mark.parametrize(
    "dataset, metric, total",
    [
        ("audiocaps", "bleu_4", 61.6),
        ("audiocaps", "cider_d", 71.0),
        ("clotho", "bleu_4", 60.5),
        ("clotho", "cider_d", 63.2),
    ],
)
def test_reproduces_fense_published_totals(fense_sets, dataset, metric, total):
    ds = fense_sets[dataset]
    assert sum(v != 0 for v in ds["vote_sum"]) == {"audiocaps": 1483, "clotho": 1555}[dataset]
    assert round(pairwise_agreement(ds, metric)["total"], 1) == total
