"""
Reward callables for RL fine-tuning, with TRL's signature `f(completions, **columns) -> list[float]`.

Dataset columns arrive as keyword arguments (TRL's GRPO/RLOO do this, and so does hfpref's
captioning RL trainer), so a reward reads the audio from an `audio_embedding` column when the
data carries cached embeddings, or decodes the `audio` column otherwise. Shaping (length and
repetition penalties) wraps a reward; it never lives inside a trainer.
"""

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from ..data.completions import completion_text
from ..metrics.cider import CiderD
from ..metrics.similarity import audio_embeddings, clap_similarity
from ..metrics.tokenization import MetricUnavailableError, java_path, tokenize_captions


RewardFunc = Callable[..., list[float]]


def _named(function: RewardFunc, name: str) -> RewardFunc:
    function.__name__ = name
    function.__qualname__ = name
    return function


def get_reward_model_reward(reward_model, embedder) -> RewardFunc:
    """
    Reward from a [`~hfpref.rewards.CLAPRewardModel`]: r(a, c) in (0, 1).

    Args:
        reward_model ([`~hfpref.rewards.CLAPRewardModel`]):
            A trained reward model (put in eval mode here).
        embedder ([`~hfpref.encoders.clap.ClapEmbedder`]):
            The CLAP embedder the reward model was trained on (its cache is used for captions too).

    Returns:
        `Callable`: `reward_model_reward(completions, audio=None, audio_embedding=None, **kwargs)`.

    Raises:
        [`~hfpref.models.modeling_clap_reward.ClapMismatchError`]: when `embedder` is not the CLAP the reward model
            was trained on (see [`~hfpref.models.modeling_clap_reward.check_clap_pairing`]).
    """
    from ..models.modeling_clap_reward import check_clap_pairing

    check_clap_pairing(reward_model, embedder)
    reward_model.eval()

    @torch.inference_mode()
    def reward_model_reward(completions, audio=None, audio_embedding=None, **kwargs) -> list[float]:
        texts = [completion_text(c) for c in completions]
        audio_vectors = audio_embeddings(embedder, len(texts), audio, audio_embedding)
        text_vectors = embedder.embed_text(texts)
        device = reward_model.device
        out = reward_model(
            audio_embedding=torch.from_numpy(audio_vectors).to(device),
            text_embedding=torch.from_numpy(text_vectors).to(device),
        )
        return out.rewards.float().cpu().tolist()

    return _named(reward_model_reward, "reward_model_reward")


def get_clap_similarity_reward(embedder) -> RewardFunc:
    """
    CLAP score: cosine similarity of the audio and caption embeddings, in [-1, 1].

    Args:
        embedder ([`~hfpref.encoders.clap.ClapEmbedder`]): the CLAP embedder.

    Returns:
        `Callable`: `clap_similarity_reward(completions, audio=None, audio_embedding=None, **kwargs)`.
    """

    def clap_similarity_reward(completions, audio=None, audio_embedding=None, **kwargs) -> list[float]:
        return clap_similarity(embedder, [completion_text(c) for c in completions], audio, audio_embedding)

    return _named(clap_similarity_reward, "clap_similarity_reward")


def length_penalty(reward: float, length: int, expected_length: float, alpha: float = 0.4) -> float:
    """
    Length-penalised reward, applied only above the expected length (Hegde et al., eq. 6):
    `R' = R - alpha * max(0, L - L_exp) / L_exp`, L in words.

    Example:
    ```python
    >>> round(length_penalty(0.8, length=15, expected_length=10, alpha=0.4), 6)  # 0.8 - 0.4 * 5 / 10
    0.6
    >>> length_penalty(0.8, length=7, expected_length=10)  # shorter than expected: unchanged
    0.8

    ```
    """
    if expected_length <= 0:
        raise ValueError(f"expected_length={expected_length} must be positive")
    return reward - alpha * max(0.0, length - expected_length) / expected_length


def expected_caption_length(references: Sequence[Sequence[str]] | Sequence[str]) -> float:
    """
    Mean length in words of reference captions: the default `L_exp` of the length penalty.

    Example:
    ```python
    >>> expected_caption_length([["a dog barks", "a dog barks loudly"], ["rain falls"]])
    3.0

    ```
    """
    lengths = [len(r.split()) for refs in references for r in ([refs] if isinstance(refs, str) else refs)]
    if not lengths:
        raise ValueError("expected_caption_length: no reference captions.")
    return float(np.mean(lengths))


