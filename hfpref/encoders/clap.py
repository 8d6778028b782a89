"""CLAP audio and text embeddings with transformers' `ClapModel`, cached on disk.

The RLHF captioning paper (https://huggingface.co/papers/2402.17813) scores captions with
frozen CLAP encoders (`laion/clap-htsat-unfused`, 512-d embeddings); BATON's binary reward
model uses the same encoders. Because the encoders are frozen, [`ClapEmbedder`] embeds each
distinct clip and caption once and keeps the vectors in an [`EmbeddingCache`] keyed by a
fingerprint of the exact weights and preprocessing.

The `tiny_*` / `build_tiny_clap` helpers build a randomly initialised, CPU-fast CLAP with a
tokenizer trained on the spot, for the offline quickstart and the tests.
"""

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from tqdm.auto import tqdm
from transformers import (
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    ClapProcessor,
    PreTrainedTokenizerBase,
    RobertaTokenizerFast,
)

from .cache import EmbeddingCache


logger = logging.getLogger(__name__)

DEFAULT_CLAP_CHECKPOINT = "laion/clap-htsat-unfused"

# Bump when the way inputs are prepared changes (cropping, tokenization), so old caches are not reused.
_PREPROCESSING_VERSION = 1

# Config entries that change when a model is saved, reloaded or moved, but not what it computes.
_VOLATILE_CONFIG_KEYS = frozenset(
    {
        "_name_or_path",
        "_commit_hash",
        "_attn_implementation_autoset",
        "_attn_implementation_internal",
        "architectures",
        "dtype",
        "torch_dtype",
        "transformers_version",
        "output_attentions",
        "output_hidden_states",
        "return_dict",
        "use_cache",
    }
)
_VOLATILE_FEATURE_EXTRACTOR_KEYS = frozenset({"processor_class", "feature_extractor_type", "_processor_class"})

_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids 0..4; CLAP's text config expects them


def _truncation_for(model: ClapModel) -> str:
    return "fusion" if model.config.audio_config.enable_fusion else "rand_trunc"


def load_clap(
    model_name_or_path: str = DEFAULT_CLAP_CHECKPOINT,
    *,
    device: str | torch.device | None = None,
    revision: str | None = None,
) -> tuple[ClapModel, ClapProcessor]:
    r"""
    Load a CLAP model and its processor from the Hub or a local directory, ready for inference.

    Non-fusion checkpoints (`config.audio_config.enable_fusion=False`, e.g. `laion/clap-htsat-unfused`) get their
    feature extractor switched to `truncation="rand_trunc"`, the mode they were trained with; a fusion feature
    extractor would feed them 4 stacked spectrograms. Fusion checkpoints keep `truncation="fusion"`. Remote code is
    never trusted.

    Args:
        model_name_or_path (`str`, *optional*, defaults to `"laion/clap-htsat-unfused"`):
            Hub id or local directory holding a `ClapModel` and a `ClapProcessor`.
        device (`str` or `torch.device`, *optional*):
            Device to move the model to; left where `from_pretrained` puts it when `None`.
        revision (`str`, *optional*):
            Hub revision (branch, tag or commit) for both model and processor.

    Returns:
        `tuple[ClapModel, ClapProcessor]`: the model in eval mode and its processor.
    """
    # safetensors only: a pickled checkpoint is never unpickled (laion/clap-htsat-unfused ships model.safetensors).
    from ..utils.checks import naming_corrupt_checkpoint
    from ..utils.distributed import zero3_init_disabled

    # Frozen: loaded whole on every process, never partitioned by a ZeRO-3 launch (no engine would gather it).
    with naming_corrupt_checkpoint(model_name_or_path), zero3_init_disabled():
        model = ClapModel.from_pretrained(model_name_or_path, revision=revision, use_safetensors=True)
    processor = ClapProcessor.from_pretrained(model_name_or_path, revision=revision)
    truncation = _truncation_for(model)
    if processor.feature_extractor.truncation != truncation:
        logger.info(
            "Setting the feature extractor of %s to truncation=%r (enable_fusion=%s); it was %r.",
            model_name_or_path,
            truncation,
            model.config.audio_config.enable_fusion,
            processor.feature_extractor.truncation,
        )
        processor.feature_extractor.truncation = truncation
    if device is not None:
        model = model.to(device)
    model.eval()
    return model, processor


