"""Train/test preference data for reward models, from any of the sources a reward recipe accepts."""

import logging
from collections.abc import Callable
from pathlib import Path

from datasets import Dataset, DatasetDict, concatenate_datasets

from .fense import attach_audio, load_fense
from .loading import get_split, load_any_dataset
from .preference import (
    add_synthetic_negatives,
    drop_uninformative_rows,
    load_binary_feedback,
    split_by_clip,
)
from .schemas import validate_dataset


logger = logging.getLogger(__name__)

# `synthetic_data(n_clips, pairwise=..., seed=...)`: the reward data of a synthetic world, labelled by a judge.
SyntheticData = Callable[..., Dataset]

PAIRWISE_KEEP = ["clip_id", "audio", "chosen", "rejected", "category"]
PAIRWISE_EMBEDDINGS = ["audio_embedding", "chosen_embedding", "rejected_embedding"]
POINTWISE_EMBEDDINGS = ["audio_embedding", "text_embedding"]


def embedding_columns(pairwise: bool) -> list[str]:
    """The precomputed embedding columns a reward model trains on: pairwise or pointwise."""
    return PAIRWISE_EMBEDDINGS if pairwise else POINTWISE_EMBEDDINGS


def has_embeddings(ds: Dataset, pairwise: bool, name: str) -> bool:
    """
    Whether `ds` carries precomputed embedding columns (then it is trained on as is); some but not all is refused.
    """
    columns = embedding_columns(pairwise)
    present = [c for c in columns if c in ds.column_names]
    if present and len(present) != len(columns):
        raise ValueError(
            f"{name} has the precomputed embedding columns {present} but lacks "
            f"{[c for c in columns if c not in present]}: give all of {columns}, or none (then it is embedded)."
        )
    return bool(present)


def _load_source(args, pairwise: bool, synthetic_data: SyntheticData | None) -> Dataset | DatasetDict:
    if args.synthetic_clips:
        if synthetic_data is None:
            raise ValueError(
                f"synthetic_clips={args.synthetic_clips}: a judge labels the synthetic world's reward data; pass "
                "synthetic_data=hfpref.judges.oracle.make_oracle_reward_data"
            )
        return synthetic_data(args.synthetic_clips, pairwise=pairwise, seed=args.split_seed)
    if args.fense_files:
        parts = [attach_audio(load_fense(f), d) for f, d in zip(args.fense_files, args.fense_audio_dirs)]
        return concatenate_datasets(parts)
    path = Path(args.dataset_name)
    if not pairwise and path.is_file() and path.suffix.lower() in (".csv", ".json", ".jsonl"):
        return load_binary_feedback(
            path,
            audio_column=args.audio_column,
            text_column=args.text_column,
            strict=getattr(args, "strict_data", False),
        )
    return load_any_dataset(args.dataset_name)


