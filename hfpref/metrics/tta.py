"""Text-to-audio evaluation as BATON reports it: CLAP score, Frechet distance, reward-model score, per task subset.

BATON (https://huggingface.co/papers/2402.00744, section 4.2) evaluates on AudioCaps test captions split into a
2-event (integrity) and a 3-event (temporal) subset ([`~hfpref.prompts.tta_prompts.split_multi_event_captions`]).
[`clap_score`] is the cosine of CLAP's audio and prompt embeddings (S_CLAP, reported in %), [`frechet_distance`] the
Frechet distance between Gaussians fitted to generated and reference embeddings (on CLAP audio embeddings by default;
any object with `embed_audio(arrays, *, sampling_rate)` works, e.g. a PANNs or VGGish wrapper for FD / FAD proper),
and [`reward_model_score`]
the binary reward model's mean. Every function takes the clips' `sampling_rate`, which is handed to the embedder
(a [`~hfpref.encoders.clap.ClapEmbedder`] resamples to its own rate: AudioLDM renders at 16 kHz, LAION's CLAP takes
48 kHz). [`evaluate_tta`] computes them overall and per subset; a metric whose model is
missing raises [`~hfpref.metrics.tokenization.MetricUnavailableError`] naming the metric when asked for, and is
listed under `skipped` with the reason otherwise.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import linalg

from .similarity import row_cosine
from .tokenization import MetricUnavailableError


TTA_METRICS = ("clap_score", "frechet_distance", "reward_score")
_NEEDS = {
    "clap_score": "a CLAP `embedder` (e.g. hfpref.encoders.ClapEmbedder.from_pretrained('laion/clap-htsat-unfused'))",
    "frechet_distance": "an audio `embedder` (anything with embed_audio) and `reference_audio`",
    "reward_score": "a `reward_model` (hfpref.rewards.CLAPRewardModel) and the CLAP `embedder` it was trained on",
}


def clap_score(audio: Sequence[np.ndarray], prompts: Sequence[str], embedder, *, sampling_rate: int) -> list[float]:
    """
    Cosine similarity of each clip's CLAP audio embedding with its prompt's text embedding (S_CLAP; x100 for %).

    Args:
        audio (`Sequence[np.ndarray]`): mono clips, one per prompt.
        prompts (`Sequence[str]`): their prompts.
        embedder: the CLAP ([`~hfpref.encoders.clap.ClapEmbedder`], or anything with `embed_audio(arrays, *,
            sampling_rate)` and `embed_text`).
        sampling_rate (`int`): the clips' sampling rate in Hz, handed to the embedder (which resamples).

    Example:

    ```python
    >>> class Fixed:  # any embedder with embed_audio / embed_text
    ...     def embed_audio(self, clips, *, sampling_rate): return np.array([[1.0, 0.0], [0.0, 1.0]])
    ...     def embed_text(self, texts): return np.array([[1.0, 0.0], [1.0, 0.0]])
    >>> clap_score([np.zeros(4), np.zeros(4)], ["a", "b"], Fixed(), sampling_rate=16000)
    [1.0, 0.0]

    ```
    """
    if embedder is None:
        raise MetricUnavailableError(f"clap_score needs {_NEEDS['clap_score']}")
    if len(audio) != len(prompts):
        raise ValueError(f"clap_score: {len(audio)} clips but {len(prompts)} prompts")
    a = np.asarray(embedder.embed_audio(list(audio), sampling_rate=sampling_rate), dtype=np.float64)
    t = np.asarray(embedder.embed_text(list(prompts)), dtype=np.float64)
    return row_cosine(a, t).tolist()


def frechet_distance(embeddings_a: np.ndarray, embeddings_b: np.ndarray, eps: float = 1e-6) -> float:
    """
    Frechet distance between Gaussians fitted to two embedding sets:
    `||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))` (FID/FAD's formula, https://arxiv.org/abs/1812.08466).

    Args:
        embeddings_a (`np.ndarray` of shape `(n_a, dim)`), embeddings_b (`np.ndarray` of shape `(n_b, dim)`):
            The two sets, at least 2 rows each.
        eps (`float`, *optional*, defaults to `1e-6`):
            Added to the diagonals when the product of the covariances is singular.

    Example:

    ```python
    >>> a = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    >>> round(frechet_distance(a, a + [3.0, 4.0]), 6)  # same covariance: the squared mean shift
    25.0

    ```
    """
    a, b = np.asarray(embeddings_a, dtype=np.float64), np.asarray(embeddings_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"frechet_distance needs two (n, dim) sets of one width, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"frechet_distance needs at least 2 embeddings per set, got {len(a)} and {len(b)}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():
        offset = np.eye(cov_a.shape[0]) * eps
        covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    covmean = np.real(covmean)
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


def reward_model_score(
    audio: Sequence[np.ndarray], prompts: Sequence[str], reward_model, embedder, *, sampling_rate: int
) -> list[float]:
    """The binary reward model's r(c, x) of each (prompt, clip) pair, in (0, 1); the clips are at `sampling_rate`."""
    if reward_model is None or embedder is None:
        raise MetricUnavailableError(f"reward_score needs {_NEEDS['reward_score']}")
    return list(reward_model.score(list(audio), list(prompts), embedder, sampling_rate=sampling_rate))


def check_frechet_subsets(tasks: Sequence[str] | None, n_clips: int, n_reference=None) -> None:
    """
    Refuse, before anything is rendered or embedded, an evaluation whose Frechet distance cannot be computed: the
    distance fits a covariance to each set, so every subset ("all" and each task) needs at least 2 generated clips,
    and every reference set at least 2 clips.

    Args:
        tasks (`Sequence[str]`, *optional*): the task of each generated clip (`None`: one subset, "all").
        n_clips (`int`): number of generated clips.
        n_reference (`int` or `Mapping[str, int]`, *optional*): size of the reference set, or of each named set.

    Example:

    ```python
    >>> check_frechet_subsets(["integrity", "integrity", "temporal"], 3)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: frechet_distance needs at least 2 generated clips per subset, but subset 'temporal' has 1 ...

    ```
    """
    sizes = {"all": n_clips}
    if tasks is not None:
        sizes.update(Counter(tasks))
    for name, size in sizes.items():
        if size < 2:
            raise ValueError(
                f"frechet_distance needs at least 2 generated clips per subset, but subset {name!r} has {size} "
                f"(clips per subset: {sizes}); render more clips per prompt or more prompts per task, or leave "
                "frechet_distance out of `metrics`"
            )
    references = n_reference if isinstance(n_reference, Mapping) else {"reference_audio": n_reference}
    for name, size in references.items():
        if size is not None and size < 2:
            raise ValueError(f"frechet_distance needs at least 2 reference clips, but {name!r} has {size}")


def evaluate_tta(
    audio: Sequence[np.ndarray],
    prompts: Sequence[str],
    *,
    sampling_rate: int,
    tasks: Sequence[str] | None = None,
    reference_audio: Sequence[np.ndarray] | Mapping[str, Sequence[np.ndarray]] | None = None,
    reference_sampling_rate: int | None = None,
    embedder=None,
    fd_embedder=None,
    reward_model=None,
    metrics: Sequence[str] | None = None,
) -> dict:
    """
    Evaluate generated audio overall and per task subset (BATON's integrity / temporal split).

    Args:
        audio (`Sequence[np.ndarray]`):
            Generated clips, one per prompt.
        prompts (`Sequence[str]`):
            Their prompts.
        sampling_rate (`int`):
            Sampling rate of `audio` in Hz (e.g. `sampling_rate_of(pipeline)`, 16 kHz for AudioLDM); every embedder
            gets it and resamples to its own rate.
        tasks (`Sequence[str]`, *optional*):
            Subset of each item (`"integrity"`, `"temporal"`, ...); each subset gets its own metrics.
        reference_audio (`Sequence[np.ndarray]` or `Mapping[str, Sequence[np.ndarray]]`, *optional*):
            Real clips for the Frechet distance: one set for all, or one per subset name (and `"all"`).
        reference_sampling_rate (`int`, *optional*):
            Their sampling rate; defaults to `sampling_rate`.
        embedder ([`~hfpref.encoders.clap.ClapEmbedder`], *optional*):
            CLAP for `clap_score` and `reward_score`, and for `frechet_distance` unless `fd_embedder` is given.
        fd_embedder (*optional*):
            Another audio embedder (with `embed_audio(arrays, *, sampling_rate)`) for the Frechet distance.
        reward_model ([`~hfpref.rewards.CLAPRewardModel`], *optional*):
            For `reward_score`.
        metrics (`Sequence[str]`, *optional*):
            Among `clap_score`, `frechet_distance`, `reward_score`. Asked-for metrics whose model is missing raise
            `MetricUnavailableError` naming the metric. By default every metric whose model is given is computed and
            the others are listed under `skipped` with what they need.

    Returns:
        `dict`: `{"all": {metric: value, "n": count}, "<task>": {...}, "skipped": {metric: reason}}`. `clap_score` and
        `reward_score` are means over the subset.

    Raises:
        `ValueError`: before any embedding, when the Frechet distance is to be computed and a subset or reference set
            has fewer than 2 clips ([`check_frechet_subsets`]).
    """
    if len(audio) != len(prompts):
        raise ValueError(f"evaluate_tta: {len(audio)} clips but {len(prompts)} prompts")
    if tasks is not None and len(tasks) != len(prompts):
        raise ValueError(f"evaluate_tta: {len(tasks)} tasks but {len(prompts)} prompts")
    fd_embedder = fd_embedder if fd_embedder is not None else embedder
    available = {
        "clap_score": embedder is not None,
        "frechet_distance": fd_embedder is not None and reference_audio is not None,
        "reward_score": reward_model is not None and embedder is not None,
    }
    skipped: dict[str, str] = {}
    if metrics is None:
        metrics = [m for m in TTA_METRICS if available[m]]
        skipped = {m: f"needs {_NEEDS[m]}" for m in TTA_METRICS if not available[m]}
    else:
        unknown = [m for m in metrics if m not in TTA_METRICS]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; known metrics are {list(TTA_METRICS)}")
        for m in metrics:
            if not available[m]:
                raise MetricUnavailableError(f"{m} needs {_NEEDS[m]}")
    audio = list(audio)
    prompts = list(prompts)
    reference_rate = sampling_rate if reference_sampling_rate is None else reference_sampling_rate
    if "frechet_distance" in metrics:
        if isinstance(reference_audio, Mapping):
            needed = ["all", *(dict.fromkeys(tasks) if tasks is not None else [])]
            absent = [name for name in needed if name not in reference_audio]
            if absent:
                raise ValueError(f"reference_audio has no set for {absent}; it has {sorted(reference_audio)}")
            n_reference = {name: len(reference_audio[name]) for name in needed}
        else:
            n_reference = len(reference_audio)
        check_frechet_subsets(tasks, len(audio), n_reference)
    per_item: dict[str, np.ndarray] = {}
    if "clap_score" in metrics:
        per_item["clap_score"] = np.asarray(clap_score(audio, prompts, embedder, sampling_rate=sampling_rate))
    if "reward_score" in metrics:
        per_item["reward_score"] = np.asarray(
            reward_model_score(audio, prompts, reward_model, embedder, sampling_rate=sampling_rate)
        )
    generated_embeddings = (
        np.asarray(fd_embedder.embed_audio(audio, sampling_rate=sampling_rate))
        if "frechet_distance" in metrics
        else None
    )

    def reference_embeddings(name: str) -> np.ndarray:
        clips = reference_audio[name] if isinstance(reference_audio, Mapping) else reference_audio
        return np.asarray(fd_embedder.embed_audio(list(clips), sampling_rate=reference_rate))

    groups = {"all": np.arange(len(prompts))}
    if tasks is not None:
        for task in dict.fromkeys(tasks):
            groups[task] = np.flatnonzero(np.asarray(tasks, dtype=object) == task)
    result: dict = {}
    for name, rows in groups.items():
        entry: dict[str, float] = {"n": int(len(rows))}
        for metric, values in per_item.items():
            entry[metric] = float(values[rows].mean()) if len(rows) else float("nan")
        if generated_embeddings is not None:
            entry["frechet_distance"] = frechet_distance(generated_embeddings[rows], reference_embeddings(name))
        result[name] = entry
    result["skipped"] = skipped
    return result