def _text_max_length(model: ClapModel, tokenizer: PreTrainedTokenizerBase) -> int:
    # RoBERTa-style position ids start after the padding index, so 2 positions are unusable.
    positions = model.config.text_config.max_position_embeddings - model.config.text_config.pad_token_id - 1
    model_max_length = tokenizer.model_max_length
    if model_max_length is None or model_max_length > 1_000_000:
        model_max_length = positions
    return min(positions, model_max_length)


def _clean_config(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _clean_config(item) for key, item in value.items() if key not in _VOLATILE_CONFIG_KEYS}
    if isinstance(value, (list, tuple)):
        return [_clean_config(item) for item in value]
    return value


def _hash_json(digest: "hashlib.blake2b", value: Any) -> None:
    digest.update(json.dumps(value, sort_keys=True, default=str).encode("utf-8"))
    digest.update(b"\0")


def model_fingerprint(model: ClapModel, processor: ClapProcessor, *, normalize: bool = True) -> str:
    r"""
    Identity of everything that decides an embedding: config, weights and preprocessing.

    Hashes (BLAKE2b) the model config (minus bookkeeping such as `_name_or_path` and `transformers_version`), every
    parameter and persistent buffer in `state_dict` order (name, dtype, shape and raw bytes), the feature extractor's
    settings (sampling rate, truncation, padding, `max_length_s`, mel settings), the tokenizer's vocabulary and
    length limits, the `normalize` flag and hfpref's preprocessing version. Fine-tuned weights with the same config
    get another fingerprint; a `save_pretrained` / `from_pretrained` round trip keeps it. Hashing reads every weight
    once (about a second for the 600 MB of `laion/clap-htsat-unfused` on one CPU core).

    Args:
        model (`ClapModel`):
            The CLAP model.
        processor (`ClapProcessor`):
            Its processor.
        normalize (`bool`, *optional*, defaults to `True`):
            Whether embeddings are L2-normalised.

    Returns:
        `str`: 32 hexadecimal characters, usable as a directory name.
    """
    digest = hashlib.blake2b(digest_size=16)
    _hash_json(digest, {"hfpref_preprocessing": _PREPROCESSING_VERSION, "normalize": bool(normalize)})
    _hash_json(digest, _clean_config(model.config.to_dict()))
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach()
        _hash_json(digest, [name, str(tensor.dtype), list(tensor.shape)])
        # Viewing as bytes works for every dtype, bfloat16 included (numpy has no bfloat16).
        raw = tensor.contiguous().reshape(-1).view(torch.uint8).cpu().numpy()
        digest.update(memoryview(raw))

    feature_extractor = processor.feature_extractor
    settings = {
        key: value for key, value in feature_extractor.to_dict().items() if key not in _VOLATILE_FEATURE_EXTRACTOR_KEYS
    }
    _hash_json(digest, settings)

    tokenizer = processor.tokenizer
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    _hash_json(
        digest,
        {
            "vocab_size": len(tokenizer),
            "vocab_sha256": hashlib.sha256(json.dumps(vocab).encode("utf-8")).hexdigest(),
            "max_length": _text_max_length(model, tokenizer),
            "padding_side": tokenizer.padding_side,
            "truncation_side": tokenizer.truncation_side,
            "special_ids": [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id],
        },
    )
    return digest.hexdigest()


@contextlib.contextmanager
def _seeded_numpy(seed: int) -> Iterator[None]:
    # ClapFeatureExtractor crops long clips with the global numpy RNG; seeding it from the clip's content makes the
    # crop, hence the embedding and the cache entry, a function of the clip alone. The caller's RNG state survives.
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


