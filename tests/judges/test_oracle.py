"""The synthetic world's oracle: its grade of a caption, the judge, the TRL reward and the data it labels."""

import pytest

from hfpref.data.synthetic.audio_world import make_world
from hfpref.judges.base import JudgeError
from hfpref.judges.oracle import (
    OracleJudge,
    get_oracle_reward,
    make_oracle_feedback,
    make_oracle_preferences,
    oracle_details,
    oracle_prefers,
    oracle_score,
)


@pytest.fixture(scope="module")
def world():
    return make_world(12, seed=2, clip_seconds=1.0)


def test_oracle_penalises_mistakes_strictly():
    events = ["siren", "clicking", "bell"]
    exact = oracle_score("a siren wails, followed by rapid clicking, then a bell rings", events)
    omission = oracle_score("a siren wails, then a bell rings", events)
    hallucination = oracle_score(
        "a siren wails, followed by rapid clicking, then a bell rings and then rain falls", events
    )
    swap = oracle_score("rapid clicking, then a siren wails, then a bell rings", events)
    reversed_ = oracle_score("a bell rings, then rapid clicking, then a siren wails", events)
    assert exact == 1.0
    assert exact > omission and exact > hallucination and exact > swap > reversed_
    assert oracle_score("", events) == 0.0
    assert oracle_score("a dog barks while rain falls", events) == 0.0
    details = oracle_details("rain falls, then a siren wails", events)
    assert details["mentioned"] == ["rain", "siren"]
    assert details["hallucinated"] == ["rain"] and details["missed"] == ["clicking", "bell"]
    assert details["recall"] == pytest.approx(1 / 3) and details["precision"] == 0.5 and details["order"] == 1.0


def test_oracle_prefers():
    events = ["hum", "whistle"]
    good, bad = "a low hum, then someone whistles", "someone whistles, then a low hum"
    assert oracle_prefers(good, bad, events) == 1
    assert oracle_prefers(bad, good, events) == -1
    assert oracle_prefers(good, "mains humming before a shrill whistle", events) == 0


def test_oracle_judge_scores_against_the_events_it_is_given():
    events = ["siren", "clicking"]
    captions = ["a siren wails, followed by rapid clicking", "rapid clicking, then a siren wails", "a siren wails"]
    judge = OracleJudge()
    assert judge.score(captions, events=events) == [oracle_score(c, events) for c in captions]
    assert judge.score(captions, events=events, references=["ignored"], audio=object()) == judge.score(
        captions, events=events
    )
    assert judge.stats["scored_clips"] == 3
    with pytest.raises(JudgeError, match="pass events="):
        judge.score(captions)
    assert judge.stats["missing_events"] == 1
    with pytest.raises(ValueError, match="no candidates"):
        judge.score([], events=events)


def test_oracle_reward_is_the_oracle_score_of_each_completion():
    events = [["siren", "clicking"], ["bell"]]
    completions = ["rapid clicking, then a siren wails", [{"role": "assistant", "content": "a bell rings"}]]
    assert get_oracle_reward()(completions, events=events) == [oracle_score(completions[0], events[0]), 1.0]


def test_oracle_preferences_agree_with_the_oracle(world):
    pairs = make_oracle_preferences(world, seed=0, pairs_per_clip=4)
    assert 0 < len(pairs) <= 4 * len(world)
    for chosen, rejected, events in zip(pairs["chosen"], pairs["rejected"], pairs["events"]):
        assert oracle_score(chosen, events) > oracle_score(rejected, events)
    assert all("-vs-" in c for c in pairs["category"])
    assert pairs.features["audio"].decode is False
    assert make_oracle_preferences(world, seed=0)["chosen"] == pairs["chosen"]  # seeded


def test_oracle_feedback_is_balanced_and_labelled_by_the_oracle(world):
    feedback = make_oracle_feedback(world, seed=0)
    assert len(feedback) == 2 * len(world) and sum(feedback["label"]) == len(world)