def with_length_penalty(reward_func: RewardFunc, expected_length: float, alpha: float = 0.4) -> RewardFunc:
    """
    Wrap a reward with [`length_penalty`].

    Args:
        reward_func (`Callable`): the reward to shape.
        expected_length (`float`): `L_exp`, in words (e.g. [`expected_caption_length`] of the references).
        alpha (`float`, *optional*, defaults to `0.4`): penalty strength (0.4 AudioCaps, 1.0 the paper's in-house data).

    Example:
    ```python
    >>> const = lambda completions, **kw: [1.0] * len(completions)
    >>> shaped = with_length_penalty(const, expected_length=2, alpha=0.5)
    >>> shaped(["a dog", "a dog barks loudly"])
    [1.0, 0.5]

    ```
    """
    if expected_length <= 0:
        raise ValueError(f"expected_length={expected_length} must be positive")

    @functools.wraps(reward_func)
    def shaped(completions, **kwargs) -> list[float]:
        rewards = reward_func(completions, **kwargs)
        lengths = [len(completion_text(c).split()) for c in completions]
        return [length_penalty(r, n, expected_length, alpha) for r, n in zip(rewards, lengths)]

    return _named(shaped, f"{getattr(reward_func, '__name__', 'reward')}_length_penalty")


def repetition_rate(text: str, n: int = 1) -> float:
    """
    Share of the n-grams of `text` that repeat an earlier n-gram, in [0, 1).

    Example:
    ```python
    >>> round(repetition_rate("a dog a dog a dog"), 4)  # 6 words, 2 distinct
    0.6667

    ```
    """
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def with_repetition_penalty(reward_func: RewardFunc, beta: float = 0.5, n: int = 1) -> RewardFunc:
    """
    Wrap a reward with a repetition penalty, `R' = R - beta * repetition_rate(c, n)`.

    Example:
    ```python
    >>> const = lambda completions, **kw: [1.0] * len(completions)
    >>> with_repetition_penalty(const, beta=0.5)(["a dog barks", "dog dog dog dog"])
    [1.0, 0.625]

    ```
    """

    @functools.wraps(reward_func)
    def shaped(completions, **kwargs) -> list[float]:
        rewards = reward_func(completions, **kwargs)
        return [r - beta * repetition_rate(completion_text(c), n) for r, c in zip(rewards, completions)]

    return _named(shaped, f"{getattr(reward_func, '__name__', 'reward')}_repetition_penalty")


# The registry the recipes use to turn names from YAML into callables; trainers receive callables.


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


REWARD_FUNCTIONS: dict[str, Callable[..., RewardFunc]] = {
    "reward_model": get_reward_model_reward,
    "clap_similarity": get_clap_similarity_reward,
    "cider_d": get_cider_reward,
}