class ClapEmbedder:
    r"""
    Batched, cached CLAP embeddings for clips and captions.

    Each distinct clip or caption is embedded once: duplicates within a call share one forward pass, and with a
    `cache_dir` the vectors persist across calls and processes in an [`EmbeddingCache`] under the model's
    [`model_fingerprint`]. Results come back in input order.

    Audio preprocessing is the feature extractor's own (`repeatpad` for short clips; for clips longer than
    `max_length_s`, a random crop with `rand_trunc` or random crops plus a global view with `fusion`), with one
    change: the random crop is seeded by the clip's content hash, so the same clip always gives the same embedding
    whatever batch it is in, and fusion models see `is_longer` only for clips that are actually longer (the feature
    extractor marks a random short clip as longer in each batch, a training-time trick).

    The model is put in eval mode and used under `torch.inference_mode()`. The fingerprint is computed once, when
    the cache is first used: do not keep one embedder across changes to the model's weights.

    Args:
        model (`ClapModel`):
            The CLAP model.
        processor (`ClapProcessor`):
            Its processor. Its feature extractor's truncation must match the model: `"rand_trunc"` for non-fusion
            models, `"fusion"` for fusion ones ([`load_clap`] sets this).
        cache_dir (`str` or `os.PathLike`, *optional*):
            Root of the on-disk embedding cache; no cache when `None`.
        batch_size (`int`, *optional*, defaults to `16`):
            Number of clips or captions per forward pass.
        device (`str` or `torch.device`, *optional*):
            Device to run on; the model is moved there. Defaults to the model's current device.
        normalize (`bool`, *optional*, defaults to `True`):
            Whether to return L2-normalised embeddings (the `pooler_output` of `get_audio_features` /
            `get_text_features`). With `False`, the raw outputs of the projection layers.
        show_progress (`bool`, *optional*, defaults to `True`):
            Whether to show a tqdm progress bar while computing embeddings.
        model_name (`str`, *optional*):
            Name recorded in the cache's `fingerprint.json`; defaults to the config's `_name_or_path`.
    """

    def __init__(
        self,
        model: ClapModel,
        processor: ClapProcessor,
        *,
        cache_dir: str | os.PathLike | None = None,
        batch_size: int = 16,
        device: str | torch.device | None = None,
        normalize: bool = True,
        show_progress: bool = True,
        model_name: str | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be a positive integer")
        truncation = processor.feature_extractor.truncation
        expected = _truncation_for(model)
        if truncation != expected:
            raise ValueError(
                f"The feature extractor uses truncation={truncation!r} but the model has "
                f"enable_fusion={model.config.audio_config.enable_fusion}, which needs truncation={expected!r}. "
                f"Set processor.feature_extractor.truncation = {expected!r}, or load both with hfpref.encoders.load_clap."
            )
        if device is not None:
            model = model.to(device)
        self.model = model.eval()
        self.processor = processor
        self.batch_size = batch_size
        self.normalize = normalize
        self.show_progress = show_progress
        self.model_name = model_name or getattr(model.config, "_name_or_path", None) or None
        self.cache_dir = None if cache_dir is None else os.path.expanduser(os.fspath(cache_dir))
        self.text_max_length = _text_max_length(model, processor.tokenizer)
        self._fingerprint: str | None = None
        self._cache: EmbeddingCache | None = None

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: str = DEFAULT_CLAP_CHECKPOINT,
        *,
        device: str | torch.device | None = None,
        revision: str | None = None,
        **kwargs,
    ) -> "ClapEmbedder":
        r"""
        Load a CLAP checkpoint with [`load_clap`] and wrap it.

        Args:
            model_name_or_path (`str`, *optional*, defaults to `"laion/clap-htsat-unfused"`):
                Hub id or local directory.
            device (`str` or `torch.device`, *optional*):
                Device to run on.
            revision (`str`, *optional*):
                Hub revision.
            **kwargs:
                Other [`ClapEmbedder`] arguments (`cache_dir`, `batch_size`, `normalize`, `show_progress`).
        """
        model, processor = load_clap(model_name_or_path, device=device, revision=revision)
        kwargs.setdefault("model_name", model_name_or_path)
        return cls(model, processor, **kwargs)

    @property
    def sampling_rate(self) -> int:
        r"""`int`: sampling rate in Hz of the model's feature extractor (48 kHz for the LAION checkpoints); `embed_audio`
        resamples clips at other rates to it."""
        return int(self.processor.feature_extractor.sampling_rate)

    @property
    def embedding_dim(self) -> int:
        r"""`int`: width of the embeddings (the projection dimension, 512 for the LAION checkpoints)."""
        return int(self.model.config.projection_dim)

    @property
    def device(self) -> torch.device:
        r"""`torch.device`: device of the model's parameters."""
        return next(self.model.parameters()).device

    @property
    def fingerprint(self) -> str:
        r"""`str`: [`model_fingerprint`] of the model, processor and `normalize` flag (computed once)."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model, self.processor, normalize=self.normalize)
        return self._fingerprint

    @property
    def cache(self) -> EmbeddingCache | None:
        r"""[`EmbeddingCache`] or `None`: the on-disk cache, `None` without a `cache_dir`."""
        if self.cache_dir is not None and self._cache is None:
            feature_extractor = self.processor.feature_extractor
            metadata = {
                "model_name": self.model_name,
                "embedding_dim": self.embedding_dim,
                "normalize": self.normalize,
                "sampling_rate": self.sampling_rate,
                "max_length_s": feature_extractor.max_length_s,
                "truncation": feature_extractor.truncation,
                "enable_fusion": self.model.config.audio_config.enable_fusion,
                "text_max_length": self.text_max_length,
            }
            self._cache = EmbeddingCache(self.cache_dir, self.fingerprint, metadata=metadata)
        return self._cache

    def embed_audio(self, arrays: Sequence[np.ndarray], *, sampling_rate: int) -> np.ndarray:
        r"""
        Embed clips.

        Args:
            arrays (`Sequence[np.ndarray]`):
                Mono waveforms (1-D, any length > 0), all at `sampling_rate`.
            sampling_rate (`int`):
                Their sampling rate in Hz (required: a 16 kHz text-to-audio render read as 48 kHz audio would be embedded
                3x sped up). Clips at another rate than [`~ClapEmbedder.sampling_rate`] are resampled to it with soxr
                first, as [`~hfpref.data.audio.decode_audio`] does; the cache is keyed by the resampled clip.

        Returns:
            `np.ndarray` of shape `(len(arrays), embedding_dim)`, dtype float32: one row per input, in input order.

        Example:

        ```python
        >>> from hfpref.encoders.clap import ClapEmbedder, build_tiny_clap
        >>> embedder = ClapEmbedder(*build_tiny_clap(["a dog barks"], sampling_rate=48000), show_progress=False)
        >>> one_second_at_16k = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000).astype(np.float32)
        >>> embedder.embed_audio([one_second_at_16k], sampling_rate=16000).shape  # resampled to 48 kHz first
        (1, 32)

        ```
        """
        from ..data.audio import resample

        if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, (int, np.integer)) or sampling_rate <= 0:
            raise ValueError(
                f"embed_audio: sampling_rate={sampling_rate!r} must be the clips' sampling rate, a positive integer "
                f"number of Hz (this CLAP takes {self.sampling_rate} Hz; other rates are resampled)"
            )
        clips = [
            resample(self._check_clip(index, array), int(sampling_rate), self.sampling_rate, name=f"arrays[{index}]")
            for index, array in enumerate(arrays)
        ]
        keys = [EmbeddingCache.key_for_audio(clip, self.sampling_rate) for clip in clips]
        distinct_clips = {}
        for key, clip in zip(keys, clips):
            distinct_clips.setdefault(key, clip)
        return self._embed("audio", keys, distinct_clips, self._audio_batch)

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        r"""
        Embed captions.

        Args:
            texts (`Sequence[str]`):
                Captions, used verbatim; longer ones are truncated to the text encoder's limit.

        Returns:
            `np.ndarray` of shape `(len(texts), embedding_dim)`, dtype float32: one row per input, in input order.
        """
        if isinstance(texts, str):
            raise TypeError("embed_text expects a list of strings, not a single string")
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{index}] is a {type(text).__name__}, expected str")
        keys = [EmbeddingCache.key_for_text(text) for text in texts]
        return self._embed("text", keys, dict(zip(keys, texts)), self._text_batch)

    def _check_clip(self, index: int, array: np.ndarray) -> np.ndarray:
        clip = np.asarray(array)
        if clip.ndim != 1:
            raise ValueError(f"arrays[{index}] has shape {clip.shape}; expected a mono 1-D waveform")
        if clip.size == 0:
            raise ValueError(f"arrays[{index}] is empty")
        if not np.issubdtype(clip.dtype, np.number) or np.iscomplexobj(clip):
            raise ValueError(f"arrays[{index}] has dtype {clip.dtype}; expected real-valued samples")
        clip = np.ascontiguousarray(clip, dtype=np.float32)
        if not np.isfinite(clip).all():
            raise ValueError(f"arrays[{index}] contains NaN or infinite samples")
        return clip

    def _embed(self, kind: str, keys: list[str], inputs: dict, forward) -> np.ndarray:
        vectors: dict[str, np.ndarray] = {}
        distinct = list(dict.fromkeys(keys))
        cache = self.cache
        if cache is not None:
            for key, vector in zip(distinct, cache.get_many(kind, distinct)):
                if vector is not None and vector.shape == (self.embedding_dim,):
                    vectors[key] = vector
        missing = [key for key in distinct if key not in vectors]
        if missing:
            self.model.eval()
            with tqdm(
                total=len(missing), desc=f"Embedding {kind}", unit=kind, disable=not self.show_progress
            ) as progress:
                for start in range(0, len(missing), self.batch_size):
                    batch = missing[start : start + self.batch_size]
                    with torch.inference_mode():
                        embeddings = forward(batch, [inputs[key] for key in batch])
                    embeddings = embeddings.float().cpu().numpy()
                    if cache is not None:
                        cache.put_many(kind, batch, embeddings)
                    vectors.update(zip(batch, embeddings))
                    progress.update(len(batch))
        if not keys:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        return np.stack([vectors[key] for key in keys]).astype(np.float32, copy=False)

    def _audio_batch(self, keys: list[str], clips: list[np.ndarray]) -> torch.Tensor:
        feature_extractor = self.processor.feature_extractor
        fusion = self.model.config.audio_config.enable_fusion
        max_samples = feature_extractor.nb_max_samples
        hop = feature_extractor.hop_length
        features, is_longer = [], []
        for key, clip in zip(keys, clips):
            seed = int(key[:8], 16)
            with _seeded_numpy(seed):
                extracted = feature_extractor(clip, sampling_rate=self.sampling_rate, return_tensors="np")
            features.append(extracted["input_features"][0])
            # The feature extractor's own rule, minus its "pick a random clip to be longer" step.
            is_longer.append(clip.shape[0] > max_samples and clip.shape[0] // hop != max_samples // hop)
        dtype = next(self.model.parameters()).dtype
        input_features = torch.from_numpy(np.stack(features)).to(device=self.device, dtype=dtype)
        is_longer = torch.tensor(is_longer, device=self.device).unsqueeze(1) if fusion else None
        if self.normalize:
            return self.model.get_audio_features(input_features=input_features, is_longer=is_longer).pooler_output
        outputs = self.model.audio_model(input_features=input_features, is_longer=is_longer)
        return self.model.audio_projection(outputs.pooler_output)

    def _text_batch(self, keys: list[str], texts: list[str]) -> torch.Tensor:
        inputs = self.processor.tokenizer(
            texts, padding=True, truncation=True, max_length=self.text_max_length, return_tensors="pt"
        )
        inputs = {name: inputs[name].to(self.device) for name in ("input_ids", "attention_mask")}
        if self.normalize:
            return self.model.get_text_features(**inputs).pooler_output
        outputs = self.model.text_model(**inputs)
        return self.model.text_projection(outputs.pooler_output)


def train_clap_tokenizer(
    texts: Iterable[str], vocab_size: int = 512, *, model_max_length: int = 64
) -> RobertaTokenizerFast:
    r"""
    Train a small byte-level BPE tokenizer, RoBERTa-style like CLAP's own, on `texts`.

    Special tokens get RoBERTa's ids (`<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, `<mask>`=4), which CLAP's text
    config expects. The vocabulary holds the 256 byte symbols, the specials and up to `vocab_size` entries in total
    (fewer on a small corpus). It saves and reloads offline with its vocabulary intact.

    Args:
        texts (`Iterable[str]`):
            Training corpus, e.g. the captions of the synthetic world.
        vocab_size (`int`, *optional*, defaults to `512`):
            Largest vocabulary to learn (at least 261: the bytes plus the specials).
        model_max_length (`int`, *optional*, defaults to `64`):
            Longest tokenized caption, special tokens included.

    Returns:
        [`~transformers.RobertaTokenizerFast`]: the tokenizer.
    """
    texts = [text for text in texts if isinstance(text, str) and text]
    if not texts:
        raise ValueError("train_clap_tokenizer needs at least one non-empty text")
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + len(_SPECIAL_TOKENS):
        raise ValueError(f"vocab_size={vocab_size} must be at least {len(alphabet) + len(_SPECIAL_TOKENS)}")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=_SPECIAL_TOKENS, initial_alphabet=alphabet, show_progress=False
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(merge) if isinstance(merge, list) else tuple(merge.split(" ")) for merge in state["merges"]]
    tokenizer = RobertaTokenizerFast(vocab=state["vocab"], merges=merges, model_max_length=model_max_length)
    if len(tokenizer) != bpe.get_vocab_size():
        raise RuntimeError(
            f"the wrapped tokenizer has {len(tokenizer)} tokens, but {bpe.get_vocab_size()} were trained"
        )
    ids = tokenizer.convert_tokens_to_ids(_SPECIAL_TOKENS)
    if ids != list(range(len(_SPECIAL_TOKENS))):
        raise RuntimeError(f"special tokens {_SPECIAL_TOKENS} got ids {ids}, expected 0..{len(_SPECIAL_TOKENS) - 1}")
    return tokenizer


def tiny_clap_config(
    projection_dim: int = 32,
    *,
    vocab_size: int = 512,
    text_hidden_size: int = 32,
    text_layers: int = 2,
    max_text_length: int = 64,
    patch_embeds_hidden_size: int = 16,
    audio_depths: Sequence[int] = (1, 1),
    spec_size: int = 128,
    num_mel_bins: int = 64,
    enable_fusion: bool = False,
) -> ClapConfig:
    r"""
    Config of a tiny CLAP that runs in milliseconds on a CPU.

    Text side: a `text_layers`-layer RoBERTa encoder. Audio side: an HTSAT (Swin) encoder with one stage per entry
    of `audio_depths`; its output width is `patch_embeds_hidden_size * 2 ** (len(audio_depths) - 1)`, which the
    audio `hidden_size` is set to. HTSAT folds a spectrogram of `spec_size * (spec_size // num_mel_bins)` frames by
    `num_mel_bins` bins into a `spec_size` x `spec_size` image: with the defaults, up to 256 frames of 64 mel bins,
    i.e. 5 s at a 20 ms hop (see [`build_tiny_clap`]); shorter spectrograms are stretched to fit.

    Args:
        projection_dim (`int`, *optional*, defaults to `32`):
            Width of the shared embedding space.
        vocab_size (`int`, *optional*, defaults to `512`):
            Text vocabulary size; use the tokenizer's `len()`.
        text_hidden_size (`int`, *optional*, defaults to `32`):
            Width of the text encoder.
        text_layers (`int`, *optional*, defaults to `2`):
            Number of text encoder layers.
        max_text_length (`int`, *optional*, defaults to `64`):
            Longest caption in tokens, special tokens included.
        patch_embeds_hidden_size (`int`, *optional*, defaults to `16`):
            Width of the audio patch embeddings (first Swin stage).
        audio_depths (`Sequence[int]`, *optional*, defaults to `(1, 1)`):
            Swin blocks per stage.
        spec_size (`int`, *optional*, defaults to `128`):
            Side of the spectrogram image; a multiple of `num_mel_bins` and of `4 * 8 * 2 ** (stages - 1)`.
        num_mel_bins (`int`, *optional*, defaults to `64`):
            Mel bins of the feature extractor.
        enable_fusion (`bool`, *optional*, defaults to `False`):
            Whether to build the fusion variant (then use a `truncation="fusion"` feature extractor).

    Returns:
        `ClapConfig`: the config.
    """
    stages = len(audio_depths)
    if spec_size % num_mel_bins or spec_size % (4 * 8 * 2 ** (stages - 1)):
        raise ValueError(
            f"spec_size={spec_size} must be a multiple of num_mel_bins={num_mel_bins} and of {4 * 8 * 2 ** (stages - 1)}"
        )
    text_config = {
        "vocab_size": vocab_size,
        "hidden_size": text_hidden_size,
        "num_hidden_layers": text_layers,
        "num_attention_heads": 2,
        "intermediate_size": 2 * text_hidden_size,
        "max_position_embeddings": max_text_length + 2,
    }
    audio_config = {
        "spec_size": spec_size,
        "num_mel_bins": num_mel_bins,
        "window_size": 8,
        "patch_size": 4,
        "patch_stride": [4, 4],
        "patch_embeds_hidden_size": patch_embeds_hidden_size,
        "hidden_size": patch_embeds_hidden_size * 2 ** (stages - 1),
        "depths": list(audio_depths),
        "num_attention_heads": [2 * 2**stage for stage in range(stages)],
        "num_hidden_layers": stages,
        "num_classes": 8,
        "enable_fusion": enable_fusion,
        "fusion_type": "aff_2d" if enable_fusion else None,
    }
    return ClapConfig(text_config=text_config, audio_config=audio_config, projection_dim=projection_dim)


def tiny_clap_feature_extractor(
    sampling_rate: int = 16_000,
    *,
    truncation: str = "rand_trunc",
    num_mel_bins: int = 64,
    clip_seconds: float = 5.0,
) -> ClapFeatureExtractor:
    r"""
    Feature extractor matching [`tiny_clap_config`]: 64 mel bins, a 20 ms hop and `max_length_s=5` by default.

    Five seconds at a 20 ms hop are 251 frames, within the 256 the tiny HTSAT accepts (`spec_size=128`, 64 mel
    bins); 2 s windows with 32 mel bins fit `spec_size=64`.

    Args:
        sampling_rate (`int`, *optional*, defaults to `16000`):
            Sampling rate in Hz; a multiple of 50 (for the 20 ms hop).
        truncation (`str`, *optional*, defaults to `"rand_trunc"`):
            `"rand_trunc"` for a non-fusion model, `"fusion"` for a fusion one.
        num_mel_bins (`int`, *optional*, defaults to `64`):
            Mel bins; the model's `num_mel_bins` must match.
        clip_seconds (`float`, *optional*, defaults to `5.0`):
            Window length (`max_length_s`): longer clips are cropped at random, shorter ones repeat-padded.

    Returns:
        `ClapFeatureExtractor`: the feature extractor.
    """
    if sampling_rate % 50:
        raise ValueError(f"sampling_rate={sampling_rate} must be a multiple of 50 Hz (20 ms hop)")
    if float(clip_seconds) != int(clip_seconds) or clip_seconds < 1:
        # ClapFeatureExtractor pads to max_length_s * sampling_rate samples, which numpy needs as an integer.
        raise ValueError(f"clip_seconds={clip_seconds} must be a whole number of seconds (1, 2, 5, ...)")
    return ClapFeatureExtractor(
        feature_size=num_mel_bins,
        sampling_rate=sampling_rate,
        hop_length=sampling_rate // 50,
        max_length_s=int(clip_seconds),
        fft_window_size=1024 if sampling_rate >= 32_000 else 512,
        frequency_min=50,
        frequency_max=min(14_000, sampling_rate // 2),
        truncation=truncation,
        padding="repeatpad",
    )


def build_tiny_clap(
    texts: Iterable[str],
    *,
    seed: int = 0,
    sampling_rate: int = 16_000,
    projection_dim: int = 32,
    vocab_size: int = 512,
    clip_seconds: float = 5.0,
    num_mel_bins: int = 64,
    spec_size: int = 128,
    text_dropout: float | None = None,
    audio_dropout: float | None = None,
) -> tuple[ClapModel, ClapProcessor]:
    r"""
    Build a randomly initialised tiny CLAP and its processor, offline.

    The tokenizer is trained on `texts` ([`train_clap_tokenizer`]), the model follows [`tiny_clap_config`] and the
    feature extractor [`tiny_clap_feature_extractor`] (`truncation="rand_trunc"`, 5 s windows). Both save with
    `save_pretrained` and reload with `ClapModel.from_pretrained` / `ClapProcessor.from_pretrained`.

    Args:
        texts (`Iterable[str]`):
            Captions to train the tokenizer on.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the weight initialisation; the global torch RNG is left untouched.
        sampling_rate (`int`, *optional*, defaults to `16000`):
            Sampling rate the model takes, in Hz.
        projection_dim (`int`, *optional*, defaults to `32`):
            Embedding width.
        vocab_size (`int`, *optional*, defaults to `512`):
            Largest tokenizer vocabulary.
        clip_seconds (`float`, *optional*, defaults to `5.0`):
            Audio window of the feature extractor.
        num_mel_bins (`int`, *optional*, defaults to `64`):
            Mel bins of the feature extractor and the audio tower.
        spec_size (`int`, *optional*, defaults to `128`):
            Side of the square image HTSAT folds the spectrogram into; `clip_seconds=2.0, num_mel_bins=32,
            spec_size=64` is 4x cheaper than the default and learns the synthetic world in a few hundred steps.
        text_dropout (`float`, *optional*):
            Dropout of the text tower (hidden and attention); `None` keeps the config default (0.1).
        audio_dropout (`float`, *optional*):
            Dropout of the audio tower (hidden and attention); `None` keeps the config default.

    Returns:
        `tuple[ClapModel, ClapProcessor]`: the model in eval mode and its processor.
    """
    tokenizer = train_clap_tokenizer(texts, vocab_size=vocab_size)
    config = tiny_clap_config(
        projection_dim,
        vocab_size=len(tokenizer),
        max_text_length=tokenizer.model_max_length,
        spec_size=spec_size,
        num_mel_bins=num_mel_bins,
    )
    if text_dropout is not None:
        config.text_config.hidden_dropout_prob = text_dropout
        config.text_config.attention_probs_dropout_prob = text_dropout
    if audio_dropout is not None:
        config.audio_config.hidden_dropout_prob = audio_dropout
        config.audio_config.attention_probs_dropout_prob = audio_dropout
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ClapModel(config)
    feature_extractor = tiny_clap_feature_extractor(
        sampling_rate, num_mel_bins=num_mel_bins, clip_seconds=clip_seconds
    )
    processor = ClapProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    return model.eval(), processor
