"""
Acoustic prompts (AlignCap, [Liang et al., 2024](https://huggingface.co/papers/2410.19134), section 3.1, eq. 1):
emotional clues parsed out of captions and written into the template `Feeling e1, e2, ..., and en`.

The parser is NLTK's, run entirely offline. NLTK's statistical POS taggers and Punkt need data packages that are
downloaded at run time (`nltk.download`), which fails here, and no PyPI package we would trust ships them; so the
parser uses only NLTK parts that need no data:

1. `nltk.tokenize.RegexpTokenizer` splits the caption into words (hyphenated words kept whole) and punctuation;
2. `nltk.tag.RegexpTagger` tags each word from the project lexicon ([`~hfpref.prompts.clue_vocabulary`]): a clue
   form is `CLUE`, a negator `NEG`, `or`/`nor` are `OR`, articles `DT`, intensifiers and other `-ly` words `RB`,
   anything else `NN` (the only distinctions the grammar needs);
3. `nltk.RegexpParser` chunks `NEGATED` spans (`not angry`, `neither loud nor fast`, `not a happy voice`) and `CLUE`
   chunks; clues inside a negated span are dropped, the others are mapped to their canonical clue (`slowly` ->
   `slow`, `anger` -> `angry`), deduplicated, in order of first mention.

Filtering by the vocabulary is what the paper does; a clue word the vocabulary lacks is not found, so extend
[`~hfpref.prompts.clue_vocabulary.CLUE_VOCABULARY`] for a new domain.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence

from .clue_vocabulary import CLUE_CATEGORIES, CLUE_VOCABULARY, MULTIWORD_FORMS, NEGATORS


PROMPT_TEMPLATE_HEAD = "Feeling"
_INTENSIFIERS = ("very", "quite", "rather", "too", "so", "really", "slightly", "somewhat", "extremely", "fairly")
_GRAMMAR = r"""
NEGATED: {<NEG><RB|DT>*<CLUE>(<OR><RB|DT>*<CLUE>)*}
CLUE: {<CLUE>}
"""


@functools.lru_cache(maxsize=1)
def _surface_to_clue() -> dict[str, str]:
    table: dict[str, str] = {}
    for clues in CLUE_VOCABULARY.values():
        for clue, forms in clues.items():
            for form in (clue, *forms):
                if table.setdefault(form, clue) != clue:
                    raise ValueError(f"clue vocabulary: {form!r} names both {table[form]!r} and {clue!r}")
    return table


@functools.lru_cache(maxsize=1)
def clue_category() -> dict[str, str]:
    """Canonical clue -> its category (`emotion`, `pitch`, `rhythm`, `volume`, `intonation`, `tone`)."""
    return {clue: category for category, clues in CLUE_VOCABULARY.items() for clue in clues}


@functools.lru_cache(maxsize=1)
def _parser() -> tuple:
    """nltk's tokenizer, tagger and chunk parser for clues (nltk, the speech extra, is imported on first use)."""
    from nltk import RegexpParser  # noqa: PLC0415
    from nltk.tag import RegexpTagger  # noqa: PLC0415
    from nltk.tokenize import RegexpTokenizer  # noqa: PLC0415

    def alternatives(words: Iterable[str]) -> str:
        return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))

    tagger = RegexpTagger(
        [
            (rf"^({alternatives(_surface_to_clue())})$", "CLUE"),
            (rf"^({alternatives(n for n in NEGATORS if n != 'nor')})$", "NEG"),
            (r"^(or|nor)$", "OR"),
            (r"^(a|an|the)$", "DT"),
            (rf"^({alternatives(_INTENSIFIERS)}|\w+ly)$", "RB"),
            (r".*", "NN"),
        ]
    )
    return RegexpTokenizer(r"[a-z]+(?:[-'][a-z]+)*|[^\sa-z]"), tagger, RegexpParser(_GRAMMAR)


def _normalise(caption: str) -> str:
    text = caption.lower().replace("\u2019", "'")
    for phrase, joined in MULTIWORD_FORMS.items():
        text = re.sub(rf"\b{re.escape(phrase)}\b", joined, text)
    return text


