"""
Audibility data: (sentence, audible / non-audible) pairs for the classifier that guides decoding.

Three sources: any CSV/JSON/JSONL/Parquet file, `save_to_disk` folder or Hub dataset
([`load_audibility_dataset`]); the seed set shipped with hfpref (300 sentences written for this project,
150 per class, the offline default, [`load_seed_set`]); and an LLM behind an OpenAI-compatible
`chat/completions` endpoint ([`generate_audibility_examples`], the `hfpref audibility-data` command),
the way the audibility-guidance paper built its 10k-sentence set with ChatGPT.
"""

from __future__ import annotations

import json
import logging
import random
import re
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value


logger = logging.getLogger(__name__)

LABEL_NAMES = ["non_audible", "audible"]
AUDIBLE, NON_AUDIBLE = 1, 0
SEED_FILE = "audibility_seed.jsonl"
FEATURES = Features({"sentence": Value("string"), "label": ClassLabel(names=LABEL_NAMES)})

_LABEL_ALIASES = {
    "audible": AUDIBLE,
    "1": AUDIBLE,
    "true": AUDIBLE,
    "non_audible": NON_AUDIBLE,
    "non-audible": NON_AUDIBLE,
    "non audible": NON_AUDIBLE,
    "nonaudible": NON_AUDIBLE,
    "not audible": NON_AUDIBLE,
    "inaudible": NON_AUDIBLE,
    "0": NON_AUDIBLE,
    "false": NON_AUDIBLE,
}


def normalize_label(value) -> int:
    """
    Map a label to 1 (audible) or 0 (non-audible).

    Accepts 0/1, booleans, and the strings `"audible"`, `"non_audible"`, `"non-audible"`, `"not audible"`,
    `"inaudible"` (any case).

    Example:

    ```python
    >>> normalize_label("Non-audible"), normalize_label(1), normalize_label(True)
    (0, 1, 1)

    ```
    """
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (0, 1):
        return value
    if isinstance(value, float) and value in (0.0, 1.0):
        return int(value)
    if isinstance(value, str) and value.strip().lower() in _LABEL_ALIASES:
        return _LABEL_ALIASES[value.strip().lower()]
    raise ValueError(f"label {value!r} is not audible/non-audible; use 1/0, true/false or one of {LABEL_NAMES}")


def _to_audibility_dataset(rows_sentences: Sequence, rows_labels: Sequence, source: str) -> Dataset:
    sentences, labels = [], []
    for row, (sentence, label) in enumerate(zip(rows_sentences, rows_labels)):
        if not isinstance(sentence, str) or not sentence.strip():
            raise ValueError(f"{source} row {row}: sentence {sentence!r} is not a non-empty string")
        try:
            labels.append(normalize_label(label))
        except ValueError as error:
            raise ValueError(f"{source} row {row}: {error}") from None
        sentences.append(sentence.strip())
    if not sentences:
        raise ValueError(f"{source} holds no sentences")
    return Dataset.from_dict({"sentence": sentences, "label": labels}, features=FEATURES)


def load_seed_set() -> Dataset:
    """
    The seed set shipped with hfpref: 300 sentences written for this project, 150 audible (audio-caption-like
    descriptions of sound events) and 150 non-audible (colour, smell, taste, touch, thoughts, appearance).

    Example:

    ```python
    >>> seed = load_seed_set()
    >>> len(seed), sum(seed["label"])
    (300, 150)

    ```
    """
    text = resources.files("hfpref.guidance").joinpath(SEED_FILE).read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return _to_audibility_dataset([r["sentence"] for r in rows], [r["label"] for r in rows], SEED_FILE)


