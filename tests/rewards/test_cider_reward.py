import shutil

import pytest

from hfpref.metrics import CiderD, MetricUnavailableError, tokenize_captions
from hfpref.rewards import get_cider_reward


CORPUS = [
    ["a dog barks", "a dog is barking loudly"],
    ["rain falls on a roof", "heavy rain"],
    ["a car passes by", "a car drives past"],
    ["birds sing in the morning"],
]


def test_cider_reward_has_trl_signature_and_uses_the_corpus_idf():
    reward = get_cider_reward(CORPUS, tokenizer="simple")
    assert reward.__name__ == "cider_d_reward"
    # A GRPO-style batch: one prompt, its references repeated for each sampled completion.
    completions = ["a dog barks", [{"role": "assistant", "content": "A dog is barking!"}], "rain"]
    references = [CORPUS[0]] * 3
    rewards = reward(completions, references=references, prompts=["p"] * 3, audio=[None] * 3)
    assert len(rewards) == 3 and rewards[0] > 0 and rewards[1] > 0 and rewards[2] == 0.0
    tokenized = [tokenize_captions(refs, "simple") for refs in CORPUS]
    expected = CiderD(tokenized).sentence_scores(["a dog barks", "a dog is barking"], [tokenized[0]] * 2)
    assert rewards[:2] == pytest.approx(expected)
    # The batch as corpus would give zero to every n-gram the repeated references share.
    assert CiderD().sentence_scores(["a dog barks"] * 3, [tokenized[0]] * 3) == [0.0] * 3


def test_cider_reward_accepts_a_single_reference_string():
    reward = get_cider_reward(CORPUS, tokenizer="simple")
    assert reward(["a car passes by"], references=["a car passes by"])[0] > 0
    with pytest.raises(ValueError, match="2 completions but 1 reference lists"):
        reward(["a", "b"], references=[["a"]])


def test_cider_reward_without_java_says_so(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    with pytest.raises(MetricUnavailableError, match="tokenizer='simple'"):
        get_cider_reward(CORPUS)


def test_cider_reward_by_hand_passes_n_and_sigma_to_the_scorer():
    import math

    # Corpus of 2 items: idf("dog") = log 2. "dog dog dog" against "dog": clipped unigram cosine 1/3, no higher-order
    # match, lengths 2 and 0 (in words - 1): 10 * 1/3 * exp(-4 / (2 sigma^2)) / n.
    corpus = [["dog"], ["cat"]]
    for kwargs, sigma, n in [({}, 6.0, 4), ({"sigma": 2.0}, 2.0, 4), ({"n": 2}, 6.0, 2)]:
        reward = get_cider_reward(corpus, tokenizer="whitespace", **kwargs)
        expected = 10 * (1 / 3) * math.exp(-4 / (2 * sigma**2)) / n
        assert reward(["dog dog dog"], references=[["dog"]]) == [pytest.approx(expected, rel=1e-9)], kwargs
