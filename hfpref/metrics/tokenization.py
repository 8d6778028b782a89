"""Caption tokenization for the n-gram metrics: the COCO caption toolkit's Stanford PTB tokenizer, cached."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence


logger = logging.getLogger(__name__)

# The COCO toolkit drops these tokens after PTB tokenization (pycocoevalcap/tokenizer/ptbtokenizer.py).
PTB_PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)
TOKENIZERS = ("ptb", "simple", "whitespace")

_PTB_CACHE: dict[str, str] = {}
_PTB_CACHE_MAX = 500_000


class MetricUnavailableError(RuntimeError):
    """A metric cannot run here (no Java, no jar, no model); the message says why, briefly."""


def java_path() -> str | None:
    """Path of the `java` executable, or `None` when it is not installed."""
    return shutil.which("java")


def _ptb_jar() -> str:
    try:
        from pycocoevalcap.tokenizer import ptbtokenizer
    except ImportError as error:
        raise MetricUnavailableError("pycocoevalcap not installed (pip install 'hfpref[metrics]')") from error
    jar = os.path.join(
        os.path.dirname(os.path.abspath(ptbtokenizer.__file__)), ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR
    )
    if not os.path.isfile(jar):
        raise MetricUnavailableError(f"PTB tokenizer jar not found at {jar}")
    return jar


def _run_ptb(sentences: list[str]) -> list[str]:
    java = java_path()
    if java is None:
        raise MetricUnavailableError("java not found (the PTB tokenizer needs a Java runtime)")
    jar = _ptb_jar()
    # Same command as pycocoevalcap's PTBTokenizer, but the input file goes to the system temp dir, not into
    # site-packages (which may be read-only), and the output is checked line for line.
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False) as handle:
        handle.write("\n".join(sentences))
        name = handle.name
    try:
        command = [java, "-cp", jar, "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", name]
        completed = subprocess.run(command, capture_output=True, check=False)
    finally:
        os.remove(name)
    if completed.returncode != 0:
        raise MetricUnavailableError(f"PTB tokenizer failed: {completed.stderr.decode(errors='replace')[-500:]}")
    lines = completed.stdout.decode("utf-8").split("\n")
    # Trailing empty sentences may give no output line; any other mismatch would shift every caption after it.
    missing_ok = all(not s.strip() for s in sentences[len(lines) :])
    extra_ok = all(not line.strip() for line in lines[len(sentences) :])
    if not (missing_ok and extra_ok):
        raise RuntimeError(f"PTB tokenizer returned {len(lines)} lines for {len(sentences)} sentences.")
    lines = (lines + [""] * len(sentences))[: len(sentences)]
    return [" ".join(w for w in line.rstrip().split(" ") if w and w not in PTB_PUNCTUATIONS) for line in lines]


_LINE_BREAKS = re.compile(r"[\r\n\v\f\x85\u2028\u2029]")
_SIMPLE_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def _simple_tokenize(sentence: str) -> str:
    words = _SIMPLE_TOKEN.findall(sentence.lower())
    return " ".join(w for w in words if w not in PTB_PUNCTUATIONS and w not in {'"', "(", ")", "[", "]"})


def tokenize_captions(sentences: Sequence[str], tokenizer: str = "ptb") -> list[str]:
    r"""
    Tokenize captions the way the n-gram metrics expect them: lower-cased, space-separated, punctuation removed.

    Args:
        sentences (`Sequence[str]`):
            Captions to tokenize.
        tokenizer (`str`, *optional*, defaults to `"ptb"`):
            `"ptb"`: the Stanford PTB tokenizer of the COCO caption toolkit (Java, jar from `pycocoevalcap`), with
            the toolkit's punctuation removal; what published captioning scores use. Results are cached per sentence,
            so each distinct caption costs one Java round trip per process. `"simple"`: a pure-Python approximation
            (lower-case, split off punctuation, drop it), for machines without Java; scores differ slightly from
            PTB's. `"whitespace"`: the text is already tokenized; only split on whitespace.

    Returns:
        `list[str]`: one tokenized caption per input.

    Raises:
        [`MetricUnavailableError`]: with `"ptb"`, when Java or the jar is missing.

    Example:
    ```python
    >>> tokenize_captions(["A dog barks, then a car passes."], tokenizer="simple")
    ['a dog barks then a car passes']

    ```
    """
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"tokenizer={tokenizer!r} is not one of {list(TOKENIZERS)}")
    sentences = [_LINE_BREAKS.sub(" ", s) for s in sentences]
    if tokenizer == "whitespace":
        return [" ".join(s.split()) for s in sentences]
    if tokenizer == "simple":
        return [_simple_tokenize(s) for s in sentences]
    missing = sorted({s for s in sentences if s not in _PTB_CACHE})
    if missing:
        if len(_PTB_CACHE) + len(missing) > _PTB_CACHE_MAX:
            _PTB_CACHE.clear()
            missing = sorted(set(sentences))
        _PTB_CACHE.update(zip(missing, _run_ptb(missing)))
    return [_PTB_CACHE[s] for s in sentences]
