"""Column schemas of the preference datasets hfpref trains on, and their validation.

Four kinds of dataset (see `DESIGN.md`, section 2):

- `"pairwise"`: an audio clip and two captions, one preferred (`audio`, `chosen`, `rejected`; optional `margin`,
  `category`, `clip_id`). Reward models are trained on it with a Bradley-Terry loss.
- `"pointwise"`: binary feedback on an (audio, text) pair (`audio`, `caption` or `prompt`, `label` in {0, 1}), as in
  BATON, where `prompt` is the text that generated the audio.
- `"speech_caption"`: a speech clip and its emotion caption (`speech`, `caption`).
- `"dpo"`: TRL's preference format (`prompt`, `chosen`, `rejected`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets import Dataset, DatasetDict


@dataclass(frozen=True)
class PreferenceSchema:
    r"""
    The columns one kind of preference dataset must and may have.

    Args:
        kind (`str`):
            Name of the kind, e.g. `"pairwise"`.
        description (`str`):
            One sentence saying what a row is, used in dataset cards.
        required (`tuple[tuple[str, ...], ...]`):
            Required columns. Each entry lists the names one column may take; the first is the canonical one (the
            pointwise text column may be `caption` or `prompt`).
        optional (`tuple[str, ...]`, *optional*, defaults to `()`):
            Columns that are understood when present.
        audio_column (`str` or `None`, *optional*, defaults to `None`):
            The required column holding audio, if any.
        text_column (`str` or `None`, *optional*, defaults to `None`):
            The required column holding the single text of a row (pointwise and speech-caption kinds), if any.
        label_column (`str` or `None`, *optional*, defaults to `None`):
            The required column holding a binary label (pointwise kind), if any.
    """

    kind: str
    description: str
    required: tuple[tuple[str, ...], ...]
    optional: tuple[str, ...] = field(default=())
    audio_column: str | None = None
    text_column: str | None = None
    label_column: str | None = None


SCHEMAS: dict[str, PreferenceSchema] = {
    "pairwise": PreferenceSchema(
        kind="pairwise",
        description="an audio clip with two captions, the human-preferred `chosen` and the dispreferred `rejected`",
        required=(("audio",), ("chosen",), ("rejected",)),
        optional=("margin", "category", "clip_id"),
        audio_column="audio",
    ),
    "pointwise": PreferenceSchema(
        kind="pointwise",
        description=(
            "binary human feedback on an (audio, text) pair: `label` is 1 when the audio matches its caption or "
            "prompt and 0 when it does not"
        ),
        required=(("audio",), ("caption", "prompt"), ("label",)),
        optional=("clip_id", "category"),
        audio_column="audio",
        text_column="caption",
        label_column="label",
    ),
    "speech_caption": PreferenceSchema(
        kind="speech_caption",
        description="a speech clip with a natural-language caption of the emotion it conveys",
        required=(("speech",), ("caption",)),
        optional=("clip_id",),
        audio_column="speech",
        text_column="caption",
    ),
    "dpo": PreferenceSchema(
        kind="dpo",
        description="a prompt with a preferred completion `chosen` and a dispreferred one `rejected` (TRL's format)",
        required=(("prompt",), ("chosen",), ("rejected",)),
        optional=("margin",),
    ),
}

# Descriptions used for the column tables of dataset cards; columns not listed here get an empty description.
COLUMN_DESCRIPTIONS: dict[str, str] = {
    "audio": "the audio clip (`datasets.Audio`)",
    "speech": "the speech clip (`datasets.Audio`)",
    "chosen": "the preferred caption (or completion)",
    "rejected": "the dispreferred caption (or completion)",
    "prompt": "the text prompt (text-to-audio prompt for pointwise feedback, model prompt for DPO)",
    "caption": "a caption of the clip",
    "label": "binary human judgment: 1 = the audio matches the text, 0 = it does not",
    "margin": "strength of the preference (for FENSE pairs: the absolute vote sum, 1 to 4)",
    "category": "comparison category (FENSE: HC, HI, HM, MM; `synthetic` for synthetic negatives)",
    "clip_id": "identifier of the audio clip; splits are made by clip so no clip is on both sides",
    "pair_id": "identifier of the pair, `<clip_id>-<slot>`",
    "entry_index": "position of the clip in the source file",
    "audio_id": "upstream clip identifier (AudioCaps: YouTube id); may be empty",
    "raw_name": "upstream audio file name; may be empty",
    "slot": "upstream comparison slot (HC, HI, HM, MM_1 ... MM_5)",
    "chosen_source": "where the chosen caption came from (human caption id, other clip, or captioning system)",
    "rejected_source": "where the rejected caption came from",
    "references": "the clip's human reference captions",
    "chosen_references": "references to score `chosen` against (FENSE protocol: a judged human caption is removed)",
    "rejected_references": "references to score `rejected` against (FENSE protocol)",
    "caption_1": "first candidate as shown to annotators",
    "caption_2": "second candidate as shown to annotators",
    "source_1": "where `caption_1` came from",
    "source_2": "where `caption_2` came from",
    "votes": "the annotators' votes in the original orientation: +1 = caption_1 better, -1 = caption_2, 0 = tie",
    "vote_sum": "sum of `votes`, from -4 to 4 (sign gives the preferred caption)",
    "preferred": "which original candidate won: 1 = caption_1, 2 = caption_2, 0 = tie",
    "rejected_clip_id": "the clip whose caption serves as the synthetic negative",
}


def _columns_of(ds: Dataset) -> list[str]:
    columns = ds.column_names
    if columns is None:  # an IterableDataset whose features are unknown until iterated
        raise ValueError("Cannot validate a dataset with unknown columns; resolve its features first.")
    return list(columns)


def _validate_split(
    ds: Dataset,
    schema: PreferenceSchema,
    *,
    audio_column: str | None,
    text_column: str | None,
    label_column: str | None,
    require_audio: bool,
    where: str,
) -> None:
    columns = _columns_of(ds)
    overrides = {schema.audio_column: audio_column, schema.text_column: text_column, schema.label_column: label_column}
    missing = []
    for names in schema.required:
        if names[0] == schema.audio_column and not require_audio:
            continue
        if overrides.get(names[0]) is not None:
            names = (overrides[names[0]],)
        if not any(name in columns for name in names):
            missing.append(" or ".join(repr(name) for name in names))
    if missing:
        raise ValueError(
            f"{where}is not a valid {schema.kind!r} preference dataset: missing column(s) {', '.join(missing)}; "
            f"it has {columns}. A {schema.kind} dataset needs {[' or '.join(n) for n in schema.required]}."
        )
    if len(ds) == 0:
        raise ValueError(f"{where}is empty: a {schema.kind!r} preference dataset needs at least one row.")
    if schema.label_column is not None:
        label_column = label_column or schema.label_column
        for index, label in enumerate(ds.select_columns([label_column])[label_column]):
            if isinstance(label, float) and label.is_integer():
                label = int(label)
            if label is None or isinstance(label, str) or label not in (0, 1):
                raise ValueError(
                    f"{where}has a label outside {{0, 1}} in row {index}: {label!r}. Pointwise labels are 1 "
                    "(audio matches the text) or 0 (it does not); drop skipped items before validating."
                )


def validate_dataset(
    ds: Dataset | DatasetDict,
    kind: str,
    *,
    audio_column: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    require_audio: bool = True,
) -> None:
    r"""
    Check that a dataset has the columns of a preference `kind`, and raise a `ValueError` saying what is wrong.

    Args:
        ds (`datasets.Dataset` or `datasets.DatasetDict`):
            The dataset; every split of a `DatasetDict` is checked.
        kind (`str`):
            One of `"pairwise"`, `"pointwise"`, `"speech_caption"`, `"dpo"`.
        audio_column (`str`, *optional*):
            Name of the audio column when it is not the kind's default (`audio`, or `speech` for speech captions).
        text_column (`str`, *optional*):
            Name of the text column of pointwise and speech-caption datasets when it is not the default (`caption`
            or `prompt` for pointwise, `caption` for speech captions).
        label_column (`str`, *optional*):
            Name of the label column of pointwise datasets when it is not `label`.
        require_audio (`bool`, *optional*, defaults to `True`):
            Whether the audio column must be present. Set it to `False` for text-only pairs whose audio is joined
            later by `clip_id` (e.g. the FENSE judgments, which ship without audio).

    Raises:
        `ValueError`: for an unknown kind (listing the valid ones), missing columns (naming them and listing the
        present ones), an empty dataset or split, or a pointwise label outside {0, 1} (naming the first such row).

    Example:

    ```python
    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"audio": ["a.wav"], "chosen": ["a dog barks"], "rejected": ["a cat meows"]})
    >>> validate_dataset(ds, "pairwise")
    >>> validate_dataset(ds.remove_columns("rejected"), "pairwise")
    Traceback (most recent call last):
    ...
    ValueError: Dataset is not a valid 'pairwise' preference dataset: missing column(s) 'rejected'; it has ['audio', 'chosen']. A pairwise dataset needs ['audio', 'chosen', 'rejected'].

    ```
    """
    if kind not in SCHEMAS:
        raise ValueError(f"Unknown preference dataset kind {kind!r}; valid kinds are {sorted(SCHEMAS)}.")
    schema = SCHEMAS[kind]
    if audio_column is not None and schema.audio_column is None:
        raise ValueError(f"kind={kind!r} has no audio column, so audio_column={audio_column!r} cannot apply.")
    if text_column is not None and schema.text_column is None:
        raise ValueError(f"kind={kind!r} has no single text column, so text_column={text_column!r} cannot apply.")
    if label_column is not None and schema.label_column is None:
        raise ValueError(f"kind={kind!r} has no label column, so label_column={label_column!r} cannot apply.")
    splits = ds.items() if isinstance(ds, DatasetDict) else [(None, ds)]
    for split, part in splits:
        where = "Dataset " if split is None else f"Split {split!r} "
        _validate_split(
            part,
            schema,
            audio_column=audio_column,
            text_column=text_column,
            label_column=label_column,
            require_audio=require_audio,
            where=where,
        )
