"""Text-to-audio prompts for BATON: label groups joined by conjunctions, optional LLM rephrasing, test-set filter.

BATON (https://huggingface.co/papers/2402.00744, section 3.1 and appendix C) draws 2 labels (integrity task) or 3
labels (temporal task) from a label set, describes each as an event phrase and joins them with conjunctions drawn
at random from fixed lists, "avoiding relying on a single conjunction"; GPT-4 then makes the caption read like human
language. [`build_tta_prompts`] does the drawing and joining offline; [`rephrase_prompts`] sends each prompt to any
OpenAI-compatible chat endpoint, keeps the original when a call fails and counts the failures.
[`split_multi_event_captions`] is the paper's evaluation filter (section 4.2).
"""

from __future__ import annotations

import json
import logging
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from datasets import Dataset, Features, Value
from datasets import Sequence as SequenceFeature


logger = logging.getLogger(__name__)

TASKS = ("integrity", "temporal")

# Appendix C, Table 10: conjunctions joining two events (integrity task).
INTEGRITY_CONJUNCTIONS: tuple[str, ...] = (
    ",",
    "and",
    "while",
    "with",
    "as",
    "followed by",
    "then",
    "and then",
    "before",
)

# Appendix C, Table 11: ordered conjunction pairs joining three events (temporal task).
TEMPORAL_CONJUNCTIONS: tuple[tuple[str, str], ...] = (
    ("followed by", "followed by"),
    ("followed by", "and then"),
    ("followed by", "then"),
    ("then", "followed by"),
    ("before", "followed by"),
    ("and then", "and"),
    ("then", "and"),
    ("followed by", "and"),
    ("followed by", "as"),
    ("before", "as"),
    ("with", "and then"),
)

# Section 4.2: AudioCaps test captions containing one of these words form the multi-event test set.
TEST_FILTER_WORDS: tuple[str, ...] = ("and", "as", "then", "while", "before", "after", "followed")

# Table 10's instruction, for an LLM that rephrases an already joined caption.
DEFAULT_REPHRASE_INSTRUCTION = (
    "Rewrite the audio caption below so that it reads like natural human language. Keep every sound event and keep "
    "the order in which the events happen. Answer with the caption only, on one line.\nCaption: {prompt}"
)


@dataclass(frozen=True)
class TTAPrompt:
    """
    One text-to-audio prompt and what it asks for.

    Args:
        prompt (`str`):
            The caption given to the text-to-audio model.
        labels (`tuple[str, ...]`):
            The label group it was built from, in the order the events are mentioned.
        order (`tuple[str, ...]`):
            The intended temporal order of the events. Every conjunction of the paper's lists either keeps time order
            ("followed by", "then", "before") or marks overlap ("while", "with", "as"), so this is the order of
            mention.
        task (`str`):
            `"integrity"` (2 labels: are both events present?) or `"temporal"` (3 labels: present and in order?).
        conjunctions (`tuple[str, ...]`):
            The conjunctions joining the events.
        original_prompt (`str`, *optional*):
            The joined caption before rephrasing; equal to `prompt` when not rephrased.
        rephrased (`bool`, *optional*, defaults to `False`):
            Whether an LLM rewrote `prompt`.
    """

    prompt: str
    labels: tuple[str, ...]
    order: tuple[str, ...]
    task: str
    conjunctions: tuple[str, ...]
    original_prompt: str = ""
    rephrased: bool = False

    def __post_init__(self):
        if not self.original_prompt:
            object.__setattr__(self, "original_prompt", self.prompt)


def default_event_phrase(label: str) -> str:
    """
    An event phrase for an AudioCaps-style label: its first comma-separated alternative, lowercased.

    Example:

    ```python
    >>> default_event_phrase("Baby cry, infant cry")
    'baby cry'

    ```
    """
    return label.split(",")[0].strip().lower()


def _join(phrases: Sequence[str], conjunctions: Sequence[str]) -> str:
    text = phrases[0]
    for conjunction, phrase in zip(conjunctions, phrases[1:]):
        text += ", " + phrase if conjunction == "," else f" {conjunction} {phrase}"
    return text[0].upper() + text[1:]


