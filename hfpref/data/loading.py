"""Load a dataset from wherever users keep one, without ever letting `datasets` decode audio."""

import json
from pathlib import Path

from datasets import Audio, Dataset, DatasetDict, load_dataset, load_from_disk

from .audio import ensure_audio_column


def _without_decoding(ds: Dataset) -> Dataset:
    for name, feature in ds.features.items():
        if isinstance(feature, Audio):
            ds = ensure_audio_column(ds, name)
    return ds


TEXT_FILE_TYPES = (".json", ".jsonl", ".csv")


def check_text_data_file(path: str | Path) -> None:
    r"""
    Refuse a text data file that is not valid UTF-8 (or a JSON Lines file with a line that is not a JSON object),
    naming the file, line and byte.

    `datasets` reads JSON and CSV files as UTF-8 and fails deep inside pyarrow or pandas on anything else, without
    saying which file; this reads the file once, line by line, before it does.

    Args:
        path (`str` or `Path`): a `.json`, `.jsonl` or `.csv` file.

    Raises:
        `ValueError`: naming the file, the line (1-based), the byte offset in that line and the bytes found.

    Example:

    ```python
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "captions.jsonl"
    >>> _ = path.write_bytes('{"caption": "a dog barks"}\n{"caption": "café"}\n'.encode("latin-1"))
    >>> check_text_data_file(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ...captions.jsonl: line 2 is not valid UTF-8 (byte 16 of the line, ...): re-save the file as UTF-8 ...

    ```
    """
    json_lines = Path(path).suffix.lower() == ".jsonl"
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(
                    f"{path}: line {number} is not valid UTF-8 (byte {error.start} of the line, "
                    f"{line[error.start : error.start + 8]!r}): re-save the file as UTF-8 "
                    "(e.g. iconv -f latin1 -t utf-8)."
                ) from None
            if json_lines and text.strip():
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as error:
                    raise ValueError(
                        f"{path}: line {number} is not valid JSON ({error.msg} at column {error.colno}); "
                        "a .jsonl file holds one JSON object per line."
                    ) from None
                if not isinstance(row, dict):
                    raise ValueError(
                        f"{path}: line {number} holds a JSON {type(row).__name__}, not an object; a .jsonl file holds "
                        "one JSON object per line."
                    )


# The quickstart's output folder (`hfpref quickstart --output-dir <dir>`), declared here, at the bottom of the layers,
# so that a recipe run on its own (one of recipes/quickstart/<recipe>/config_small.yaml before the stages it reads)
# names the stage that writes a missing input without importing the quickstart; the quickstart runs these stages and
# reads its layout from here. In order: each stage, and what it leaves under <dir>.
QUICKSTART_STAGE_OUTPUTS = {
    "world": ["world/dataset_dict.json"],
    "clap": ["clap/model.safetensors"],
    "sft": ["sft/model.safetensors"],
    "preferences": ["preferences/dataset_dict.json", "preference-judgments"],
    "reward": ["reward-model/model.safetensors"],
    "selection": ["selection-reward-model/model.safetensors"],
    "rl": ["rl/model.safetensors"],
    "evaluate": ["evaluation.jsonl"],
}
QUICKSTART_STAGES = list(QUICKSTART_STAGE_OUTPUTS)
# The recipe (`hfpref.scripts.<recipe>`, `recipes/<recipe>.py`) that runs each training stage.
QUICKSTART_RECIPES = {
    "clap": "clap_contrastive",
    "sft": "caption_sft",
    "reward": "reward_model",
    "selection": "reward_model",  # the held-out reward model that picks the RL checkpoint: the reward recipe again
    "rl": "caption_rl",
}
# Where the quickstart records its finished stages, under <dir>.
QUICKSTART_RECORDS = "stages"


def _upstream_stage(path: Path) -> str | None:
    """The quickstart stage whose output `path` is, when it sits where that stage writes (`<output_dir>/<name>`)."""
    parent = path.parent
    # Only a quickstart output folder, or one not created yet, is read as the quickstart's layout.
    if parent.is_dir() and not (parent / QUICKSTART_RECORDS).is_dir():
        return None
    for stage, outputs in QUICKSTART_STAGE_OUTPUTS.items():
        if any(output.split("/")[0] == path.name for output in outputs):
            return stage
    return None


