"""CIDEr-D, the consensus metric of Vedantam et al. (https://huggingface.co/papers/1411.5726), as the COCO toolkit has it.

`pycocoevalcap.cider.Cider` (what the COCO caption toolkit, FENSE and aac-metrics' `cider_d` call "CIDEr") already *is*
CIDEr-D: tf-idf n-gram vectors, clipped numerator `min(g_c, g_r) * g_r`, gaussian length penalty with sigma = 6, mean
over n = 1..4 and references, times 10 (the same code as `ciderD_scorer.py` in vrama91/cider; plain CIDEr has no
clipping and no penalty). It can only take its document frequencies from the set being scored. [`CiderD`] reimplements
the same formula so that the document frequencies can also come from a fixed corpus (the training references, as
self-critical training does, https://huggingface.co/papers/1612.00563), which a reward on a small batch needs;
`tests/metrics` checks it against `pycocoevalcap` to 1e-9.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence


Ngram = tuple[str, ...]


def ngram_counts(sentence: str, n: int = 4) -> Counter:
    """
    Counts of the 1- to `n`-grams of a tokenized (space-separated) sentence.

    Example:
    ```python
    >>> ngram_counts("a dog a", n=2)
    Counter({('a',): 2, ('dog',): 1, ('a', 'dog'): 1, ('dog', 'a'): 1})

    ```
    """
    words = sentence.split()
    return Counter(tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


class CiderD:
    r"""
    CIDEr-D scorer over tokenized captions (see [`~hfpref.metrics.tokenize_captions`]).

    Args:
        references_corpus (`Sequence[Sequence[str]]`, *optional*):
            Reference lists (one list per item) whose n-gram document frequencies define the idf weights: an n-gram's
            document frequency is the number of items with the n-gram in at least one reference, and the idf is
            `log(N_items) - log(max(1, df))`. When `None`, each call of [`~CiderD.sentence_scores`] uses the
            references it is given, like `pycocoevalcap`.
        n (`int`, *optional*, defaults to `4`):
            Largest n-gram order.
        sigma (`float`, *optional*, defaults to `6.0`):
            Width of the gaussian length penalty `exp(-(l_c - l_r)^2 / (2 sigma^2))`.

    Example:
    ```python
    >>> scorer = CiderD()
    >>> refs = [["a dog barks", "a dog is barking"], ["rain falls on a roof", "heavy rain"]]
    >>> [round(s, 4) for s in scorer.sentence_scores(["a dog barks", "a dog barks"], refs)]
    [4.7565, 0.0]

    ```
    """

    def __init__(self, references_corpus: Sequence[Sequence[str]] | None = None, n: int = 4, sigma: float = 6.0):
        if n < 1:
            raise ValueError(f"n={n} must be a positive integer")
        if sigma <= 0:
            raise ValueError(f"sigma={sigma} must be positive")
        self.n = n
        self.sigma = sigma
        self.document_frequency: Counter | None = None
        self.log_num_documents: float | None = None
        if references_corpus is not None:
            self.document_frequency, self.log_num_documents = self._document_frequency(references_corpus)

    def _counts(self, sentence: str, memo: dict[str, Counter]) -> Counter:
        if sentence not in memo:
            memo[sentence] = ngram_counts(sentence, self.n)
        return memo[sentence]

    def _document_frequency(
        self, references: Sequence[Sequence[str]], memo: dict[str, Counter] | None = None
    ) -> tuple[Counter, float]:
        if not references:
            raise ValueError("CIDEr-D needs at least one reference list to compute document frequencies.")
        memo = {} if memo is None else memo
        frequency: Counter = Counter()
        for refs in references:
            frequency.update({gram for ref in refs for gram in self._counts(ref, memo)})
        return frequency, math.log(float(len(references)))

    def _vector(self, counts: Counter, frequency: Counter, log_n: float) -> tuple[list[dict], list[float], int]:
        vector: list[dict[Ngram, float]] = [{} for _ in range(self.n)]
        norm = [0.0] * self.n
        words = 0
        for gram, term_frequency in counts.items():
            order = len(gram) - 1
            weight = float(term_frequency) * (log_n - math.log(max(1.0, frequency.get(gram, 0.0))))
            vector[order][gram] = weight
            norm[order] += weight * weight
            if order == 0:
                words += term_frequency
        # The COCO code measures length in bigrams, words - 1 (only differences of lengths matter), read from the
        # bigram counts; counted from the words here, so that n = 1 keeps its length penalty.
        return vector, [math.sqrt(x) for x in norm], max(words - 1, 0)

    def sentence_scores(self, candidates: Sequence[str], references: Sequence[Sequence[str]]) -> list[float]:
        """
        CIDEr-D of each tokenized candidate against its tokenized references.

        Args:
            candidates (`Sequence[str]`): one tokenized caption per item.
            references (`Sequence[Sequence[str]]`): one non-empty list of tokenized references per item.

        Returns:
            `list[float]`: one score per candidate (about 0 to 10; their mean is the corpus score).
        """
        if len(candidates) != len(references):
            raise ValueError(f"{len(candidates)} candidates but {len(references)} reference lists.")
        empty = [i for i, refs in enumerate(references) if len(refs) == 0]
        if empty:
            raise ValueError(f"CIDEr-D needs at least one reference per candidate; items {empty[:5]} have none.")
        memo: dict[str, Counter] = {}
        if self.document_frequency is None:
            frequency, log_n = self._document_frequency(references, memo)
        else:
            frequency, log_n = self.document_frequency, self.log_num_documents
        vectors: dict[str, tuple] = {}

        def vector_of(sentence: str) -> tuple:
            if sentence not in vectors:
                vectors[sentence] = self._vector(self._counts(sentence, memo), frequency, log_n)
            return vectors[sentence]

        similarities: dict[tuple[str, str], float] = {}

        def similarity(candidate: str, ref: str) -> float:
            # Sum over n-gram orders of the clipped cosine times the length penalty; memoised because leave-one-out
            # and repeated candidates meet the same (candidate, reference) pair many times.
            key = (candidate, ref)
            if key not in similarities:
                vector, norm, length = vector_of(candidate)
                ref_vector, ref_norm, ref_length = vector_of(ref)
                penalty = math.exp(-((length - ref_length) ** 2) / (2 * self.sigma**2))
                total = 0.0
                for order in range(self.n):
                    matched = ref_vector[order]
                    value = sum(min(w, matched.get(g, 0.0)) * matched.get(g, 0.0) for g, w in vector[order].items())
                    if norm[order] != 0 and ref_norm[order] != 0:
                        value /= norm[order] * ref_norm[order]
                    total += value * penalty
                similarities[key] = total
            return similarities[key]

        return [
            sum(similarity(candidate, ref) for ref in refs) / self.n / len(refs) * 10.0
            for candidate, refs in zip(candidates, references)
        ]