def extract_emotion_clues(captions: str | Sequence[str]) -> list[str]:
    """
    The emotional clues of one caption, or of a caption series `y_i = {c_i^1, ..., c_i^m}` (eq. 1's `G_Parser`):
    canonical clues in order of first mention, without duplicates, negated mentions left out.

    Args:
        captions (`str` or `Sequence[str]`): one caption, or several captions of the same clip.

    Returns:
        `list[str]`: canonical clues from [`~hfpref.prompts.clue_vocabulary.CLUE_VOCABULARY`].

    Example:
    ```python
    >>> extract_emotion_clues("A woman speaks slowly and quietly in a deep voice; she is not angry but sad.")
    ['slow', 'soft', 'low-pitched', 'sad']
    >>> extract_emotion_clues(["He sounds furious.", "A loud, high pitched man, angry and neither calm nor happy."])
    ['angry', 'loud', 'high-pitched']

    ```
    """
    if isinstance(captions, str):
        captions = [captions]
    tokenizer, tagger, parser = _parser()
    surface = _surface_to_clue()
    found: dict[str, None] = {}
    for caption in captions:
        if not isinstance(caption, str):
            raise TypeError(f"captions must be strings, got {type(caption).__name__}: {caption!r}")
        tokens = tokenizer.tokenize(_normalise(caption))
        if not tokens:
            continue
        for chunk in parser.parse(tagger.tag(tokens)):
            if not isinstance(chunk, tuple) and chunk.label() == "CLUE":  # an nltk Tree; untagged words are tuples
                found.setdefault(surface[chunk[0][0]])
    return list(found)


def acoustic_prompt(clues: Sequence[str]) -> str:
    """
    Fill the template `Feeling e1, e2, ..., and en` (AlignCap's `P_T`) with emotional clues; `""` when there are
    none (no acoustic prompt rather than an empty "Feeling").

    Example:
    ```python
    >>> acoustic_prompt(["sad", "slow", "soft"])
    'Feeling sad, slow, and soft'
    >>> acoustic_prompt(["sad", "slow"]), acoustic_prompt(["sad"]), acoustic_prompt([])
    ('Feeling sad and slow', 'Feeling sad', '')

    ```
    """
    clues = list(clues)
    if not clues:
        return ""
    if len(clues) == 1:
        body = clues[0]
    elif len(clues) == 2:
        body = f"{clues[0]} and {clues[1]}"
    else:
        body = ", ".join(clues[:-1]) + f", and {clues[-1]}"
    return f"{PROMPT_TEMPLATE_HEAD} {body}"


def caption_acoustic_prompt(captions: str | Sequence[str]) -> str:
    """
    `P_act = Insert(P_T, idx, G_Parser(y_i))`: the acoustic prompt of a caption or caption series.

    Example:
    ```python
    >>> caption_acoustic_prompt("A man speaks angrily in a loud, high voice.")
    'Feeling angry, loud, and high-pitched'

    ```
    """
    return acoustic_prompt(extract_emotion_clues(captions))


def teacher_prompt(caption: str, instruction: str, clues: Sequence[str] | None = None) -> str:
    """
    The teacher's text prefix `P_act + P_sem + P_instruct` (AlignCap eq. 2): the acoustic prompt, the caption as the
    semantic prompt, then the instruction; parts are separated by `". "` / `" "` and an empty acoustic prompt is left
    out.

    Args:
        caption (`str`): the clip's caption (the semantic prompt).
        instruction (`str`): the user's instruction, as the student also gets it.
        clues (`Sequence[str]`, *optional*): clues to use instead of parsing `caption`.

    Example:
    ```python
    >>> teacher_prompt("A woman speaks softly.", "Describe the speaker's emotion.")
    "Feeling soft. A woman speaks softly. Describe the speaker's emotion."

    ```
    """
    prompt = acoustic_prompt(extract_emotion_clues(caption) if clues is None else clues)
    semantic = caption.strip()
    parts = [f"{prompt}." if prompt else "", semantic, instruction.strip()]
    return " ".join(p for p in parts if p)


def clues_by_category(clues: Sequence[str]) -> dict[str, list[str]]:
    """
    Group canonical clues by category, in [`CLUE_CATEGORIES`] order (categories without clues are left out).

    Example:
    ```python
    >>> clues_by_category(["sad", "slow", "soft", "rising"])
    {'emotion': ['sad'], 'rhythm': ['slow'], 'volume': ['soft'], 'intonation': ['rising']}

    ```
    """
    categories = clue_category()
    unknown = [c for c in clues if c not in categories]
    if unknown:
        raise ValueError(f"unknown clue(s) {unknown}; canonical clues are {sorted(categories)}")
    grouped = {category: [c for c in clues if categories[c] == category] for category in CLUE_CATEGORIES}
    return {category: found for category, found in grouped.items() if found}
