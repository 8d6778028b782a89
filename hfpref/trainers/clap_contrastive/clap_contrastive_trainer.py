"""Contrastive fitting of a `transformers` `ClapModel` on (audio, caption) pairs.

The objective is LAION-CLAP's (https://huggingface.co/papers/2211.06687, equation 3): within a batch of N pairs, each
clip must pick its caption among the N captions and each caption its clip among the N clips, both as a cross-entropy
over temperature-scaled cosine similarities. With hard negatives (T-CLAP, https://huggingface.co/papers/2404.17806),
each clip also meets wrong captions of its own (an event swapped in order, omitted, hallucinated) in its softmax.
Offline this fits the tiny CLAP that the quickstart then uses as a
reward; online it adapts a pretrained checkpoint such as `laion/clap-htsat-unfused` to a domain.
"""

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset, LargeList, List, Value
from datasets import Sequence as SequenceFeature
from transformers import ClapModel, ClapProcessor, EvalPrediction

from ...data.audio import decode_audio, ensure_audio_column
from ...data.synthetic.audio_world import make_caption_variants
from ...encoders.cache import EmbeddingCache
from ...encoders.clap import _seeded_numpy, _text_max_length, _truncation_for, load_clap
from ...utils.checks import check_finite_training
from ...utils.distributed import gathered_parameters, restore_scalar_parameters, vectorise_scalar_parameters
from ..base_trainer import BaseTrainer
from .clap_contrastive_config import ClapContrastiveConfig


logger = logging.getLogger(__name__)

ROW_INDEX = "row_index"
RETRIEVAL_GROUP = "retrieval_group"
HARD_NEGATIVE_MASK = "hard_negative_mask"
EVENTS_COLUMN = "events"
RECALL_AT = (1, 5, 10)


def _as_numpy(embeddings: Any, name: str) -> np.ndarray:
    if isinstance(embeddings, torch.Tensor):
        embeddings = embeddings.detach().float().cpu().numpy()
    array = np.asarray(embeddings, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (items, width) array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12)


def _ranks(queries: np.ndarray, keys: np.ndarray, groups: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """For each query, how many wrong keys score at least as high as its best right key (0 = retrieved first)."""
    ranks = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        scores = queries[start : start + chunk] @ keys.T
        right = groups[start : start + chunk, None] == groups[None, :]
        best_right = np.where(right, scores, -np.inf).max(axis=1, keepdims=True)
        # Ties count against the query, so that collapsed embeddings (all scores equal) retrieve nothing.
        ranks[start : start + chunk] = ((scores >= best_right) & ~right).sum(axis=1)
    return ranks


def retrieval_metrics(
    audio_embeddings: Any,
    text_embeddings: Any,
    *,
    groups: Sequence | np.ndarray | None = None,
    recall_at: Sequence[int] = RECALL_AT,
) -> dict[str, float]:
    r"""
    Audio-to-text and text-to-audio recall@k of paired embeddings, by cosine similarity.

    Row `i` of `audio_embeddings` and row `i` of `text_embeddings` are a pair. Audio-to-text: each clip ranks all
    captions; it scores a hit at `k` when its caption (or, with `groups`, any caption of its group) is among the top
    `k`. Text-to-audio is the same the other way round. Ties count as misses, so embeddings that collapsed to one point
    score 0. With N pairs and no groups, chance recall@k is `k / N`.

    Args:
        audio_embeddings (`np.ndarray` or `torch.Tensor`):
            `(N, width)` audio embeddings; normalised here.
        text_embeddings (`np.ndarray` or `torch.Tensor`):
            `(N, width)` caption embeddings, row `i` describing clip `i`; normalised here.
        groups (`Sequence` or `np.ndarray`, *optional*):
            One hashable label per pair; pairs sharing a label are interchangeable (the same sound class, the same
            events). Defaults to every pair being its own group.
        recall_at (`Sequence[int]`, *optional*, defaults to `(1, 5, 10)`):
            The cut-offs `k`.

    Returns:
        `dict[str, float]`: `audio_to_text_r{k}` and `text_to_audio_r{k}` for each `k`, in [0, 1].

    Example:

    ```python
    >>> import numpy as np
    >>> audio = np.eye(3)
    >>> text = np.array([[1.0, 0.2, 0.1], [0.3, 0.5, 1.0], [0.2, 1.0, 0.4]])  # captions 1 and 2 look swapped
    >>> metrics = retrieval_metrics(audio, text, recall_at=(1, 2))
    >>> round(metrics["audio_to_text_r1"], 3), metrics["audio_to_text_r2"]
    (0.333, 1.0)
    >>> retrieval_metrics(audio, text, groups=["dog", "cat", "cat"], recall_at=(1,))  # clips 1 and 2 sound alike
    {'audio_to_text_r1': 1.0, 'text_to_audio_r1': 1.0}

    ```
    """
    audio = _as_numpy(audio_embeddings, "audio_embeddings")
    text = _as_numpy(text_embeddings, "text_embeddings")
    if audio.shape != text.shape:
        raise ValueError(f"audio_embeddings {audio.shape} and text_embeddings {text.shape} must have the same shape")
    if groups is None:
        labels = np.arange(len(audio))
    else:
        groups = list(groups)
        if len(groups) != len(audio):
            raise ValueError(f"groups has {len(groups)} labels for {len(audio)} pairs")
        labels = np.asarray(_factorize(groups))
    for k in recall_at:
        if int(k) != k or k < 1:
            raise ValueError(f"recall_at={list(recall_at)} must hold positive integers")
    metrics = {}
    for name, queries, keys in (("audio_to_text", audio, text), ("text_to_audio", text, audio)):
        ranks = _ranks(queries, keys, labels)
        for k in recall_at:
            metrics[f"{name}_r{int(k)}"] = float((ranks < k).mean())
    return metrics


def _hashable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(item) for item in value)
    return value


