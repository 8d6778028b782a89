"""The offline emotion-clue parser and the acoustic prompt, on hand-written captions."""

import pytest

from hfpref.prompts.clue_vocabulary import CLUE_VOCABULARY, NEGATORS
from hfpref.prompts.emotion_clues import (
    acoustic_prompt,
    caption_acoustic_prompt,
    clue_category,
    clues_by_category,
    extract_emotion_clues,
    teacher_prompt,
)


@pytest.mark.parametrize(
    "caption, clues",
    [
        (
            "A man speaks quickly and loudly in a high-pitched voice, sounding angry.",
            ["fast", "loud", "high-pitched", "angry"],
        ),
        ("Her voice is soft and trembling; she sounds afraid.", ["soft", "trembling", "fearful"]),
        (
            "The speaker talks slowly with a falling intonation and deep, gentle tone.",
            ["slow", "falling", "low-pitched", "gentle"],
        ),
        ("He is NOT happy, he is furious!", ["angry"]),  # case, negation, synonym
        ("She is neither loud nor fast, just calm.", ["calm"]),  # negation through "nor"
        ("Not a cheerful voice: sad and monotone.", ["sad", "flat"]),  # negation through an article
        ("A woman reads the weather forecast.", []),  # no clue words
        ("His voice rises at the end; a questioning, high pitch tone.", ["rising", "high-pitched"]),  # multi-word form
        ("It is a low volume recording of a sad man.", ["soft", "sad"]),  # "low volume" is volume, not pitch
        ("Angry, angrily, with anger.", ["angry"]),  # deduplicated
    ],
)
def test_clues_of_hand_written_captions(caption, clues):
    assert extract_emotion_clues(caption) == clues


def test_a_caption_series_pools_clues_in_order_of_first_mention():
    assert extract_emotion_clues(["She whispers sadly.", "A sad, quiet and slow voice."]) == ["soft", "sad", "slow"]
    with pytest.raises(TypeError, match="strings"):
        extract_emotion_clues(["ok", None])


def test_acoustic_prompt_template():
    assert acoustic_prompt(["sad", "slow", "soft", "falling"]) == "Feeling sad, slow, soft, and falling"
    assert caption_acoustic_prompt("He shouts angrily.") == "Feeling loud and angry"
    assert acoustic_prompt([]) == ""
    text = teacher_prompt("A man shouts angrily.", "Describe the speaker's emotion.")
    assert text == "Feeling loud and angry. A man shouts angrily. Describe the speaker's emotion."
    assert teacher_prompt("A man reads.", "Describe.") == "A man reads. Describe."  # no clues, no empty "Feeling."


def test_vocabulary_is_unambiguous_and_categorised():
    forms = [f for clues in CLUE_VOCABULARY.values() for clue, fs in clues.items() for f in (clue, *fs)]
    duplicated = {
        f for f in forms if forms.count(f) > 1 and f not in {c for cl in CLUE_VOCABULARY.values() for c in cl}
    }
    assert not duplicated
    assert not set(NEGATORS) & set(forms)
    assert clue_category()["high-pitched"] == "pitch" and clue_category()["slow"] == "rhythm"
    assert clues_by_category(["sad", "loud"]) == {"emotion": ["sad"], "volume": ["loud"]}
    with pytest.raises(ValueError, match="unknown clue"):
        clues_by_category(["purple"])
