"""Load a dataset from wherever users keep one, without ever letting `datasets` decode audio."""

from pathlib import Path

from datasets import Audio, Dataset, DatasetDict, load_dataset, load_from_disk

from .audio import ensure_audio_column


def _without_decoding(ds: Dataset) -> Dataset:
    for name, feature in ds.features.items():
        if isinstance(feature, Audio):
            ds = ensure_audio_column(ds, name)
    return ds


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
        ds = load_dataset(file_types[path.suffix.lower()], data_files=str(path))
    elif path.is_dir():
        ds = load_dataset(str(path))
    elif path.suffix.lower() in file_types or str(name_or_path).startswith((".", "/", "~")):
        raise ValueError(f"{name_or_path!s} looks like a local path but does not exist.")
    else:
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
