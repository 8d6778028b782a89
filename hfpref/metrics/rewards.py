"""Captioning metrics as reward callables for RL fine-tuning (TRL's `f(completions, **columns) -> list[float]`)."""

from __future__ import annotations

from collections.abc import Sequence

from hfpref.metrics.cider import CiderD
from hfpref.metrics.tokenization import MetricUnavailableError, java_path, tokenize_captions
from hfpref.rewards.functions import RewardFunc, _named, completion_text


def get_cider_reward(
    references_corpus: Sequence[Sequence[str]], *, tokenizer: str = "ptb", n: int = 4, sigma: float = 6.0
) -> RewardFunc:
    r"""
    CIDEr-D reward, the self-critical sequence training reward (Rennie et al., https://huggingface.co/papers/1612.00563):
    each completion scored against its row's `references` column, with idf weights fixed once from a reference corpus.

    The document frequencies must come from a corpus, not from the batch: an RL batch repeats each prompt's
    references for every sampled completion, and CIDEr-D with the batch as corpus gives every shared n-gram zero
    weight (a batch of one prompt scores 0 everywhere).

    Args:
        references_corpus (`Sequence[Sequence[str]]`):
            The reference lists of the training set (one list per clip), e.g. `train_ds["references"]`.
        tokenizer (`str`, *optional*, defaults to `"ptb"`):
            `"ptb"` (the COCO toolkit's Java tokenizer, cached per caption; one Java call per batch for the new
            completions), or `"simple"` (pure Python, faster, slightly different from PTB).
        n (`int`, *optional*, defaults to `4`):
            Largest n-gram order.
        sigma (`float`, *optional*, defaults to `6.0`):
            Width of the gaussian length penalty.

    Returns:
        `Callable`: `cider_d_reward(completions, references, **kwargs) -> list[float]`; `references` arrives as the
        dataset column of the same name (a list of captions per row, or one caption).

    Raises:
        [`~hfpref.metrics.MetricUnavailableError`]: with `tokenizer="ptb"` and no Java.

    Example:
    ```python
    >>> corpus = [["a dog barks", "a dog is barking"], ["rain falls on a roof", "heavy rain"], ["a car passes"]]
    >>> reward = get_cider_reward(corpus, tokenizer="simple")
    >>> [round(r, 3) for r in reward(["a dog barks", "a car"], references=[corpus[0], corpus[0]])]
    [4.757, 0.0]

    ```
    """
    if tokenizer == "ptb" and java_path() is None:
        raise MetricUnavailableError("java not found: the PTB tokenizer needs Java; pass tokenizer='simple'")
    corpus = [[refs] if isinstance(refs, str) else list(refs) for refs in references_corpus]
    flat = tokenize_captions([r for refs in corpus for r in refs], tokenizer)
    tokens = iter(flat)
    scorer = CiderD([[next(tokens) for _ in refs] for refs in corpus], n=n, sigma=sigma)

    def cider_d_reward(completions, references, **kwargs) -> list[float]:
        texts = [completion_text(c) for c in completions]
        reference_lists = [[refs] if isinstance(refs, str) else list(refs) for refs in references]
        if len(reference_lists) != len(texts):
            raise ValueError(f"{len(texts)} completions but {len(reference_lists)} reference lists.")
        flat = tokenize_captions([*texts, *(r for refs in reference_lists for r in refs)], tokenizer)
        candidates, rest = flat[: len(texts)], iter(flat[len(texts) :])
        return scorer.sentence_scores(candidates, [[next(rest) for _ in refs] for refs in reference_lists])

    return _named(cider_d_reward, "cider_d_reward")