def build_reward_funcs(
    names: Sequence[str],
    *,
    reward_model_name_or_path: str | None = None,
    clap_model_name_or_path: str | None = None,
    embedding_cache_dir: str | None = None,
    length_penalty_alpha: float | None = None,
    expected_length: float | None = None,
    repetition_penalty: float | None = None,
    references_corpus: Sequence[Sequence[str]] | None = None,
    extra: Mapping[str, Callable[[], RewardFunc]] | None = None,
    reward_ensemble_lambda: float | None = None,
):
    """
    Turn reward names from a recipe's YAML into callables, loading the models they need once.

    The length and repetition penalties wrap the first (primary) reward, as in the paper's eq. 6.

    Args:
        names (`Sequence[str]`): registered reward names (see `REWARD_FUNCTIONS`).
        reward_model_name_or_path (`str`, *optional*): a saved [`~hfpref.rewards.CLAPRewardModel`].
        clap_model_name_or_path (`str`, *optional*):
            The CLAP for CLAP rewards; defaults to the checkpoint the reward model records.
        embedding_cache_dir (`str`, *optional*): CLAP embedding cache.
        length_penalty_alpha (`float`, *optional*): alpha of [`length_penalty`]; needs `expected_length`.
        expected_length (`float`, *optional*): `L_exp` in words.
        repetition_penalty (`float`, *optional*): beta of [`with_repetition_penalty`].
        references_corpus (`Sequence[Sequence[str]]`, *optional*):
            Reference captions whose n-gram document frequencies CIDEr-D uses (`"cider_d"`); typically the
            training set's `references` column.
        extra (`Mapping[str, Callable[[], RewardFunc]]`, *optional*):
            More named rewards for this call, each built by calling its factory with no arguments, e.g.
            `{"oracle": hfpref.judges.oracle.get_oracle_reward}` (judges sit above the rewards, so a script passes
            them in).
        reward_ensemble_lambda (`float`, *optional*):
            For a reward-model ensemble: reward `mean - lambda * std` of its members with this lambda instead of the
            one it was saved with (0: the plain mean). Refused for a single reward model.

    Returns:
        `tuple[list[Callable], ClapEmbedder | None]`: the callables and the CLAP embedder they share (if any), so
        a recipe can precompute `audio_embedding` columns through the same cache.
    """
    extra = dict(extra or {})
    known = sorted({*REWARD_FUNCTIONS, *extra})
    if not names:
        raise ValueError(f"no rewards named; known rewards: {known}")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown reward {unknown[0]!r}; known rewards: {known}")
    resources: dict = {}
    if "reward_model" in names:
        from ..models.modeling_clap_reward import CLAPRewardModel

        if reward_model_name_or_path is None:
            raise ValueError("the 'reward_model' reward needs reward_model_name_or_path")
        resources["reward_model"] = CLAPRewardModel.from_pretrained(reward_model_name_or_path)
        if reward_ensemble_lambda is not None:
            config = resources["reward_model"].config
            if config.num_members < 2:
                raise ValueError(
                    f"reward_ensemble_lambda={reward_ensemble_lambda} needs a reward-model ensemble, but "
                    f"{reward_model_name_or_path} has one member (train it with num_members > 1)"
                )
            config.ensemble_lambda = float(reward_ensemble_lambda)
        clap_model_name_or_path = clap_model_name_or_path or resources["reward_model"].config.resolve_clap_checkpoint()
    if {"reward_model", "clap_similarity"} & set(names):
        from ..encoders.clap import ClapEmbedder

        if clap_model_name_or_path is None:
            raise ValueError("CLAP rewards need clap_model_name_or_path")
        resources["embedder"] = ClapEmbedder.from_pretrained(
            clap_model_name_or_path, cache_dir=embedding_cache_dir, show_progress=False
        )
    funcs = []
    for name in names:
        if name in extra:
            funcs.append(extra[name]())
            continue
        if name == "cider_d":
            if references_corpus is None:
                raise ValueError("the 'cider_d' reward needs references_corpus (a dataset with a references column)")
            funcs.append(REWARD_FUNCTIONS[name](references_corpus=references_corpus))
            continue
        factory = REWARD_FUNCTIONS[name]
        wanted = inspect.signature(factory).parameters
        funcs.append(factory(**{k: v for k, v in resources.items() if k in wanted}))
    if length_penalty_alpha:
        if expected_length is None:
            raise ValueError("length_penalty_alpha needs expected_length (e.g. the mean reference length)")
        funcs[0] = with_length_penalty(funcs[0], expected_length=expected_length, alpha=length_penalty_alpha)
    if repetition_penalty:
        funcs[0] = with_repetition_penalty(funcs[0], beta=repetition_penalty)
    return funcs, resources.get("embedder")


def get_reward_func(name: str, **kwargs) -> RewardFunc:
    """
    Build the reward registered under `name`; an unknown name raises a `ValueError` listing the known names.

    Example:
    ```python
    >>> get_reward_func("bleu")
    Traceback (most recent call last):
    ...
    ValueError: unknown reward 'bleu'; known rewards: ['cider_d', 'clap_similarity', 'reward_model']

    ```
    """
    if name not in REWARD_FUNCTIONS:
        raise ValueError(f"unknown reward {name!r}; known rewards: {sorted(REWARD_FUNCTIONS)}")
    return REWARD_FUNCTIONS[name](**kwargs)