def load_reward_splits(args, *, pairwise: bool, synthetic_data: SyntheticData | None = None) -> DatasetDict:
    """
    Train and test splits for a reward model, split by clip, with synthetic negatives on train when asked.

    Rows that would mislead training (an empty caption, or chosen == rejected) are dropped with a count, or refused
    when `args.strict_data` is set (see [`~hfpref.data.preference.drop_uninformative_rows`]).

    Args:
        args ([`~hfpref.scripts.utils.RewardScriptArguments`]):
            The data source and split settings.
        pairwise (`bool`):
            Pairwise (`chosen`/`rejected`) or pointwise (text column + `label`) data.
        synthetic_data (`Callable`, *optional*):
            Builds the data of the `synthetic_clips` source, `synthetic_data(n_clips, pairwise=..., seed=...)`: the
            synthetic world labelled by a judge, [`~hfpref.judges.oracle.make_oracle_reward_data`] (the data layer
            imports no judge, so the recipe hands it in). Needed only when `args.synthetic_clips` is set.

    Returns:
        `datasets.DatasetDict` with `"train"` and `"test"`.
    """
    data = _load_source(args, pairwise, synthetic_data)
    source = args.dataset_name or args.fense_files or f"the synthetic world of {args.synthetic_clips} clips"
    strict = getattr(args, "strict_data", False)
    text_columns = ["chosen", "rejected"] if pairwise else [args.text_column]
    pair_columns = ("chosen", "rejected") if pairwise else None
    named_eval = args.named_eval_datasets() if hasattr(args, "named_eval_datasets") else {}

    def informative(ds: Dataset, split: str | None, name: str | None = None) -> Dataset:
        name = name or (f"{source} (split {split!r})" if split else str(source))
        present = [c for c in text_columns if c in ds.column_names]
        if has_embeddings(ds, pairwise, name) and len(present) < len(text_columns):
            return ds  # precomputed features without (all) their texts: the trainer checks the vectors
        pairs = pair_columns if pair_columns and all(c in ds.column_names for c in pair_columns) else None
        return drop_uninformative_rows(ds, text_columns, pair_columns=pairs, strict=strict, name=name)

    if isinstance(data, DatasetDict):
        data = DatasetDict({split: informative(part, split) for split, part in data.items()})
    else:
        data = informative(data, None)
    if named_eval:
        # Named evaluation sets: the whole training source is trained on, each set evaluated on its own.
        if isinstance(data, DatasetDict):
            data = get_split(data, args.dataset_train_split, name=args.dataset_name)
        splits = DatasetDict(train=data)
        for name, eval_source in named_eval.items():
            splits[name] = informative(_load_eval_set(eval_source, name), None, f"eval set {name!r} ({eval_source})")
        return _checked(splits, args, pairwise)
    if isinstance(data, DatasetDict):
        train = get_split(data, args.dataset_train_split, name=args.dataset_name)
        if args.dataset_test_split:
            splits = DatasetDict(train=train, test=get_split(data, args.dataset_test_split, name=args.dataset_name))
        else:
            data = train
    if isinstance(data, Dataset):
        if args.group_column not in data.column_names:
            raise ValueError(
                f"cannot split by {args.group_column!r}: the dataset has {data.column_names}; set group_column "
                "to the column that identifies a clip (rows of one clip must stay on one side)."
            )
        splits = split_by_clip(data, test_size=args.test_size, seed=args.split_seed, clip_column=args.group_column)
    return _checked(splits, args, pairwise)


def _load_eval_set(source: str, name: str) -> Dataset:
    data = load_any_dataset(source)
    if isinstance(data, DatasetDict):
        if len(data) != 1:
            raise ValueError(
                f"eval set {name!r}: {source} has the splits {list(data)}; point it at one split (a file or a "
                "save_to_disk folder of one Dataset)."
            )
        data = next(iter(data.values()))
    return data


def _checked(splits: DatasetDict, args, pairwise: bool) -> DatasetDict:
    """Schema checks (splits carrying precomputed embeddings are checked by the trainer), then synthetic negatives."""
    embedded = {name for name, part in splits.items() if has_embeddings(part, pairwise, f"split {name!r}")}
    to_check = DatasetDict({name: part for name, part in splits.items() if name not in embedded})
    if len(to_check):
        validate_dataset(
            to_check,
            "pairwise" if pairwise else "pointwise",
            audio_column=args.audio_column,
            text_column=None if pairwise else args.text_column,
        )
    for name in embedded:
        if not pairwise and "label" not in splits[name].column_names:
            raise ValueError(f"split {name!r} has precomputed embeddings but no 'label' column.")
    if pairwise and args.synthetic_negatives and "train" in embedded:
        raise ValueError(
            "synthetic_negatives embeds other clips' captions, but the training data carries precomputed "
            "embeddings: build the negative pairs into the data instead (rejected_embedding from another clip)."
        )
    if pairwise and args.synthetic_negatives:
        negatives = add_synthetic_negatives(splits["train"], clip_column=args.group_column, seed=args.split_seed)
        keep = [c for c in PAIRWISE_KEEP if c in splits["train"].column_names and c in negatives.column_names]
        before = len(splits["train"])
        splits["train"] = concatenate_datasets(
            [splits["train"].select_columns(keep), negatives.select_columns(keep)]
        ).shuffle(seed=args.split_seed)
        logger.info("added %d synthetic negative pairs to %d training pairs", len(negatives), before)
    return splits