def check_input_exists(name_or_path: str | Path, what: str) -> None:
    """
    Refuse a local input that does not exist, before a loader turns it into a misleading Hub error.

    A path that looks local ([`~hfpref.utils.safe_loading.looks_local`]: `./x`, `/x`, `a/b/c`) must exist. When it is
    where a quickstart stage writes its output (`<output_dir>/clap`, `<output_dir>/reward-model`, ...), the error
    names that stage and how to run it; when `<output_dir>` holds a multi-seed quickstart, it names the seeds'
    `seed-<k>/<name>` folders. Hub ids pass through.

    Args:
        name_or_path (`str` or `Path`): The input.
        what (`str`): What it is, for the message (e.g. `"the CLAP (clap_model_name_or_path)"`).

    Raises:
        `FileNotFoundError`: naming the path, and the stage to run first where one writes it.

    Example:
    ```python
    >>> check_input_exists("laion/clap-htsat-unfused", "the CLAP")  # a Hub id: nothing to check here

    ```
    """
    from ..utils.safe_loading import looks_local

    name = str(name_or_path)
    if Path(name).expanduser().exists() or not looks_local(name):
        return
    path = Path(name).expanduser()
    seeded = sorted(path.parent.glob(f"seed-*/{path.name}")) if path.parent.is_dir() else []
    if seeded:  # a multi-seed quickstart keeps each seed's run in <output_dir>/seed-<k>/
        shown = ", ".join(str(p) for p in seeded[:5])
        raise FileNotFoundError(
            f"{what} {name} does not exist: {path.parent} holds a multi-seed quickstart, each seed in its own "
            f"seed-<k>/ folder ({shown}). Point the stage at one seed's, e.g. {seeded[0]}, and its output_dir at that "
            "seed's folder too."
        )
    stage = _upstream_stage(path)
    hint = ""
    if stage is not None:
        recipe = QUICKSTART_RECIPES.get(stage)
        how = (
            f"`hfpref quickstart --output-dir {path.parent}`, or the stage alone: `accelerate launch "
            f"recipes/{recipe}.py --config recipes/quickstart/{recipe}/config_small.yaml`"
            if recipe
            else f"`hfpref quickstart --output-dir {path.parent}`"
        )
        position = f"{QUICKSTART_STAGES.index(stage) + 1} of {len(QUICKSTART_STAGES)}"
        hint = (
            f" In the quickstart's layout it is the output of stage '{stage}' ({position}), "
            f"which has not run: run {how} first."
        )
    raise FileNotFoundError(f"{what} {name} does not exist (a local path, not a Hub id).{hint}")


def load_any_dataset(name_or_path: str | Path, *, split: str | None = None) -> Dataset | DatasetDict:
    """
    Load a dataset from the Hub, a `save_to_disk` folder, a folder of data files, or a
    `.json`/`.jsonl`/`.csv`/`.parquet` file; audio columns come back as `datasets.Audio(decode=False)`.

    Args:
        name_or_path (`str` or `Path`):
            A Hub dataset id (`"user/name"`), a local folder, or a data file.
        split (`str`, *optional*):
            Split to return. Without it a `DatasetDict` is returned, except for a `save_to_disk` folder holding
            a single `Dataset`. A single data file is loaded as split `"train"`.
    """
    path = Path(name_or_path)
    file_types = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        ds = load_from_disk(str(path))
    elif path.is_file():
        if path.suffix.lower() not in file_types:
            raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use one of {sorted(file_types)}.")
        if path.suffix.lower() in TEXT_FILE_TYPES:
            check_text_data_file(path)
        ds = load_dataset(file_types[path.suffix.lower()], data_files=str(path))
    elif path.is_dir():
        for file in sorted(path.rglob("*")):
            if file.suffix.lower() in TEXT_FILE_TYPES and file.is_file():
                check_text_data_file(file)
        ds = load_dataset(str(path))
    elif path.suffix.lower() in file_types:
        raise ValueError(f"{name_or_path!s} looks like a local path but does not exist.")
    else:
        check_input_exists(name_or_path, "the dataset")
        ds = load_dataset(str(name_or_path))

    if split is not None:
        if isinstance(ds, DatasetDict):
            if split not in ds:
                raise ValueError(f"{name_or_path!s} has no split {split!r}; its splits are {list(ds)}.")
            ds = ds[split]
        elif split != "train":
            raise ValueError(f"{name_or_path!s} holds a single dataset; split={split!r} does not apply.")
    if isinstance(ds, DatasetDict):
        return DatasetDict({name: _without_decoding(part) for name, part in ds.items()})
    return _without_decoding(ds)