def load_audibility_dataset(
    name_or_path: str | None = None,
    *,
    split: str | None = None,
    text_column: str = "sentence",
    label_column: str = "label",
) -> Dataset | DatasetDict:
    r"""
    Load (sentence, label) audibility data, normalized to a `sentence` string column and a `label`
    `ClassLabel(["non_audible", "audible"])` column.

    Args:
        name_or_path (`str`, *optional*):
            A `.csv`/`.json`/`.jsonl`/`.parquet` file, a `save_to_disk` folder or a Hub dataset id; `None` loads the
            shipped seed set.
        split (`str`, *optional*):
            Split to return; without it every split of the source comes back as a `DatasetDict`.
        text_column (`str`, *optional*, defaults to `"sentence"`):
            Column holding the sentences.
        label_column (`str`, *optional*, defaults to `"label"`):
            Column holding the labels (1/0, true/false, or `"audible"`/`"non_audible"`-like strings).

    Returns:
        `datasets.Dataset` or `datasets.DatasetDict`.
    """
    if name_or_path is None:
        if split not in (None, "train"):
            raise ValueError(f"the seed set has a single split 'train'; split={split!r} does not apply")
        return load_seed_set()
    from ..data.loading import load_any_dataset

    data = load_any_dataset(name_or_path, split=split)
    parts = data if isinstance(data, DatasetDict) else {split or "train": data}
    out = {}
    for name, part in parts.items():
        missing = [c for c in (text_column, label_column) if c not in part.column_names]
        if missing:
            raise ValueError(
                f"{name_or_path} split {name!r} has no column(s) {missing}; its columns are {part.column_names}"
            )
        labels = part[label_column]
        if isinstance(part.features[label_column], ClassLabel):
            labels = [part.features[label_column].int2str(v) for v in labels]
        out[name] = _to_audibility_dataset(part[text_column], labels, f"{name_or_path} split {name!r}")
    return DatasetDict(out) if isinstance(data, DatasetDict) else out[split or "train"]


SYSTEM_PROMPT = (
    "You write training data for a text classifier used in audio captioning. The classifier decides whether a "
    "sentence describes something a listener could HEAR (audible) or something that can only be seen, smelled, "
    "tasted, touched, known or thought (non_audible). You answer with JSON lines only: no numbering, no "
    "commentary, no code fences."
)

USER_PROMPT = """Write {n_audible} audible and {n_non_audible} non_audible English sentences.

Audible sentences read like captions of sound recordings: name the sound sources and what they do (barking, \
rumbling, speaking, dripping, clattering, ringing, engines, weather, crowds, animals, tools, music), sometimes \
two or three sounds at once or one after another. Non_audible sentences are just as concrete and grammatical, \
but nothing in them makes a sound: colours, shapes, materials, smells, tastes, textures, temperatures, feelings, \
thoughts, facts, still scenes. Avoid sentences that are ambiguous (a "quiet" scene, an object that could \
be either). Vary the subjects, length (4 to 20 words) and sentence structure; do not repeat any of these:
{avoid}

Write one JSON object per line, exactly in this form:
{{"sentence": "A dog barks while a car passes by.", "label": "audible"}}
{{"sentence": "The walls are painted pale green.", "label": "non_audible"}}"""

_FENCE = re.compile(r"^```[A-Za-z]*$")


@dataclass
class ParsedExamples:
    """Valid examples of one LLM answer, and the lines that were not."""

    examples: list[dict] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)


def parse_llm_examples(text: str, *, min_words: int = 3, max_words: int = 40) -> ParsedExamples:
    """
    Parse an LLM answer of JSON lines `{"sentence": ..., "label": "audible" | "non_audible"}`.

    Blank lines and Markdown code fences are skipped; every other line that is not such an object with a sentence
    of `min_words` to `max_words` words and a recognised label is returned in `malformed`, never dropped silently.

    Example:

    ```python
    >>> parsed = parse_llm_examples('{"sentence": "A dog barks loudly.", "label": "audible"}\\n1. oops\\n')
    >>> parsed.examples, parsed.malformed
    ([{'sentence': 'A dog barks loudly.', 'label': 1}], ['1. oops'])

    ```
    """
    parsed = ParsedExamples()
    for line in text.splitlines():
        line = line.strip()
        if not line or _FENCE.match(line):
            continue
        try:
            obj = json.loads(line.rstrip(","))
            sentence, label = obj["sentence"], normalize_label(obj["label"])
            if not isinstance(sentence, str) or "\n" in sentence:
                raise ValueError("sentence is not a one-line string")
            sentence = " ".join(sentence.split())
            if not min_words <= len(sentence.split()) <= max_words:
                raise ValueError("sentence length out of range")
        except (ValueError, TypeError, KeyError):
            parsed.malformed.append(line)
            continue
        parsed.examples.append({"sentence": sentence, "label": label})
    return parsed