def _phrase_picker(event_phrases) -> Callable[[str, np.random.Generator], str]:
    if event_phrases is None:
        return lambda label, rng: default_event_phrase(label)
    if callable(event_phrases):
        return lambda label, rng: event_phrases(label)
    if isinstance(event_phrases, Mapping):

        def pick(label: str, rng: np.random.Generator) -> str:
            if label not in event_phrases:
                raise ValueError(f"event_phrases has no phrase for label {label!r}")
            options = event_phrases[label]
            if isinstance(options, str):
                return options
            if not options:
                raise ValueError(f"event_phrases[{label!r}] is empty")
            return options[int(rng.integers(len(options)))]

        return pick
    raise TypeError(f"event_phrases must be None, a mapping or a callable, got {type(event_phrases).__name__}")


def _balanced_choices(n: int, n_options: int, rng: np.random.Generator) -> list[int]:
    """`n` indices into `n_options`: consecutive random permutations, so no option dominates and none is alone."""
    picks: list[int] = []
    while len(picks) < n:
        picks.extend(rng.permutation(n_options).tolist())
    return picks[:n]


def build_tta_prompts(
    labels: Sequence[str],
    n_prompts: int,
    task: str = "integrity",
    *,
    seed: int = 0,
    event_phrases: Mapping[str, Sequence[str] | str] | Callable[[str], str] | None = None,
    conjunctions: Sequence[str] | Sequence[Sequence[str]] | None = None,
) -> list[TTAPrompt]:
    """
    Draw label groups from a label set and join their event phrases with random conjunctions (BATON, appendix C).

    Each prompt draws 2 (integrity) or 3 (temporal) distinct labels uniformly and a conjunction (pair) from the task's
    list. Conjunctions are drawn as consecutive random permutations of the list, so every conjunction is used about
    equally often and two or more prompts never all share one.

    Args:
        labels (`Sequence[str]`):
            The label set: AudioCaps-style labels (`"Baby cry, infant cry"`) or any list a user gives.
        n_prompts (`int`):
            Number of prompts.
        task (`str`, *optional*, defaults to `"integrity"`):
            `"integrity"` (2 labels) or `"temporal"` (3 labels).
        seed (`int`, *optional*, defaults to `0`):
            Seed of the draws.
        event_phrases (`Mapping[str, Sequence[str] | str]` or `Callable[[str], str]`, *optional*):
            How a label reads as an event phrase: a mapping label -> phrase(s) (one drawn at random) or a function.
            Defaults to [`default_event_phrase`].
        conjunctions (`Sequence`, *optional*):
            The conjunction list: strings for integrity, pairs for temporal. Defaults to the paper's
            [`INTEGRITY_CONJUNCTIONS`] / [`TEMPORAL_CONJUNCTIONS`]. At least two, so no prompt set relies on one.

    Returns:
        `list[TTAPrompt]`: the prompts, with their labels and intended order.

    Example:

    ```python
    >>> prompts = build_tta_prompts(["Dog", "Rain", "Car passing by", "Bird"], 4, "integrity", seed=0)
    >>> [len(p.labels) for p in prompts]
    [2, 2, 2, 2]
    >>> len({p.conjunctions for p in prompts}) > 1
    True

    ```
    """
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not one of {list(TASKS)}")
    group_size = 2 if task == "integrity" else 3
    labels = list(dict.fromkeys(labels))
    if len(labels) < group_size:
        raise ValueError(f"the {task} task joins {group_size} distinct labels, but the label set has {len(labels)}")
    if n_prompts < 0:
        raise ValueError(f"n_prompts={n_prompts} must be >= 0")
    if conjunctions is None:
        conjunctions = INTEGRITY_CONJUNCTIONS if task == "integrity" else TEMPORAL_CONJUNCTIONS
    options = [(c,) if isinstance(c, str) else tuple(c) for c in conjunctions]
    if len(set(options)) < 2:
        raise ValueError(
            f"conjunctions={list(conjunctions)} has fewer than 2 distinct entries; the paper draws from a list so that "
            "no prompt set relies on a single conjunction"
        )
    bad = [o for o in options if len(o) != group_size - 1]
    if bad:
        raise ValueError(f"the {task} task needs {group_size - 1} conjunction(s) per prompt, got {bad[0]!r}")
    rng = np.random.default_rng(seed)
    pick_phrase = _phrase_picker(event_phrases)
    prompts = []
    for k in _balanced_choices(n_prompts, len(options), rng):
        group = tuple(labels[i] for i in rng.choice(len(labels), size=group_size, replace=False))
        phrases = [pick_phrase(label, rng) for label in group]
        prompts.append(
            TTAPrompt(prompt=_join(phrases, options[k]), labels=group, order=group, task=task, conjunctions=options[k])
        )
    return prompts


