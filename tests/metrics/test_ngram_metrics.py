"""
CIDEr-D and BLEU on toys small enough to compute by hand: every expected value below is written out from the formulas
(Vedantam et al. for CIDEr-D as the COCO toolkit has it; Papineni et al. with the COCO toolkit's "closest" reference
length for BLEU), not taken from the code under test or from pycocoevalcap.
"""

import math

import pytest

from hfpref.metrics import CiderD, evaluate_captions, evaluate_sentences
from hfpref.metrics.cider import ngram_counts


LOG2 = math.log(2)


def _penalty(length_difference, sigma=6.0):
    """CIDEr-D's gaussian length penalty, exp(-(l_c - l_r)^2 / (2 sigma^2))."""
    return math.exp(-(length_difference**2) / (2 * sigma**2))


def test_ngram_counts_are_the_one_to_four_grams():
    counts = ngram_counts("a b a b c")
    assert counts[("a",)] == 2 and counts[("a", "b")] == 2 and counts[("a", "b", "a")] == 1
    assert counts[("a", "b", "a", "b")] == 1 and counts[("b", "a", "b", "c")] == 1
    assert sum(counts.values()) == 5 + 4 + 3 + 2  # no 5-grams


def test_cider_d_clips_a_candidate_that_repeats_a_reference_word():
    # Corpus of N = 2 items, so idf("dog") = log 2 - log 1 = log 2; "dog dog dog" has tf 3, the reference "dog" tf 1.
    # Unigram order: clipped numerator min(3 L, L) * L = L^2 over norms 3L * L -> 1/3 (unclipped it would be 1).
    # The reference has no bigram or trigram, so those orders add 0; the lengths (in bigrams) are 2 and 0.
    # CIDEr-D = 10 * (1/3 * exp(-4 / 72)) / 4 orders / 1 reference.
    scorer = CiderD([["dog"], ["cat"]])
    repeated = scorer.sentence_scores(["dog dog dog"], [["dog"]])[0]
    assert repeated == pytest.approx(10 * (1 / 3) * _penalty(2) / 4, rel=1e-9)
    assert repeated < 1.0  # unclipped it would be 10 * exp(-4 / 72) / 4 = 2.36
    # The exact copy: cosine 1 at order 1, no length penalty.
    assert scorer.sentence_scores(["dog"], [["dog"]]) == [pytest.approx(10 / 4, rel=1e-9)]
    # The same toy with idf from the scored references themselves (two items, the same document frequencies).
    batch = CiderD().sentence_scores(["dog dog dog", "cat"], [["dog"], ["cat"]])
    assert batch == pytest.approx([10 * (1 / 3) * _penalty(2) / 4, 10 / 4], rel=1e-9)


def test_cider_d_by_hand_with_idf_length_penalty_and_two_references():
    # N = 4 items: idf = log 4 - log df. "a" is in items 0 and 1 (df 2): idf L = log 2; every other n-gram of item 0
    # is in item 0 only: idf 2L. Document frequency counts items, not references: item 0 holds "a" twice.
    corpus = [["a dog barks at night", "a dog"], ["a cat"], ["rain falls"], ["birds sing"]]
    candidate = "a dog barks at night"
    # Reference 1 is the candidate: cosine 1 at each of the 4 orders, same length -> similarity 4.
    similarity_1 = 4.0
    # Reference 2, "a dog": unigram vectors c = (L, 2L, 2L, 2L, 2L), r = (L, 2L): c.r = 5 L^2, |c| = sqrt(17) L,
    # |r| = sqrt(5) L -> sqrt(5/17). Bigrams: four of weight 2L vs "a dog" (2L): 4 L^2 / (4L * 2L) = 1/2. No trigram or
    # 4-gram in the reference: 0. Lengths 4 and 1 bigrams: penalty exp(-9 / 72).
    similarity_2 = (math.sqrt(5 / 17) + 1 / 2) * _penalty(3)
    expected = 10 * (similarity_1 + similarity_2) / 4 / 2  # x10, mean over the 4 orders and the 2 references
    score = CiderD(corpus).sentence_scores([candidate], [corpus[0]])[0]
    assert score == pytest.approx(expected, rel=1e-9)
    # Each reference on its own: the per-reference terms.
    one_by_one = CiderD(corpus).sentence_scores([candidate, candidate], [[corpus[0][0]], [corpus[0][1]]])
    assert one_by_one == pytest.approx([10 * similarity_1 / 4, 10 * similarity_2 / 4], rel=1e-9)