def chat_completion(
    base_url: str,
    model: str,
    messages: list[dict],
    *,
    api_key: str | None = None,
    temperature: float = 1.0,
    timeout: float = 120.0,
) -> str:
    """
    One request to an OpenAI-compatible `POST {base_url}/chat/completions`; returns the first choice's content.
    """
    body = json.dumps({"model": model, "messages": messages, "temperature": temperature}).encode("utf-8")
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(base_url.rstrip("/") + "/chat/completions", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as error:
        detail = error.read().decode("utf-8", errors="replace")[:500]
        raise RuntimeError(f"{request.full_url} answered HTTP {error.code}: {detail}") from None
    try:
        return payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise RuntimeError(f"{request.full_url} answered without choices[0].message.content: {payload}") from None


@dataclass
class GenerationReport:
    """What [`generate_audibility_examples`] asked for, kept and dropped."""

    examples: list[dict] = field(default_factory=list)
    requests: int = 0
    malformed: int = 0
    duplicates: int = 0
    surplus: int = 0
    malformed_samples: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {name: sum(e["label"] == i for e in self.examples) for i, name in enumerate(LABEL_NAMES)}

    def summary(self) -> str:
        counts = self.counts()
        return (
            f"kept {len(self.examples)} sentences ({counts['audible']} audible, {counts['non_audible']} non_audible) "
            f"from {self.requests} request(s); dropped {self.malformed} malformed line(s), {self.duplicates} "
            f"duplicate(s) and {self.surplus} beyond the per-class target"
        )


def generate_audibility_examples(
    base_url: str,
    model: str,
    per_class: int,
    *,
    api_key: str | None = None,
    examples_per_request: int = 20,
    max_requests: int = 20,
    temperature: float = 1.0,
    existing: Iterable[str] = (),
    seed: int = 0,
    timeout: float = 120.0,
) -> GenerationReport:
    r"""
    Ask an LLM for `per_class` new audible and `per_class` new non-audible sentences.

    Each request asks for up to `examples_per_request` sentences of each class still short of its target, with a
    few already-known sentences to avoid; answers are parsed by [`parse_llm_examples`]. Malformed lines, duplicates
    (case-insensitive, of each other or of `existing`) and sentences past a class's target are counted in the
    report, not kept.

    Args:
        base_url (`str`): the endpoint's base URL, e.g. `"http://localhost:8000/v1"`.
        model (`str`): model name sent in the request.
        per_class (`int`): sentences wanted per class.
        api_key (`str`, *optional*): sent as a bearer token.
        examples_per_request (`int`, *optional*, defaults to `20`): sentences asked for per class and request.
        max_requests (`int`, *optional*, defaults to `20`): stop after this many requests even if short.
        temperature (`float`, *optional*, defaults to `1.0`): sampling temperature sent in the request.
        existing (`Iterable[str]`, *optional*): sentences that count as duplicates (e.g. the seed set).
        seed (`int`, *optional*, defaults to `0`): seed of the choice of sentences shown as "do not repeat".
        timeout (`float`, *optional*, defaults to `120.0`): seconds per request.

    Returns:
        [`GenerationReport`].
    """
    if per_class < 1 or examples_per_request < 1 or max_requests < 1:
        raise ValueError(
            f"per_class={per_class}, examples_per_request={examples_per_request} and max_requests={max_requests} "
            "must all be >= 1"
        )
    rng = random.Random(seed)
    seen = {s.strip().lower() for s in existing}
    known = list(dict.fromkeys(s.strip() for s in existing))
    report = GenerationReport()
    while report.requests < max_requests:
        counts = report.counts()
        wanted = {name: min(examples_per_request, per_class - counts[name]) for name in LABEL_NAMES}
        if all(n <= 0 for n in wanted.values()):
            break
        shown = rng.sample(known, min(6, len(known))) if known else ["A dog barks while a car passes by."]
        prompt = USER_PROMPT.format(
            n_audible=max(wanted["audible"], 0),
            n_non_audible=max(wanted["non_audible"], 0),
            avoid="\n".join(f"- {s}" for s in shown),
        )
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]
        answer = chat_completion(base_url, model, messages, api_key=api_key, temperature=temperature, timeout=timeout)
        report.requests += 1
        parsed = parse_llm_examples(answer)
        report.malformed += len(parsed.malformed)
        report.malformed_samples.extend(parsed.malformed[: max(0, 5 - len(report.malformed_samples))])
        for example in parsed.examples:
            key = example["sentence"].lower()
            if key in seen:
                report.duplicates += 1
                continue
            seen.add(key)
            if report.counts()[LABEL_NAMES[example["label"]]] >= per_class:
                report.surplus += 1
                continue
            report.examples.append(example)
            known.append(example["sentence"])
        logger.info("request %d: %s", report.requests, report.summary())
    return report
