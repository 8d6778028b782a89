"""BATON's text-to-audio feedback data: generation for annotation, reward-model labels, mixing with human labels.

BATON (https://huggingface.co/papers/2402.00744, sections 3.1 and 4.1) renders 5 clips per prompt, has people label
part of them 0/1, scores the rest with the binary reward model, and fine-tunes on human- and reward-labelled pairs at
1:1. [`write_feedback_skeleton`] renders the clips and writes a `feedback.csv` (audio path, prompt, empty label, task)
that annotators fill in and [`~hfpref.data.preference.load_binary_feedback`] reads back. [`add_rewards`] scores
(prompt, audio) pairs with a reward model once; [`mix_feedback`] mixes the two sources at a given ratio.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from datasets import Dataset, Value, concatenate_datasets

from .audio import decode_audio_column, encode_wav


logger = logging.getLogger(__name__)

FEEDBACK_COLUMNS = ["audio", "prompt", "label", "task", "labels", "order", "prompt_id", "sample"]
SOURCES = ("human", "reward_model")


def _slug(text: str, limit: int = 60) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:limit] or "prompt"


def write_feedback_skeleton(
    prompts: Sequence,
    audio: Sequence[Sequence[np.ndarray]],
    output_dir: str | Path,
    *,
    sampling_rate: int,
) -> Path:
    """
    Write generated clips and a binary-feedback skeleton ready for annotation.

    Clips go to `output_dir/audio/<prompt index>_<prompt>_<sample>.wav` (the paper's naming) and one row per clip to
    `output_dir/feedback.csv` with columns `audio` (path relative to the CSV), `prompt`, `label` (empty: to be
    annotated 0, 1 or `skip`), `task`, `labels` and `order` (JSON lists), `prompt_id`, `sample`. Once labelled, the
    file loads with [`~hfpref.data.preference.load_binary_feedback`] (skipped and unlabelled rows are dropped and
    counted).

    Args:
        prompts (`Sequence`):
            [`~hfpref.prompts.tta_prompts.TTAPrompt`]s, or plain strings (task, labels and order left empty).
        audio (`Sequence[Sequence[np.ndarray]]`):
            For each prompt, its clips (e.g. from [`~hfpref.models.tta_pipeline.generate_audio`]).
        output_dir (`str` or `Path`):
            Where to write.
        sampling_rate (`int`):
            Sampling rate of the clips.

    Returns:
        `Path`: the CSV file.
    """
    if len(prompts) != len(audio):
        raise ValueError(f"{len(prompts)} prompts but {len(audio)} groups of clips")
    output_dir = Path(output_dir)
    (output_dir / "audio").mkdir(parents=True, exist_ok=True)
    path = output_dir / "feedback.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=FEEDBACK_COLUMNS)
        writer.writeheader()
        for i, (prompt, clips) in enumerate(zip(prompts, audio)):
            text = prompt if isinstance(prompt, str) else prompt.prompt
            for k, clip in enumerate(clips):
                relative = Path("audio") / f"{i:04d}_{_slug(text)}_{k}.wav"
                (output_dir / relative).write_bytes(encode_wav(np.asarray(clip), sampling_rate))
                writer.writerow(
                    {
                        "audio": relative.as_posix(),
                        "prompt": text,
                        "label": "",
                        "task": "" if isinstance(prompt, str) else prompt.task,
                        "labels": json.dumps([] if isinstance(prompt, str) else list(prompt.labels)),
                        "order": json.dumps([] if isinstance(prompt, str) else list(prompt.order)),
                        "prompt_id": i,
                        "sample": k,
                    }
                )
    logger.info("wrote %d clips for %d prompts -> %s", sum(len(c) for c in audio), len(prompts), path)
    return path


def add_rewards(
    dataset: Dataset,
    reward_model,
    embedder,
    *,
    audio_column: str = "audio",
    text_column: str = "prompt",
    reward_column: str = "reward",
    batch_size: int = 256,
) -> Dataset:
    """
    Score every (prompt, audio) pair with the binary reward model, once, into `reward_column`.

    The embedder's on-disk cache (when it has one) keeps the CLAP embeddings, so scoring again is cheap.

    Args:
        dataset (`datasets.Dataset`): pairs to score.
        reward_model ([`~hfpref.rewards.CLAPRewardModel`]): the reward model.
        embedder ([`~hfpref.encoders.clap.ClapEmbedder`]): the CLAP it was trained on (its fingerprint is checked).
        audio_column (`str`, *optional*, defaults to `"audio"`), text_column (`str`, *optional*, defaults to
            `"prompt"`): the columns scored.
        reward_column (`str`, *optional*, defaults to `"reward"`): the column written (replaced if present).
        batch_size (`int`, *optional*, defaults to `256`): pairs per call.

    Returns:
        `datasets.Dataset`: `dataset` with `reward_column` (float32 in (0, 1)).
    """
    for column in (audio_column, text_column):
        if column not in dataset.column_names:
            raise ValueError(f"the dataset has no column {column!r}; it has {dataset.column_names}")
    clips, _ = decode_audio_column(dataset, audio_column, embedder.sampling_rate)
    texts = list(dataset[text_column])
    rewards: list[float] = []
    for start in range(0, len(texts), batch_size):
        rewards += reward_model.score(clips[start : start + batch_size], texts[start : start + batch_size], embedder)
    if reward_column in dataset.column_names:
        dataset = dataset.remove_columns(reward_column)
    return dataset.add_column(reward_column, rewards).cast_column(reward_column, Value("float32"))


def mix_feedback(
    human: Dataset,
    reward_labelled: Dataset,
    *,
    ratio: float = 1.0,
    seed: int = 0,
    reward_column: str = "reward",
    human_reward: str = "reward_model",
    label_column: str = "label",
    columns: Sequence[str] = ("audio", "prompt"),
) -> Dataset:
    """
    Mix human-labelled and reward-model-labelled pairs at `human : reward_labelled = 1 : ratio` (BATON: 1:1).

    All human rows are kept and `round(ratio * len(human))` reward-labelled rows are drawn without replacement; when
    there are fewer, all are used and the shortfall is logged. A `source` column says where each row came from.

    Args:
        human (`datasets.Dataset`):
            Annotated pairs (`label` 0/1), with a `reward_column` when `human_reward="reward_model"`.
        reward_labelled (`datasets.Dataset`):
            Unannotated generated pairs scored by [`add_rewards`].
        ratio (`float`, *optional*, defaults to `1.0`):
            Reward-labelled rows per human row.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the draw and of the final shuffle.
        reward_column (`str`, *optional*, defaults to `"reward"`):
            The reward column of the output.
        human_reward (`str`, *optional*, defaults to `"reward_model"`):
            The reward of a human row: `"reward_model"` (its reward model score, the issue's reading of the paper:
            every pair is weighted by r(c, x)) or `"label"` (the human 0/1 label itself).
        label_column (`str`, *optional*, defaults to `"label"`):
            Human label column, used with `human_reward="label"`.
        columns (`Sequence[str]`, *optional*, defaults to `("audio", "prompt")`):
            Other columns kept from both sources.

    Returns:
        `datasets.Dataset`: `columns`, `reward_column`, `source`, shuffled.
    """
    if human_reward not in ("reward_model", "label"):
        raise ValueError(f"human_reward={human_reward!r} is not one of ['reward_model', 'label']")
    if ratio < 0:
        raise ValueError(f"ratio={ratio} must be >= 0")
    human_source = label_column if human_reward == "label" else reward_column
    for name, ds, needed in (
        ("human", human, [*columns, human_source]),
        ("reward_labelled", reward_labelled, [*columns, reward_column]),
    ):
        missing = [c for c in needed if c not in ds.column_names]
        if missing:
            raise ValueError(f"{name} lacks columns {missing}; it has {ds.column_names}")
    keep = list(columns)
    human_part = human.select_columns([*keep, human_source])
    if human_reward == "label":
        human_part = human_part.rename_column(label_column, reward_column)
    human_part = human_part.cast_column(reward_column, Value("float32"))
    wanted = int(round(ratio * len(human)))
    if wanted > len(reward_labelled):
        logger.warning(
            "ratio=%s asks for %d reward-labelled rows but only %d exist; using all of them",
            ratio,
            wanted,
            len(reward_labelled),
        )
        wanted = len(reward_labelled)
    rng = np.random.default_rng(seed)
    rows = sorted(rng.choice(len(reward_labelled), size=wanted, replace=False).tolist())
    model_part = reward_labelled.select(rows).select_columns([*keep, reward_column])
    model_part = model_part.cast_column(reward_column, Value("float32"))
    parts = [
        human_part.add_column("source", ["human"] * len(human_part)),
        model_part.add_column("source", ["reward_model"] * len(model_part)),
    ]
    parts[1] = parts[1].cast(parts[0].features)
    return concatenate_datasets(parts).shuffle(seed=seed)


def generated_dataset(prompts: Sequence[str], audio: Sequence[Sequence[np.ndarray]], *, sampling_rate: int) -> Dataset:
    """
    Generated clips as an in-memory dataset (`audio` as `Audio(decode=False)` WAV bytes, `prompt`, `prompt_id`,
    `sample`), for scoring with [`add_rewards`] without writing files.
    """
    from .audio import audio_value, ensure_audio_column

    if len(prompts) != len(audio):
        raise ValueError(f"{len(prompts)} prompts but {len(audio)} groups of clips")
    rows: dict[str, list] = {"audio": [], "prompt": [], "prompt_id": [], "sample": []}
    for i, (prompt, clips) in enumerate(zip(prompts, audio)):
        for k, clip in enumerate(clips):
            rows["audio"].append(audio_value(np.asarray(clip), sampling_rate, path=f"{i:04d}_{k}.wav"))
            rows["prompt"].append(prompt)
            rows["prompt_id"].append(i)
            rows["sample"].append(k)
    return ensure_audio_column(Dataset.from_dict(rows), "audio", sampling_rate=sampling_rate)


def load_unlabelled_feedback(
    path: str | Path,
    *,
    audio_column: str = "audio",
    text_column: str = "prompt",
    label_column: str = "label",
    base_dir: str | Path | None = None,
) -> Dataset:
    """
    The rows of a feedback file that nobody labelled (`label_column` empty or absent): BATON's pool for
    reward-model labels. The labelled rows load with [`~hfpref.data.preference.load_binary_feedback`].

    Args:
        path (`str` or `Path`):
            A `.csv`, `.json` or `.jsonl` feedback file (e.g. written by [`write_feedback_skeleton`]).
        audio_column (`str`, *optional*, defaults to `"audio"`), text_column (`str`, *optional*, defaults to
            `"prompt"`), label_column (`str`, *optional*, defaults to `"label"`): the columns.
        base_dir (`str` or `Path`, *optional*):
            Folder relative audio paths are resolved against; defaults to the file's folder.

    Returns:
        `datasets.Dataset` with `audio_column` (`Audio(decode=False)`, absolute paths) and `text_column`; empty when
        every row is labelled.

    Raises:
        `ValueError`: if a column is missing or an audio file does not exist (naming the file and the row).
    """
    from datasets import Audio

    from .preference import _read_feedback_rows

    path = Path(path)
    base = Path(base_dir) if base_dir is not None else path.parent
    rows, places = _read_feedback_rows(path)
    audio, texts = [], []
    for row, place in zip(rows, places):
        missing = [c for c in (audio_column, text_column) if c not in row]
        if missing:
            raise ValueError(f"{path}: {place} has no column(s) {missing}")
        if str(row.get(label_column) if row.get(label_column) is not None else "").strip():
            continue
        file = Path(str(row[audio_column]))
        file = file if file.is_absolute() else base / file
        if not file.is_file():
            raise ValueError(f"{path}: {place}, column {audio_column!r}: audio file {file} does not exist")
        audio.append({"bytes": None, "path": str(file.resolve())})
        texts.append(str(row[text_column]))
    data = Dataset.from_dict({audio_column: audio, text_column: texts})
    return data.cast_column(audio_column, Audio(decode=False))