def prompts_to_dataset(prompts: Sequence[TTAPrompt]) -> Dataset:
    """
    The prompts as a `datasets.Dataset` with columns `prompt`, `labels`, `order`, `task`, `conjunctions`,
    `original_prompt`, `rephrased`.
    """
    list_of_str = SequenceFeature(Value("string"))
    features = Features(
        {
            "prompt": Value("string"),
            "labels": list_of_str,
            "order": list_of_str,
            "task": Value("string"),
            "conjunctions": list_of_str,
            "original_prompt": Value("string"),
            "rephrased": Value("bool"),
        }
    )
    columns = {name: [] for name in features}
    for p in prompts:
        for name in features:
            value = getattr(p, name)
            columns[name].append(list(value) if isinstance(value, tuple) else value)
    return Dataset.from_dict(columns, features=features)


@dataclass
class OpenAICompatibleRephraser:
    """
    Rephrases a prompt through an OpenAI-compatible `/chat/completions` endpoint (OpenAI, vLLM, llama.cpp, TGI...).

    Args:
        base_url (`str`):
            API root, e.g. `"http://localhost:8000/v1"`; `/chat/completions` is appended.
        model (`str`):
            Model name sent in the request.
        api_key (`str`, *optional*):
            Sent as a bearer token when given.
        instruction (`str`, *optional*, defaults to `DEFAULT_REPHRASE_INSTRUCTION`):
            User message template with a `{prompt}` field.
        temperature (`float`, *optional*, defaults to `0.7`):
            Sampling temperature.
        timeout (`float`, *optional*, defaults to `30.0`):
            Seconds per request.
    """

    base_url: str
    model: str
    api_key: str | None = None
    instruction: str = DEFAULT_REPHRASE_INSTRUCTION
    temperature: float = 0.7
    timeout: float = 30.0
    extra_body: dict = field(default_factory=dict)

    def __post_init__(self):
        if "{prompt}" not in self.instruction:
            raise ValueError("instruction must contain a '{prompt}' field")

    def __call__(self, prompt: str) -> str:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": self.instruction.format(prompt=prompt)}],
            "temperature": self.temperature,
            **self.extra_body,
        }
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(
            self.base_url.rstrip("/") + "/chat/completions", data=json.dumps(body).encode(), headers=headers
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            payload = json.loads(response.read().decode())
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as error:
            raise ValueError(f"unexpected chat completion payload: {str(payload)[:200]}") from error
        return clean_rephrased(content)


def clean_rephrased(text: str) -> str:
    """
    The caption out of an LLM answer: first non-empty line, without a `Caption:` prefix or surrounding quotes.

    Example:

    ```python
    >>> clean_rephrased('Caption: "A dog barks while rain falls."\\n')
    'A dog barks while rain falls.'

    ```
    """
    if not isinstance(text, str):
        raise ValueError(f"the rephraser returned {type(text).__name__}, not text")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        raise ValueError("the rephraser returned an empty answer")
    line = re.sub(r"^(caption\s*:\s*)", "", lines[0], flags=re.IGNORECASE).strip()
    line = line.strip("\"'“”").strip()
    if not line:
        raise ValueError("the rephraser returned an empty caption")
    return line


@dataclass
class RephraseReport:
    """What [`rephrase_prompts`] did: `requested`, `rephrased`, `failed` counts and the first `errors`."""

    requested: int = 0
    rephrased: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def rephrase_prompts(
    prompts: Sequence[TTAPrompt], rephraser: Callable[[str], str], *, max_errors_kept: int = 10
) -> tuple[list[TTAPrompt], RephraseReport]:
    """
    Rephrase each prompt with an LLM; a prompt whose call fails keeps its joined text and is counted.

    Args:
        prompts (`Sequence[TTAPrompt]`):
            Prompts from [`build_tta_prompts`].
        rephraser (`Callable[[str], str]`):
            E.g. an [`OpenAICompatibleRephraser`]; any exception it raises counts as a failure.
        max_errors_kept (`int`, *optional*, defaults to `10`):
            How many error messages the report keeps.

    Returns:
        `tuple[list[TTAPrompt], RephraseReport]`: the prompts (labels, order and task unchanged) and the counts.
        Failures are logged as a warning with their number.
    """
    report = RephraseReport(requested=len(prompts))
    out = []
    for p in prompts:
        try:
            text = clean_rephrased(rephraser(p.original_prompt))
        except (OSError, ValueError, urllib.error.URLError, json.JSONDecodeError) as error:
            report.failed += 1
            if len(report.errors) < max_errors_kept:
                report.errors.append(f"{p.original_prompt!r}: {type(error).__name__}: {error}")
            out.append(p)
            continue
        report.rephrased += 1
        out.append(replace(p, prompt=text, rephrased=True))
    if report.failed:
        logger.warning(
            "rephrasing failed for %d of %d prompts; they keep their joined text (first error: %s)",
            report.failed,
            report.requested,
            report.errors[0] if report.errors else "?",
        )
    return out, report


def _filter_words_in(caption: str, words: Sequence[str]) -> list[str]:
    tokens = re.findall(r"[a-z]+", caption.lower())
    return [t for t in tokens if t in words]


def split_multi_event_captions(
    captions: Sequence[str],
    labels: Sequence[Sequence[str]] | None = None,
    *,
    words: Sequence[str] = TEST_FILTER_WORDS,
) -> dict[str, list[int]]:
    """
    BATON's evaluation filter (section 4.2): keep captions containing one of `words`, split into 2- and 3-event subsets.

    With `labels` (a clip's event labels, as AudioCaps metadata gives) a caption's event count is its number of
    labels; without them it is the number of filter words it contains plus one ("a dog barks and then a car passes"
    counts `and`, `then` -> 3). Captions with another count are left out.

    Args:
        captions (`Sequence[str]`):
            Test captions.
        labels (`Sequence[Sequence[str]]`, *optional*):
            Labels of each caption's clip.
        words (`Sequence[str]`, *optional*, defaults to `TEST_FILTER_WORDS`):
            The filter words, matched as whole words.

    Returns:
        `dict[str, list[int]]`: row indices of the `"integrity"` (2-event) and `"temporal"` (3-event) subsets.

    Example:

    ```python
    >>> split_multi_event_captions(["a dog barks and a cat meows", "rain falls", "a bell rings then a man speaks after"])
    {'integrity': [0], 'temporal': [2]}

    ```
    """
    if labels is not None and len(labels) != len(captions):
        raise ValueError(f"{len(captions)} captions but {len(labels)} label lists")
    words = tuple(w.lower() for w in words)
    subsets: dict[str, list[int]] = {"integrity": [], "temporal": []}
    for i, caption in enumerate(captions):
        found = _filter_words_in(caption, words)
        if not found:
            continue
        n_events = len(set(labels[i])) if labels is not None else len(found) + 1
        if n_events == 2:
            subsets["integrity"].append(i)
        elif n_events == 3:
            subsets["temporal"].append(i)
    return subsets


def world_event_phrases() -> dict[str, tuple[str, ...]]:
    """
    Event phrases of the synthetic world ([`~hfpref.data.synthetic.audio_world.EVENTS`]): the noun phrases of each event kind, which
    read well after every conjunction ("followed by a wailing siren"), and which the world's oracle parses back.

    Example:

    ```python
    >>> from hfpref.data.synthetic.audio_world import EVENT_KINDS, parse_events
    >>> prompt = build_tta_prompts(EVENT_KINDS, 1, "temporal", seed=1, event_phrases=world_event_phrases())[0]
    >>> parse_events(prompt.prompt) == list(prompt.order)
    True

    ```
    """
    from ..data.synthetic.audio_world import EVENTS

    return {name: event.noun_phrases for name, event in EVENTS.items()}