def get_split(data: DatasetDict, split: str, *, name: str) -> Dataset:
    """
    The split `split` of `data`; `"a+b"` joins splits `a` and `b` in that order, as `datasets`' split strings do.

    Args:
        data (`DatasetDict`): what [`load_any_dataset`] returned.
        split (`str`): a split name, or names joined by `+`.
        name (`str`): the dataset's name, for error messages.

    Raises:
        `ValueError`: naming the dataset, the missing split and the splits it has.

    Example:

    ```python
    >>> from datasets import Dataset, DatasetDict
    >>> data = DatasetDict(train=Dataset.from_dict({"x": [1, 2]}), extra=Dataset.from_dict({"x": [3]}))
    >>> list(get_split(data, "train+extra", name="clips")["x"])
    [1, 2, 3]

    ```
    """
    parts = [part.strip() for part in split.split("+")]
    for part in parts:
        if part not in data:
            raise ValueError(f"{name} has no split {part!r}; it has {list(data)}")
    if len(parts) == 1:
        return data[parts[0]]
    from datasets import concatenate_datasets

    return concatenate_datasets([data[part] for part in parts])


def select_splits(
    data: Dataset | DatasetDict,
    *,
    name: str,
    train_split: str = "train",
    test_split: str | None = None,
    test_size: float = 0.1,
    seed: int = 0,
    stratify_by_column: str | None = None,
) -> DatasetDict:
    """
    `DatasetDict(train=..., test=...)` from a loaded dataset: its named splits when it has them, otherwise a seeded
    `test_size` hold-out of `train_split` (or of the single dataset).

    Args:
        data (`Dataset` or `DatasetDict`): what [`load_any_dataset`] returned.
        name (`str`): the dataset's name, for error messages.
        train_split (`str`, *optional*, defaults to `"train"`): split to train on (`"a+b"` joins two splits).
        test_split (`str`, *optional*): split to evaluate on; without one, `test_size` of the rows are held out.
        test_size (`float`, *optional*, defaults to `0.1`): share held out when there is no test split.
        seed (`int`, *optional*, defaults to `0`): seed of the hold-out.
        stratify_by_column (`str`, *optional*): a `ClassLabel` column the hold-out keeps balanced.
    """
    if isinstance(data, DatasetDict):
        train = get_split(data, train_split, name=name)
        if test_split:
            return DatasetDict(train=train, test=get_split(data, test_split, name=name))
        data = train
    return data.train_test_split(test_size=test_size, seed=seed, stratify_by_column=stratify_by_column)


def check_caption_rows(ds: Dataset, column: str, *, name: str) -> None:
    r"""
    Refuse a row whose caption is empty or whitespace only, or not text, naming the row and the column.

    A captioner trained on an empty caption learns to stop at once; a reference that is empty scores every caption
    against nothing. `column` holds one caption per row (`caption`) or a list of them (`references`: the list must hold
    at least one caption, and each must be text). Rows are counted from 0, in the order of `ds`.

    Args:
        ds (`datasets.Dataset`): the data.
        column (`str`): the caption column; a column `ds` lacks is not checked.
        name (`str`): how the message names `ds` (its file and split).

    Raises:
        `ValueError`: naming `name`, the row, the column (and the reference's place in its list) and the value.

    Example:

    ```python
    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"caption": ["a dog barks", "  "]})
    >>> check_caption_rows(ds, "caption", name="clips.jsonl, split 'train'")
    Traceback (most recent call last):
    ...
    ValueError: clips.jsonl, split 'train': row 1, column 'caption' is empty ('  '); fill it in or remove the row.

    ```
    """
    if column not in ds.column_names:
        return
    for row, value in enumerate(ds[column]):
        if isinstance(value, (list, tuple)):
            if not value:
                raise ValueError(
                    f"{name}: row {row}, column {column!r} holds no caption ([]); fill it in or remove the row."
                )
            for index, caption in enumerate(value):
                if not isinstance(caption, str) or not caption.strip():
                    what = "is empty" if isinstance(caption, str) or caption is None else "is not text"
                    raise ValueError(
                        f"{name}: row {row}, column {column!r}, caption {index} {what} ({caption!r}); fill it in or "
                        "remove it."
                    )
        elif not isinstance(value, str) or not value.strip():
            what = "is empty" if isinstance(value, str) or value is None else "is not text"
            raise ValueError(f"{name}: row {row}, column {column!r} {what} ({value!r}); fill it in or remove the row.")