def _factorize(values: Sequence) -> list[int]:
    """One integer per value, equal for equal values (lists compare as tuples)."""
    ids: dict[Any, int] = {}
    return [ids.setdefault(_hashable(value), len(ids)) for value in values]


def _own_hard_negative_logits(logits_per_audio: torch.Tensor, hard_negative_mask: torch.Tensor) -> torch.Tensor:
    """`(N, K)` logits of each clip against its own hard negatives, `-inf` where the mask has no negative."""
    n_clips, n_negatives = hard_negative_mask.shape[0], int(hard_negative_mask.sum())
    if logits_per_audio.shape != (n_clips, n_clips + n_negatives):
        raise ValueError(
            f"logits_per_audio has shape {tuple(logits_per_audio.shape)}; with {n_clips} clips and {n_negatives} hard "
            f"negatives it must be ({n_clips}, {n_clips + n_negatives}): the batch's captions, then the negatives"
        )
    owner = hard_negative_mask.nonzero(as_tuple=True)[0]
    own = logits_per_audio[owner, n_clips + torch.arange(n_negatives, device=logits_per_audio.device)]
    padded = logits_per_audio.new_full(hard_negative_mask.shape, float("-inf"))
    return padded.masked_scatter(hard_negative_mask, own)


def clap_contrastive_loss(
    logits_per_audio: torch.Tensor,
    logits_per_text: torch.Tensor,
    hard_negative_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""
    LAION-CLAP's symmetric contrastive loss (https://huggingface.co/papers/2211.06687, equation 3), optionally with
    per-clip hard negative captions in the audio-to-text term, as in T-CLAP (https://huggingface.co/papers/2404.17806).

    Without hard negatives: the mean of the cross-entropy of each clip over the N captions of the batch and of each
    caption over the N clips, the matching pair being the target. With them: `logits_per_audio` scores the N clips
    against the N captions followed by every clip's hard negatives (row-major in `hard_negative_mask`), and clip `i`'s
    softmax covers the N captions and its own negatives only; the text-to-audio term reads the first N rows of
    `logits_per_text` (negatives are not queries).

    Args:
        logits_per_audio (`torch.Tensor`):
            `(N, N)` temperature-scaled similarities of the clips (rows) to the captions, or `(N, N + M)` with `M`
            hard negatives after the captions.
        logits_per_text (`torch.Tensor`):
            `(N, N)` similarities of the captions to the clips, or `(N + M, N)`.
        hard_negative_mask (`torch.Tensor`, *optional*):
            `(N, K)` booleans, `M` of them true: row `i` marks which of its `K` slots holds a negative of clip `i`;
            the negatives' columns in `logits_per_audio` follow the order of the true entries, row by row.

    Returns:
        `torch.Tensor`: the scalar loss.

    Example:

    ```python
    >>> import torch
    >>> logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    >>> round(clap_contrastive_loss(logits, logits.t()).item(), 4)
    0.1269
    >>> with_negative = torch.tensor([[2.0, 0.0, 2.0], [0.0, 2.0, -9.0]])  # clip 0 can't tell its negative apart
    >>> mask = torch.tensor([[True], [False]])
    >>> round(clap_contrastive_loss(with_negative, with_negative.t(), mask).item(), 4)
    0.2849

    ```
    """
    labels = torch.arange(logits_per_audio.shape[0], device=logits_per_audio.device)
    if hard_negative_mask is None:
        audio_to_text = F.cross_entropy(logits_per_audio, labels)
        text_to_audio = F.cross_entropy(logits_per_text, labels)
        return (audio_to_text + text_to_audio) / 2
    n_clips = len(labels)
    own = _own_hard_negative_logits(logits_per_audio, hard_negative_mask)
    audio_to_text = F.cross_entropy(torch.cat([logits_per_audio[:, :n_clips], own], dim=1), labels)
    text_to_audio = F.cross_entropy(logits_per_text[:n_clips], labels)
    return (audio_to_text + text_to_audio) / 2


@dataclass
class ClapContrastiveCollator:
    r"""
    Turns rows of (audio, caption) into `ClapModel` inputs: decodes audio with [`~hfpref.data.audio.decode_audio`]
    at the feature extractor's rate, runs the feature extractor and the tokenizer.

    In training (`training=True`) a clip longer than `max_audio_seconds` is cut at a random offset, the feature
    extractor crops long clips at random (`"rand_trunc"`), fusion models see a random clip marked as longer when no
    clip of the batch is (the feature extractor's own training trick), and each caption is drawn at random from the
    row's references when there are any. Training batches may also carry hard negative captions: they follow the
    batch's captions in `input_ids`, and `hard_negative_mask` (`(N, K)` booleans) says which clip each belongs to. In
    evaluation everything is deterministic and matches
    [`~hfpref.encoders.ClapEmbedder`]: the first window, the text column, crops seeded by the clip's content and
    `is_longer` only for clips that are longer.

    Args:
        processor (`ClapProcessor`):
            The model's processor.
        audio_column (`str`, *optional*, defaults to `"audio"`):
            Column holding the audio.
        text_column (`str`, *optional*, defaults to `"caption"`):
            Column holding the caption.
        references_column (`str`, *optional*):
            Column of caption lists to draw from in training.
        max_audio_seconds (`float`, *optional*):
            Longest clip handed to the feature extractor.
        text_max_length (`int`, *optional*):
            Longest tokenized caption; defaults to the tokenizer's `model_max_length`.
        cache_audio_features (`bool`, *optional*, defaults to `False`):
            Keep the spectrogram of every clip whose features involve no random crop, keyed by the clip's content.
        hard_negatives_column (`str`, *optional*):
            Column of wrong captions per clip, added to the batch in training.
        synthetic_hard_negatives (`int`, *optional*, defaults to `0`):
            In training, this many wrong captions per clip (of distinct kinds, fewer when its events admit fewer),
            drawn afresh from its `"events"` with [`~hfpref.data.synthetic.audio_world.make_caption_variants`].
        training (`bool`, *optional*, defaults to `True`):
            Training or evaluation behaviour.
    """

    processor: ClapProcessor
    audio_column: str = "audio"
    text_column: str = "caption"
    references_column: str | None = None
    max_audio_seconds: float | None = None
    text_max_length: int | None = None
    cache_audio_features: bool = False
    hard_negatives_column: str | None = None
    synthetic_hard_negatives: int = 0
    training: bool = True
    _cache: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def sampling_rate(self) -> int:
        return int(self.processor.feature_extractor.sampling_rate)

    def _waveform(self, row: dict) -> tuple[np.ndarray, bool]:
        """The clip to featurize, and whether it was cut at a random offset."""
        index = row.get(ROW_INDEX)
        waveform = decode_audio(row[self.audio_column], self.sampling_rate, row=index, column=self.audio_column)
        if self.max_audio_seconds is not None:
            limit = max(1, int(self.max_audio_seconds * self.sampling_rate))
            if waveform.shape[0] > limit:
                if not self.training:
                    return waveform[:limit], False
                start = int(torch.randint(waveform.shape[0] - limit + 1, ()).item())
                return waveform[start : start + limit], True
        return waveform, False

    def _caption(self, row: dict) -> str:
        if self.training and self.references_column is not None:
            references = [r for r in (row.get(self.references_column) or []) if isinstance(r, str) and r]
            if references:
                # torch's RNG: seeded by the Trainer and distinct in each dataloader worker.
                return references[int(torch.randint(len(references), ()).item())]
        caption = row[self.text_column]
        if not isinstance(caption, str):
            raise ValueError(
                f"column {self.text_column!r} row {row.get(ROW_INDEX)} is {caption!r}; captions must be strings"
            )
        return caption

    def _hard_negatives(self, row: dict) -> list[str]:
        if self.hard_negatives_column is not None:
            negatives = row.get(self.hard_negatives_column) or []
            if not all(isinstance(negative, str) for negative in negatives):
                raise ValueError(
                    f"column {self.hard_negatives_column!r} row {row.get(ROW_INDEX)} is {negatives!r}; hard negatives "
                    "must be lists of strings"
                )
            return [negative for negative in negatives if negative]
        # torch's RNG, like the references: a fresh draw every step, reproducible from the Trainer's seed.
        rng = np.random.default_rng(int(torch.randint(2**31, ()).item()))
        variants = make_caption_variants(row[EVENTS_COLUMN], rng)
        del variants["correct"]
        kinds = sorted(variants)
        return [variants[kinds[i]] for i in rng.permutation(len(kinds))[: self.synthetic_hard_negatives]]

    def _audio_features(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        feature_extractor = self.processor.feature_extractor
        rate = self.sampling_rate
        max_samples, hop = feature_extractor.nb_max_samples, feature_extractor.hop_length
        features, is_longer = [], []
        for row in rows:
            waveform, randomly_cut = self._waveform(row)
            samples = waveform.shape[0]
            # The feature extractor's own rule, minus its "mark a random clip as longer" step (applied below).
            is_longer.append(samples > max_samples and samples // hop != max_samples // hop)
            # Evaluation crops are seeded by content, so only training crops of long clips are random.
            fixed = not self.training or (not randomly_cut and samples <= max_samples)
            cached = fixed and (self.cache_audio_features or not self.training)
            key = EmbeddingCache.key_for_audio(waveform, rate) if cached else None
            if key is not None and key in self._cache:
                features.append(self._cache[key])
                continue
            if self.training:
                extracted = feature_extractor(waveform, sampling_rate=rate, return_tensors="np")
            else:
                # The same crop as ClapEmbedder: seeded by the clip's content, whatever batch it lands in.
                with _seeded_numpy(int(key[:8], 16)):
                    extracted = feature_extractor(waveform, sampling_rate=rate, return_tensors="np")
            features.append(extracted["input_features"][0])
            if self.cache_audio_features and fixed:
                self._cache[key] = features[-1]
        if self.training and feature_extractor.truncation == "fusion" and not any(is_longer):
            is_longer[int(torch.randint(len(is_longer), ()).item())] = True
        return {
            "input_features": torch.from_numpy(np.stack(features)),
            "is_longer": torch.tensor(is_longer).unsqueeze(1),
        }

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = self._audio_features(rows)
        max_length = self.text_max_length or self.processor.tokenizer.model_max_length
        captions = [self._caption(row) for row in rows]
        if self.training and (self.hard_negatives_column is not None or self.synthetic_hard_negatives):
            negatives = [self._hard_negatives(row) for row in rows]
            slots = max(len(row_negatives) for row_negatives in negatives)
            batch[HARD_NEGATIVE_MASK] = torch.tensor(
                [[k < len(row_negatives) for k in range(slots)] for row_negatives in negatives], dtype=torch.bool
            ).reshape(len(rows), slots)
            captions += [negative for row_negatives in negatives for negative in row_negatives]
        text = self.processor.tokenizer(
            captions,
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        batch["input_ids"] = text["input_ids"]
        batch["attention_mask"] = text["attention_mask"]
        if not self.training and RETRIEVAL_GROUP in rows[0]:
            batch[RETRIEVAL_GROUP] = torch.tensor([row[RETRIEVAL_GROUP] for row in rows], dtype=torch.long)
        return batch


def _is_string_list(feature: Any) -> bool:
    inner = getattr(feature, "feature", None) if isinstance(feature, (List, LargeList, SequenceFeature)) else None
    return isinstance(inner, Value) and inner.dtype in ("string", "large_string")


class ClapContrastiveTrainer(BaseTrainer):
    r"""
    Fits or adapts a `ClapModel` contrastively on (audio, caption) pairs, thin on [`~transformers.Trainer`].

    The loss is LAION-CLAP's symmetric in-batch cross-entropy (`loss_type="symmetric"`, [`clap_contrastive_loss`]), or
    the model's own `return_loss=True` loss (`loss_type="model"`). Negatives are the other pairs of the same device
    batch; they are not gathered across processes. Training logs the loss, the learned logit scales (inverse
    temperatures) and the in-batch audio-to-text accuracy (chance: one over the batch size), which stays at chance when
    the embeddings collapse.

    With `args.hard_negatives_column` or `args.synthetic_hard_negatives`, each clip's audio-to-text softmax also holds
    its own hard negative captions (T-CLAP), and training logs `batch_hard_negative_accuracy`: the share of clips that
    score their caption above all of their hard negatives.

    Evaluation embeds every clip and caption of the evaluation set with the model's normalised embeddings and reports
    `audio_to_text_r{1,5,10}` and `text_to_audio_r{1,5,10}` through the normal metrics path ([`retrieval_metrics`];
    with N clips, chance recall@k is k / N), next to the contrastive `loss`.

    Audio is never decoded through `datasets`: the audio column is cast to `Audio(decode=False)` and the collator
    decodes each `{"bytes", "path"}` value with [`~hfpref.data.audio.decode_audio`] at the feature extractor's rate.

    Args:
        model (`ClapModel` or `str`):
            The model, or a Hub id / local directory to load it and its processor from with
            [`~hfpref.encoders.load_clap`].
        args ([`ClapContrastiveConfig`], *optional*):
            Training configuration; defaults to `ClapContrastiveConfig("clap-contrastive")`.
        data_collator (`Callable`, *optional*):
            Replaces the [`ClapContrastiveCollator`] (then used for training and evaluation alike).
        train_dataset (`datasets.Dataset`, *optional*):
            Rows with `args.audio_column` and `args.text_column` (and optionally `args.references_column`), plus
            `args.hard_negatives_column` when set, or `"events"` when `args.synthetic_hard_negatives` is positive.
        eval_dataset (`datasets.Dataset` or `dict[str, Dataset]`, *optional*):
            Same columns (references are not used), plus `args.retrieval_group_column` when set.
        processing_class (`ClapProcessor`, *optional*):
            The model's processor; required when `model` is a `ClapModel`. Its feature extractor's truncation must
            match the model (`"rand_trunc"` without fusion, `"fusion"` with it), as [`~hfpref.encoders.load_clap`]
            sets it.
        compute_metrics (`Callable`, *optional*):
            Replaces the retrieval metrics; receives an `EvalPrediction` whose predictions are
            `(audio_embeddings, text_embeddings)` and whose label ids are the retrieval groups.
        callbacks (`list`, *optional*), optimizers (`tuple`, *optional*):
            As in [`~transformers.Trainer`].
    """

    _name = "clap_contrastive"
    _tag_names = ["hfpref", "clap", "contrastive"]
    _card_metric = "eval_loss"

    def __init__(
        self,
        model: ClapModel | str,
        args: ClapContrastiveConfig | None = None,
        data_collator: Callable | None = None,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | dict[str, Dataset] | None = None,
        processing_class: ClapProcessor | None = None,
        compute_metrics: Callable[[EvalPrediction], dict] | None = None,
        callbacks: list | None = None,
        optimizers=(None, None),
    ):
        if args is None:
            args = ClapContrastiveConfig("clap-contrastive")
        if not isinstance(args, ClapContrastiveConfig):
            raise TypeError(f"args must be a ClapContrastiveConfig, got {type(args).__name__}")
        if isinstance(model, str):
            model, loaded_processor = load_clap(model)
            processing_class = processing_class if processing_class is not None else loaded_processor
        if not isinstance(model, ClapModel):
            raise TypeError(f"model must be a transformers ClapModel or a path to one, got {type(model).__name__}")
        if processing_class is None:
            raise ValueError("processing_class (the model's ClapProcessor) is required when model is a ClapModel")
        truncation, expected = processing_class.feature_extractor.truncation, _truncation_for(model)
        if truncation != expected:
            raise ValueError(
                f"The feature extractor uses truncation={truncation!r} but the model has enable_fusion="
                f"{model.config.audio_config.enable_fusion}, which needs truncation={expected!r}. Set "
                f"processing_class.feature_extractor.truncation = {expected!r}, or load both with hfpref.encoders.load_clap."
            )
        if args.freeze_text_encoder:
            model.text_model.requires_grad_(False)
        if args.freeze_audio_encoder:
            model.audio_model.requires_grad_(False)

        if train_dataset is not None:
            train_dataset = self._prepare_dataset(train_dataset, args, "train_dataset", training=True)
        if isinstance(eval_dataset, dict):
            eval_dataset = {
                key: self._prepare_dataset(value, args, f"eval_dataset[{key!r}]", training=False)
                for key, value in eval_dataset.items()
            }
        elif eval_dataset is not None:
            eval_dataset = self._prepare_dataset(eval_dataset, args, "eval_dataset", training=False)

        references = args.references_column
        if references is not None and (train_dataset is None or references not in train_dataset.column_names):
            if train_dataset is not None:
                logger.info(f"No {references!r} column in train_dataset: training on {args.text_column!r} only.")
            references = None
        self._eval_collator = None
        if data_collator is None:
            data_collator = ClapContrastiveCollator(
                processor=processing_class,
                audio_column=args.audio_column,
                text_column=args.text_column,
                references_column=references,
                max_audio_seconds=args.max_audio_seconds,
                cache_audio_features=args.cache_audio_features,
                text_max_length=_text_max_length(model, processing_class.tokenizer),
                hard_negatives_column=args.hard_negatives_column,
                synthetic_hard_negatives=args.synthetic_hard_negatives,
            )
            self._eval_collator = replace(data_collator, training=False)
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=compute_metrics or self._retrieval_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        # FSDP2 shards no 0-dim parameter: the logit scales become 1-element vectors, saved as scalars again.
        self._scalar_parameters = vectorise_scalar_parameters(self.model) if self.is_fsdp_enabled else []

    def _save(self, output_dir: str | None = None, state_dict=None):
        if state_dict is not None and self._scalar_parameters:
            state_dict = restore_scalar_parameters(dict(state_dict), self._scalar_parameters)
        super()._save(output_dir, state_dict=state_dict)

    @staticmethod
    def _prepare_dataset(dataset: Dataset, args: ClapContrastiveConfig, name: str, training: bool) -> Dataset:
        if not isinstance(dataset, Dataset):
            raise TypeError(f"{name} must be a datasets.Dataset, got {type(dataset).__name__}")
        columns = dataset.column_names
        required = {"audio_column": args.audio_column, "text_column": args.text_column}
        if not training and args.retrieval_group_column is not None:
            required["retrieval_group_column"] = args.retrieval_group_column
        missing = [f"{column!r} ({key})" for key, column in required.items() if column not in columns]
        if missing:
            raise ValueError(
                f"{name} lacks the columns {', '.join(missing)}; it has {columns}. Rename the columns or set "
                f"{', '.join(key for key, column in required.items() if column not in columns)} in the config."
            )
        if len(dataset) == 0:
            raise ValueError(f"{name} is empty: it has columns {columns} but no rows.")
        text_feature = dataset.features[args.text_column]
        if not (isinstance(text_feature, Value) and text_feature.dtype in ("string", "large_string")):
            raise ValueError(f"{name} column {args.text_column!r} must hold strings, it has feature {text_feature}")
        keep = [args.audio_column, args.text_column]
        references = args.references_column
        if training and references is not None and references in columns:
            if not _is_string_list(dataset.features[references]):
                raise ValueError(
                    f"{name} column {references!r} (references_column) must hold lists of strings, it has feature "
                    f"{dataset.features[references]}; set references_column=None to train on {args.text_column!r} only"
                )
            keep.append(references)
        if training and args.hard_negatives_column is not None:
            negatives = args.hard_negatives_column
            if negatives not in columns:
                raise ValueError(
                    f"{name} lacks the column {negatives!r} (hard_negatives_column); it has {columns}. Set "
                    "hard_negatives_column=None to train on in-batch negatives only."
                )
            if not _is_string_list(dataset.features[negatives]):
                raise ValueError(
                    f"{name} column {negatives!r} (hard_negatives_column) must hold lists of strings, it has feature "
                    f"{dataset.features[negatives]}"
                )
            keep.append(negatives)
        if training and args.synthetic_hard_negatives:
            if EVENTS_COLUMN not in columns:
                raise ValueError(
                    f"synthetic_hard_negatives={args.synthetic_hard_negatives} draws hard negatives from the column "
                    f"{EVENTS_COLUMN!r} (event names in temporal order, as hfpref.data.make_world writes it), which "
                    f"{name} lacks; it has {columns}. Set synthetic_hard_negatives=0, or give the negatives in "
                    "hard_negatives_column."
                )
            if not _is_string_list(dataset.features[EVENTS_COLUMN]):
                raise ValueError(
                    f"{name} column {EVENTS_COLUMN!r} must hold lists of event names for synthetic_hard_negatives, it "
                    f"has feature {dataset.features[EVENTS_COLUMN]}"
                )
            if EVENTS_COLUMN not in keep:
                keep.append(EVENTS_COLUMN)
        dataset = ensure_audio_column(dataset, args.audio_column)
        if not training:
            if args.retrieval_group_column is None:
                groups = list(range(len(dataset)))
            else:
                groups = _factorize(list(dataset[args.retrieval_group_column]))
            dataset = dataset.select_columns(keep).add_column(RETRIEVAL_GROUP, groups)
        else:
            dataset = dataset.select_columns(keep)
        return dataset.add_column(ROW_INDEX, list(range(len(dataset))))

    def _set_signature_columns_if_needed(self):
        # The collator, not the model's forward, decides which columns are needed.
        if self._signature_columns is None:
            self._signature_columns = [
                self.args.audio_column,
                self.args.text_column,
                self.args.references_column,
                self.args.hard_negatives_column,
                EVENTS_COLUMN,
                RETRIEVAL_GROUP,
                ROW_INDEX,
            ]

    @contextlib.contextmanager
    def _evaluation_collator(self):
        if self._eval_collator is None:
            yield
            return
        train_collator, self.data_collator = self.data_collator, self._eval_collator
        try:
            yield
        finally:
            self.data_collator = train_collator

    def get_eval_dataloader(self, eval_dataset=None):
        if isinstance(eval_dataset, Dataset) and RETRIEVAL_GROUP not in eval_dataset.column_names:
            eval_dataset = self._prepare_dataset(eval_dataset, self.args, "eval_dataset", training=False)
        with self._evaluation_collator():
            return super().get_eval_dataloader(eval_dataset)

    def get_test_dataloader(self, test_dataset):
        if isinstance(test_dataset, Dataset) and RETRIEVAL_GROUP not in test_dataset.column_names:
            test_dataset = self._prepare_dataset(test_dataset, self.args, "test_dataset", training=False)
        with self._evaluation_collator():
            return super().get_test_dataloader(test_dataset)

    def _keep_frozen_encoders_in_eval_mode(self, model) -> None:
        unwrapped = self.accelerator.unwrap_model(model)
        if self.args.freeze_text_encoder:
            unwrapped.text_model.eval()
        if self.args.freeze_audio_encoder:
            unwrapped.audio_model.eval()

    def _contrastive_loss(self, outputs, hard_negative_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.args.loss_type == "model":
            return outputs.loss
        return clap_contrastive_loss(outputs.logits_per_audio, outputs.logits_per_text, hard_negative_mask)

    @staticmethod
    def _model_inputs(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            key: value for key, value in inputs.items() if key not in (RETRIEVAL_GROUP, ROW_INDEX, HARD_NEGATIVE_MASK)
        }

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            self._keep_frozen_encoders_in_eval_mode(model)
        outputs = model(**self._model_inputs(inputs), return_loss=self.args.loss_type == "model")
        hard_negative_mask = inputs.get(HARD_NEGATIVE_MASK)
        loss = self._contrastive_loss(outputs, hard_negative_mask)
        if model.training:
            with torch.no_grad():
                unwrapped = self.accelerator.unwrap_model(model)
                logits = outputs.logits_per_audio[:, : len(outputs.logits_per_audio)]
                hits = logits.argmax(dim=1) == torch.arange(len(logits), device=logits.device)
                self._record_metric("batch_audio_to_text_accuracy", hits.float().mean().item(), len(hits))
                if hard_negative_mask is not None and hard_negative_mask.any():
                    own = _own_hard_negative_logits(outputs.logits_per_audio, hard_negative_mask)
                    has_negatives = hard_negative_mask.any(dim=1)
                    beats = (logits.diagonal() > own.max(dim=1).values)[has_negatives]
                    self._record_metric("batch_hard_negative_accuracy", beats.float().mean().item(), len(beats))
                scales = [unwrapped.logit_scale_a, unwrapped.logit_scale_t]
                with gathered_parameters(scales):  # ZeRO-3 partitions them: read them whole
                    self._record_metric("logit_scale_audio", scales[0].exp().item())
                    self._record_metric("logit_scale_text", scales[1].exp().item())
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        groups = inputs.get(RETRIEVAL_GROUP)
        with torch.no_grad():
            outputs = model(**self._model_inputs(inputs), return_loss=self.args.loss_type == "model")
            loss = self._contrastive_loss(outputs, inputs.get(HARD_NEGATIVE_MASK)).detach()
        if prediction_loss_only:
            return loss, None, None
        if groups is None:  # a user collator: every pair is its own group
            groups = torch.full((len(outputs.audio_embeds),), -1, dtype=torch.long, device=loss.device)
        return loss, (outputs.audio_embeds.detach(), outputs.text_embeds.detach()), groups

    def _retrieval_metrics(self, prediction: EvalPrediction) -> dict[str, float]:
        audio, text = prediction.predictions
        groups = np.asarray(prediction.label_ids)
        if (groups < 0).all():
            groups = None
        return retrieval_metrics(audio, text, groups=groups)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """[`~transformers.Trainer.save_model`], refusing weights or logged losses that are NaN or inf."""
        check_finite_training(
            self.model, self.state.log_history, what=f"the model for {output_dir or self.args.output_dir}"
        )
        super().save_model(output_dir, _internal_call)
