"""Clue-overlap scores and the AlignCap table metrics of emotion captions."""

import math

import pytest

from hfpref.metrics.emotion import clue_overlap, clue_precision, evaluate_emotion_captions


def test_clue_overlap_is_the_share_of_reference_clues_reproduced():
    references = ["A woman speaks slowly and softly, sounding sad.", "A sad, low-pitched woman."]
    # Reference clues: slow, soft, sad, low-pitched (4). The caption has sad, slow (2) and a wrong one (loud).
    assert clue_overlap("She sounds sad and talks slowly but loudly.", references) == pytest.approx(2 / 4)
    assert clue_precision("She sounds sad and talks slowly but loudly.", references) == pytest.approx(2 / 3)
    assert clue_overlap("A woman speaks.", references) == 0.0
    assert math.isnan(clue_overlap("sad", ["A woman speaks."]))
    assert math.isnan(clue_precision("A woman speaks.", references))


def test_evaluate_emotion_captions_adds_clue_scores_to_the_ngram_metrics():
    candidates = ["a woman speaks softly and sadly", "a man shouts happily"]
    references = [["a woman speaks softly, sounding sad"], ["a man shouts angrily", "an angry loud man"]]
    scores = evaluate_emotion_captions(
        candidates, references, metrics=["bleu_4", "rouge_l", "cider_d"], tokenizer="simple"
    )
    assert set(scores) == {"bleu_4", "rouge_l", "cider_d", "clue_overlap", "clue_precision", "skipped"}
    # clip 1: {soft, sad} all reproduced; clip 2: {loud, angry}, the caption has loud ("shouts") and a wrong happy.
    assert scores["clue_overlap"] == pytest.approx((1.0 + 0.5) / 2)
    assert scores["clue_precision"] == pytest.approx((1.0 + 0.5) / 2)
    assert 0 < scores["rouge_l"] < 1 and scores["cider_d"] > 0
    with pytest.raises(ValueError, match="2 candidates for 1"):
        evaluate_emotion_captions(candidates, references[:1], tokenizer="simple")