def test_cider_d_sigma_and_order_are_parameters():
    corpus = [["dog"], ["cat"]]
    # sigma = 2: exp(-4 / 8). n = 1: the unigram cosine alone, over 1 order; the length penalty still applies (the
    # lengths are words - 1, as the COCO code's bigram counts give them for n >= 2).
    assert CiderD(corpus, sigma=2.0).sentence_scores(["dog dog dog"], [["dog"]])[0] == pytest.approx(
        10 * (1 / 3) * _penalty(2, sigma=2.0) / 4, rel=1e-9
    )
    assert CiderD(corpus, n=1).sentence_scores(["dog dog dog"], [["dog"]])[0] == pytest.approx(
        10 * (1 / 3) * _penalty(2) / 1, rel=1e-9
    )


def test_cider_d_through_evaluate_sentences_uses_the_given_scorer():
    scorer = CiderD([["dog"], ["cat"]])
    with_corpus = evaluate_sentences(
        ["dog dog dog"], [["dog"]], ["cider_d"], tokenizer="whitespace", cider_scorer=scorer
    )
    assert with_corpus["cider_d"] == [pytest.approx(10 * (1 / 3) * _penalty(2) / 4, rel=1e-9)]
    # Without it the single item is its own corpus: idf log 1 - log 1 = 0 everywhere.
    assert evaluate_sentences(["dog dog dog"], [["dog"]], ["cider_d"], tokenizer="whitespace")["cider_d"] == [0.0]


# BLEU: the candidate has 5 words; its references have 2 and 6. The closest reference length is 6 (|6 - 5| = 1), the
# shortest 2 and the average 4, so only "closest" gives a brevity penalty: exp(1 - 6/5).
CANDIDATE = "a dog barks at night"
REFERENCES = ["a dog", "a dog barks at the night"]
# Clipped precisions against the reference n-grams: 5/5 unigrams; bigrams a-dog, dog-barks, barks-at of 4 ("at night"
# is in no reference); trigrams a-dog-barks, dog-barks-at of 3; 4-grams a-dog-barks-at of 2.
PRECISIONS = [5 / 5, 3 / 4, 2 / 3, 1 / 2]


def _bleu(precisions, candidate_length, reference_length):
    """BLEU-1..4: geometric means of the first n precisions times the brevity penalty (1 when the candidate is longer)."""
    penalty = 1.0 if candidate_length > reference_length else math.exp(1 - reference_length / candidate_length)
    return [math.prod(precisions[:n]) ** (1 / n) * penalty for n in range(1, 5)]


def test_sentence_bleu_brevity_penalty_uses_the_closest_reference_length():
    expected = _bleu(PRECISIONS, 5, 6)
    assert expected[0] == pytest.approx(math.exp(-0.2))
    scores = evaluate_sentences(
        [CANDIDATE], [REFERENCES], ["bleu_1", "bleu_2", "bleu_3", "bleu_4"], tokenizer="whitespace"
    )
    for n in range(4):
        assert scores[f"bleu_{n + 1}"] == [pytest.approx(expected[n], rel=1e-6)]


def test_corpus_bleu_pools_counts_and_closest_lengths():
    # Second item: "rain falls" (2 words) vs references of 3 and 6 words: closest = shortest = 3. Pooled over the two
    # items: unigrams 7/7, bigrams (3 + 1)/(4 + 1), trigrams 2/3, 4-grams 1/2; lengths 7 vs closest 6 + 3 = 9 (the
    # shortest, 2 + 3 = 5, would give no penalty at all).
    candidates = [CANDIDATE, "rain falls"]
    references = [REFERENCES, ["heavy rain falls", "rain falls on a tin roof"]]
    expected = _bleu([1.0, 4 / 5, 2 / 3, 1 / 2], 7, 9)
    scores = evaluate_captions(
        candidates, references, ["bleu_1", "bleu_2", "bleu_3", "bleu_4"], tokenizer="whitespace"
    )
    for n in range(4):
        assert scores[f"bleu_{n + 1}"] == pytest.approx(expected[n], rel=1e-6)
    # Sentence BLEU-2 of the second item: precisions 2/2 and 1/1, penalty exp(1 - 3/2).
    sentences = evaluate_sentences(candidates, references, ["bleu_2"], tokenizer="whitespace")
    assert sentences["bleu_2"][1] == pytest.approx(math.exp(1 - 3 / 2), rel=1e-6)
