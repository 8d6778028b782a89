"""
Speech tokens for an LLM decoder: SpeechTokenizer's first RVQ layer, written into the LLM's vocabulary.

AlignCap ([Liang et al., 2024](https://huggingface.co/papers/2410.19134), section 3.1) feeds speech to LLaMA as the
codes of the first residual vector quantizer of SpeechTokenizer
([Zhang et al., 2024](https://huggingface.co/papers/2308.16692)): 50 codes per second of 16 kHz audio, 1024 distinct
codes, the "semantic" layer. Each code becomes one new vocabulary entry `<st_0>` ... `<st_1023>` of the LLM, so speech
and text share one embedding table, a clip is a plain text string, and every TRL trainer for causal LMs takes it.

The `speechtokenizer` package (PyPI) imports its training code (torchaudio, tensorboard, beartype) from its
`__init__`; torchaudio breaks transformers here, so [`speechtokenizer_class`] imports only `speechtokenizer.model`,
without running the package `__init__`. A real checkpoint is a config JSON plus a weights file given by path
([`load_speech_tokenizer`]); weights load from safetensors only: a pickled `.pt` (the released `SpeechTokenizer.pt`)
is refused with the one-line conversion to run once where the file is trusted, since nothing here unpickles.

A freshly built SpeechTokenizer has all-zero codebooks (they wait for a k-means initialisation on the first training
batch), so every frame would get code 0. Offline, with no checkpoint to download, [`fit_speech_codebook`] runs that
k-means on the encoder features of the clips at hand (the offline speech world does this), and
[`randomize_codebooks`] gives test fixtures random ones.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import sys
import types
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import soxr
import torch
from peft import LoraConfig

from ..utils.safe_loading import UnsafeCheckpointError
from .audio_tokens import add_audio_tokens, speech_token


SPEECH_TOKENIZER_SAMPLING_RATE = 16000
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_PICKLED_WEIGHTS_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")

# The released checkpoint's architecture (fnlp/SpeechTokenizer, speechtokenizer_hubert_avg/config.json).
SPEECH_TOKENIZER_CONFIG = {
    "n_filters": 64,
    "strides": [8, 5, 4, 2],
    "dimension": 1024,
    "semantic_dimension": 768,
    "bidirectional": True,
    "dilation_base": 2,
    "residual_kernel_size": 3,
    "n_residual_layers": 1,
    "lstm_layers": 2,
    "activation": "ELU",
    "sample_rate": 16000,
    "codebook_size": 1024,
    "n_q": 8,
}

# Same strides (hence 50 codes per second), a small fraction of the width: for tests and the offline speech world.
TINY_SPEECH_TOKENIZER_CONFIG = {
    **SPEECH_TOKENIZER_CONFIG,
    "n_filters": 4,
    "dimension": 32,
    "semantic_dimension": 32,
    "lstm_layers": 1,
    "codebook_size": 64,
    "n_q": 2,
}


def speechtokenizer_class():
    """
    The `SpeechTokenizer` model class, imported from `speechtokenizer.model` without the package's `__init__`.

    Raises:
        `ImportError`: when `speechtokenizer` is not installed (`pip install 'hfpref[speech]'`).
    """
    if "speechtokenizer.model" not in sys.modules:
        spec = importlib.util.find_spec("speechtokenizer")
        if spec is None or spec.submodule_search_locations is None:
            raise ImportError(
                "speechtokenizer is not installed; install it without its training dependencies: "
                "pip install --no-deps speechtokenizer (or pip install 'hfpref[speech]')"
            )
        if "speechtokenizer" not in sys.modules:
            # An empty package object stands in for the real one, so that importing the submodule does not run
            # `speechtokenizer/__init__.py` (which imports the trainer, hence torchaudio and beartype).
            package = types.ModuleType("speechtokenizer")
            package.__path__ = list(spec.submodule_search_locations)
            package.__spec__ = spec
            sys.modules["speechtokenizer"] = package
    return importlib.import_module("speechtokenizer.model").SpeechTokenizer


def _check_config(config: dict) -> dict:
    missing = sorted(set(SPEECH_TOKENIZER_CONFIG) - set(config))
    if missing:
        raise ValueError(
            f"SpeechTokenizer config lacks {missing}; the released config has {sorted(SPEECH_TOKENIZER_CONFIG)}"
        )
    if int(config["sample_rate"]) != SPEECH_TOKENIZER_SAMPLING_RATE:
        raise ValueError(f"sample_rate={config['sample_rate']}: SpeechTokenizer works at 16000 Hz")
    return dict(config)


def build_speech_tokenizer(config: dict | None = None, *, seed: int = 0):
    """
    A SpeechTokenizer with random weights (all-zero codebooks until [`fit_speech_codebook`] or
    [`randomize_codebooks`]), in eval mode.

    Args:
        config (`dict`, *optional*):
            Its architecture; defaults to [`TINY_SPEECH_TOKENIZER_CONFIG`]. [`SPEECH_TOKENIZER_CONFIG`] is the
            released model's.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the weights.
    """
    config = _check_config(TINY_SPEECH_TOKENIZER_CONFIG if config is None else config)
    cls = speechtokenizer_class()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
    model.config = config
    return model.eval()


def _first_codebook(model):
    return model.quantizer.vq.layers[0]._codebook


def codebooks_initialised(model) -> bool:
    """Whether every RVQ codebook holds vectors (a fresh model's are all zero until k-means initialises them)."""
    return all(bool(layer._codebook.inited.item()) for layer in model.quantizer.vq.layers)


def randomize_codebooks(model, seed: int = 0):
    """
    Fill every RVQ codebook with Gaussian vectors scaled to the encoder's typical feature norm and mark it
    initialised. For test fixtures: a fresh model's codebooks are all zero, so every frame would get code 0.

    Returns:
        The model, changed in place.
    """
    generator = torch.Generator().manual_seed(seed)
    for layer in model.quantizer.vq.layers:
        codebook = layer._codebook
        embed = torch.randn(codebook.embed.shape, generator=generator) / codebook.embed.shape[1] ** 0.5
        codebook.embed.data.copy_(embed)
        codebook.embed_avg.data.copy_(embed)
        codebook.inited.data.fill_(1.0)
    return model


def _as_batch(waveforms: Sequence[np.ndarray]) -> tuple[torch.Tensor, list[int]]:
    lengths = [len(w) for w in waveforms]
    batch = torch.zeros(len(waveforms), 1, max(lengths))
    for i, waveform in enumerate(waveforms):
        batch[i, 0, : len(waveform)] = torch.as_tensor(np.asarray(waveform, dtype=np.float32))
    return batch, lengths


def _frames(n_samples: int, hop: int) -> int:
    return -(-n_samples // hop)


@torch.no_grad()
def fit_speech_codebook(
    model, waveforms: Iterable[np.ndarray], *, seed: int = 0, n_iters: int = 20, batch_size: int = 16
):
    """
    Initialise the first RVQ codebook by k-means on the encoder's features of `waveforms` (16 kHz), as
    SpeechTokenizer itself does on its first training batch (its own `kmeans`); later codebooks are randomised.

    With no released checkpoint offline, this gives a randomly initialised encoder codes that follow the clips'
    acoustics (loudness, pitch, timbre move the features), which a random codebook does not.

    Args:
        model (`SpeechTokenizer`):
            From [`build_speech_tokenizer`]; changed in place.
        waveforms (`Iterable[np.ndarray]`):
            Mono 16 kHz clips; need at least `codebook_size` frames in total (50 per second).
        seed (`int`, *optional*, defaults to `0`):
            Seed of the k-means initial centroids.
        n_iters (`int`, *optional*, defaults to `20`):
            k-means iterations.
        batch_size (`int`, *optional*, defaults to `16`):
            Clips per encoder forward pass.

    Returns:
        The model, changed in place.
    """
    from speechtokenizer.quantization.core_vq import kmeans  # noqa: PLC0415 (loaded by speechtokenizer_class)

    waveforms = list(waveforms)
    hop = int(model.downsample_rate)
    features = []
    for start in range(0, len(waveforms), batch_size):
        chunk = waveforms[start : start + batch_size]
        batch, lengths = _as_batch(chunk)
        encoded = model.encoder(batch).transpose(1, 2)  # (batch, frames, dimension)
        features += [encoded[i, : _frames(n, hop)] for i, n in enumerate(lengths)]
    samples = torch.cat(features) if features else torch.zeros(0)
    codebook = _first_codebook(model)
    if samples.shape[0] < codebook.codebook_size:
        raise ValueError(
            f"{samples.shape[0]} encoder frames cannot fit {codebook.codebook_size} centroids; give at least "
            f"{codebook.codebook_size / 50:.1f} s of audio"
        )
    randomize_codebooks(model, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        centroids, _ = kmeans(samples, codebook.codebook_size, n_iters)
    codebook.embed.data.copy_(centroids)
    codebook.embed_avg.data.copy_(centroids)
    return model


def save_speech_tokenizer(model, save_directory: str | Path) -> Path:
    """Write `config.json` and `model.safetensors` (the layout [`load_speech_tokenizer`] reads)."""
    from safetensors.torch import save_file  # noqa: PLC0415

    if not codebooks_initialised(model):
        raise ValueError("refusing to save a SpeechTokenizer whose codebooks were never initialised (all zero)")
    directory = Path(save_directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_NAME).write_text(json.dumps(model.config, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / WEIGHTS_NAME))
    return directory


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file  # noqa: PLC0415

    if path.suffix in _PICKLED_WEIGHTS_SUFFIXES:
        raise UnsafeCheckpointError(
            f"SpeechTokenizer weights {str(path)!r} are pickled ({path.suffix}); hfpref loads safetensors only. Convert "
            'them once, where you trust the file: python -c "import torch; from safetensors.torch import save_file; '
            f"save_file(torch.load('{path.name}', weights_only=True), 'model.safetensors')\""
        )
    if path.suffix != ".safetensors":
        raise ValueError(f"{str(path)!r}: unknown weights format; SpeechTokenizer weights must be .safetensors")
    return load_file(str(path))


def load_speech_tokenizer(path: str | Path, weights_path: str | Path | None = None):
    """
    Load a SpeechTokenizer checkpoint: a config JSON and a weights file.

    Args:
        path (`str` or `Path`):
            A directory holding `config.json` and one `.safetensors` weights file (`model.safetensors`), or the
            config JSON itself. Pickled weights (`.pt`, `.ckpt`, `.bin`, such as the released `SpeechTokenizer.pt`)
            are refused, with the command that converts them.
        weights_path (`str` or `Path`, *optional*):
            The weights file, when it is not found beside the config.

    Returns:
        `SpeechTokenizer` in eval mode, with `.config` set.

    Raises:
        `FileNotFoundError` / `ValueError`: naming the file, for a missing file, an unknown weights format, missing or
        unexpected weights, or codebooks that were never initialised.
    """
    path = Path(path)
    config_path = path / CONFIG_NAME if path.is_dir() else path
    if not config_path.is_file():
        raise FileNotFoundError(f"SpeechTokenizer config not found: {config_path}")
    if weights_path is None:
        folder = config_path.parent
        candidates = [folder / WEIGHTS_NAME] if (folder / WEIGHTS_NAME).is_file() else []
        candidates = candidates or sorted(
            p for p in folder.iterdir() if p.suffix in (".safetensors", *_PICKLED_WEIGHTS_SUFFIXES)
        )
        if len(candidates) != 1:
            raise FileNotFoundError(
                f"expected one weights file beside {config_path} (model.safetensors), "
                f"found {[p.name for p in candidates]}; pass weights_path"
            )
        weights_path = candidates[0]
    weights_path = Path(weights_path)
    if not weights_path.is_file():
        raise FileNotFoundError(f"SpeechTokenizer weights not found: {weights_path}")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_path}: not valid JSON ({error})") from error
    model = build_speech_tokenizer(config)
    state = _read_weights(weights_path)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{weights_path} does not match {config_path}: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    if not codebooks_initialised(model):
        raise ValueError(f"{weights_path}: the RVQ codebooks were never initialised (all zero); every code would be 0")
    return model.eval()


class SpeechTokenEncoder:
    """
    Turns waveforms into SpeechTokenizer RVQ layer-1 codes (the semantic tokens AlignCap feeds to the LLM).

    Args:
        model (`SpeechTokenizer`):
            A loaded model ([`load_speech_tokenizer`]) or a built one whose codebooks were fitted or randomised.
        batch_size (`int`, *optional*, defaults to `16`):
            Clips per forward pass in [`~SpeechTokenEncoder.encode_batch`].

    Example:
    ```python
    >>> import numpy as np
    >>> encoder = SpeechTokenEncoder(randomize_codebooks(build_speech_tokenizer(seed=0)))
    >>> codes = encoder(np.zeros(16000, dtype=np.float32), 16000)
    >>> codes.shape, codes.dtype, encoder.tokens_per_second, encoder.codebook_size
    ((50,), dtype('int64'), 50.0, 64)

    ```
    """

    def __init__(self, model, batch_size: int = 16):
        if not codebooks_initialised(model):
            raise ValueError(
                "the SpeechTokenizer's codebooks are all zero (never initialised), so every frame would be code 0: "
                "load a trained checkpoint, or call fit_speech_codebook / randomize_codebooks"
            )
        self.model = model.eval()
        self.batch_size = batch_size
        self.hop = int(model.downsample_rate)

    @classmethod
    def from_pretrained(cls, path: str | Path, weights_path: str | Path | None = None, **kwargs) -> SpeechTokenEncoder:
        """[`load_speech_tokenizer`] then wrap it."""
        return cls(load_speech_tokenizer(path, weights_path), **kwargs)

    @property
    def sampling_rate(self) -> int:
        return int(self.model.sample_rate)

    @property
    def tokens_per_second(self) -> float:
        return self.sampling_rate / self.hop

    @property
    def codebook_size(self) -> int:
        return int(_first_codebook(self.model).codebook_size)

    def _resampled(self, waveform: np.ndarray, sampling_rate: int) -> np.ndarray:
        waveform = np.asarray(waveform, dtype=np.float32)
        if waveform.ndim != 1 or waveform.size == 0:
            raise ValueError(f"expected a non-empty mono (1-D) waveform, got shape {waveform.shape}")
        if sampling_rate != self.sampling_rate:
            waveform = soxr.resample(waveform, sampling_rate, self.sampling_rate)
        return waveform

    @torch.no_grad()
    def encode_batch(self, waveforms: Sequence[np.ndarray], sampling_rate: int) -> list[np.ndarray]:
        """
        RVQ layer-1 codes of each waveform: `ceil(n_samples_at_16kHz / 320)` int64 codes each (50 per second).
        Clips of a batch are zero-padded to the longest and each is cut back to its own frame count.
        """
        waveforms = [self._resampled(w, sampling_rate) for w in waveforms]
        out: list[np.ndarray] = []
        for start in range(0, len(waveforms), self.batch_size):
            batch, lengths = _as_batch(waveforms[start : start + self.batch_size])
            codes = self.model.encode(batch, n_q=1)[0]  # (batch, frames) of RVQ layer 1
            out += [codes[i, : _frames(n, self.hop)].numpy().astype(np.int64) for i, n in enumerate(lengths)]
        return out

    def __call__(self, waveform: np.ndarray, sampling_rate: int) -> np.ndarray:
        """Codes of one clip; the `tokenize_audio` callable of [`~hfpref.encoders.audio_tokens.audio_token_prompts`]."""
        return self.encode_batch([waveform], sampling_rate)[0]


def add_speech_tokens(tokenizer, model, codebook_size: int, prefix: str = "st") -> list[int]:
    """
    Add `<st_0>` ... `<st_{codebook_size - 1}>` to an LLM tokenizer and resize the model's embeddings.

    Train the new rows under LoRA with [`speech_lora_config`] (peft's `trainable_token_indices`), which leaves the
    text vocabulary's rows frozen. See [`~hfpref.encoders.audio_tokens.add_audio_tokens`] for the details.

    Returns:
        `list[int]`: token ids of codes `0 .. codebook_size - 1`.
    """
    return add_audio_tokens(tokenizer, model, codebook_size, prefix=prefix)


def speech_token_ids(tokenizer, prefix: str = "st") -> list[int]:
    """
    The ids of the speech tokens a tokenizer holds, in code order.

    Raises:
        `ValueError`: when it holds none, or the codes are not `0 .. n - 1`.
    """
    vocab = tokenizer.get_vocab()
    codes = sorted(int(t[len(prefix) + 2 : -1]) for t in vocab if t.startswith(f"<{prefix}_") and t.endswith(">"))
    if not codes:
        raise ValueError(f"the tokenizer has no speech tokens <{prefix}_N>; call add_speech_tokens first")
    if codes != list(range(len(codes))):
        raise ValueError(f"speech-token codes are not contiguous from 0: {codes[:5]}...")
    return [vocab[speech_token(c, prefix)] for c in codes]


def speech_lora_config(
    speech_token_ids: Sequence[int],
    r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.0,
    target_modules: Sequence[str] | str | None = ("q_proj", "k_proj", "v_proj", "o_proj"),
    embedding_module: str = "embed_tokens",
) -> LoraConfig:
    """
    A LoRA config for a speech-token student: rank-`r` adapters (AlignCap: r = 8) plus trainable rows for the speech
    tokens (peft's `trainable_token_indices`, a small delta saved with the adapter; the text rows stay frozen and
    disabling the adapter also disables the delta, so the adapter-disabled model is exactly the base LLM). With tied
    embeddings (Qwen2.5) peft wraps the LM head too, sharing the delta, so a speech token's output row is its trained
    input row; TRL's fused LM head reads that head once [`prepare_fused_lm_head`] has run (hfpref's DPO and GRPO
    trainers call it).

    Args:
        speech_token_ids (`Sequence[int]`): ids of the speech tokens, e.g. from [`add_speech_tokens`].
        r (`int`, *optional*, defaults to `8`): LoRA rank.
        lora_alpha (`int`, *optional*, defaults to `16`): LoRA scaling numerator.
        lora_dropout (`float`, *optional*, defaults to `0.0`): dropout on the LoRA input.
        target_modules (`Sequence[str]` or `str`, *optional*, defaults to the attention projections):
            modules that get adapters (`"all-linear"` for every linear layer but the output one).
        embedding_module (`str`, *optional*, defaults to `"embed_tokens"`): name of the input embedding module.

    Example:
    ```python
    >>> config = speech_lora_config([100, 101])
    >>> config.r, config.trainable_token_indices
    (8, {'embed_tokens': [100, 101]})

    ```
    """
    if r < 1 or not speech_token_ids:
        raise ValueError(f"r={r} must be >= 1 and speech_token_ids must not be empty")
    if isinstance(target_modules, (list, tuple)):
        target_modules = list(target_modules)
    return LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=target_modules,
        trainable_token_indices={embedding_module: [int(i) for i in speech_token_ids]},
        task_type="CAUSAL_LM",
    )


def prepare_fused_lm_head(model) -> bool:
    """
    Let TRL's fused LM head (`trl.trainer.utils.add_fused_lm_head`, which DPO and GRPO score log-probabilities
    through) read an output layer whose speech-token rows peft trains.

    With tied embeddings (Qwen2.5, Gemma, Llama 3.2 1B) peft's `trainable_token_indices` on `embed_tokens` also wraps
    `lm_head`, in a `TrainableTokensWrapper` sharing the input layer's delta, so that the output row of a speech token
    is the trained input row. The fused head reads `lm_head.weight` and `lm_head.bias` off that module: the wrapper
    answers `weight` (the base matrix with the trained rows written in, the delta's gradient flowing through) but has
    no `bias`, and the first training step failed with `'TrainableTokensWrapper' object has no attribute 'bias'`.
    This sets the wrapper's `bias` to its output layer's (`None`: decoder LM heads have none), with the adapter on
    or off. An untied head that peft does not wrap is left alone.

    Args:
        model (`PreTrainedModel` or `peft.PeftModel`): the policy, after peft wrapped it.

    Returns:
        `bool`: whether the output layer was a trainable-token wrapper (and now has a `bias`).

    Raises:
        `ValueError`: for an output layer with a bias, which peft 0.21's trainable tokens drop from the unfused forward
        (https://github.com/huggingface/peft/issues/3649), so the fused and unfused log-probabilities would differ.
    """
    from peft.utils.other import TrainableTokensWrapper  # noqa: PLC0415

    head = model.get_output_embeddings()
    if not isinstance(head, TrainableTokensWrapper):
        return False
    if head.token_adapter.base_layer.bias is not None:
        raise ValueError(
            "the output layer has a bias and peft trains some of its rows (trainable_token_indices on a tied LM "
            "head): peft drops that bias in its forward but TRL's fused LM head adds it, so they would disagree"
        )
    head.bias = None  # a plain attribute: TRL's lookup then no longer reaches peft's `__getattr__`
    return True


TOKEN_ROWS_NAME = "added_token_rows.safetensors"


def _embedding_weight(layer):
    """The weight of an embedding or output layer, through peft's trainable-token wrapper when there is one."""
    if layer is None:
        return None
    adapter = getattr(layer, "token_adapter", None)
    return adapter.base_layer.weight if adapter is not None else layer.weight


def trainable_token_ids(model) -> list[int]:
    """The ids of the rows a LoRA adapter's `trainable_token_indices` trains (active adapter), sorted; `[]` if none."""
    config = model.peft_config[model.active_adapter]
    indices = getattr(config, "trainable_token_indices", None) or []
    if isinstance(indices, dict):
        indices = [i for ids in indices.values() for i in ids]
    return sorted({int(i) for i in indices})


def token_rows_state(model, state_dict: dict | None = None) -> dict[str, torch.Tensor]:
    """
    The base model's rows of the tokens an adapter's `trainable_token_indices` trains: the input-embedding rows and,
    for an untied output layer, the output rows. Saved next to the adapter ([`TOKEN_ROWS_NAME`]) instead of the whole
    embedding matrix and LM head (peft's `save_embedding_layers="auto"` saves both whole once the vocabulary was
    resized): the adapter's delta holds the trained input rows, these are what the resized base had, so
    [`load_speech_adapter`] rebuilds the same model.

    Args:
        model (`peft.PeftModel`): the model with its adapter.
        state_dict (`dict`, *optional*): the model's full state dict, when the parameters are partitioned (ZeRO-3).

    Returns:
        `dict[str, torch.Tensor]`: `token_ids`, `input_embeddings` and, when the output layer is untied,
        `output_embeddings` (rows in `token_ids` order); empty when the adapter trains no token rows.
    """
    ids = trainable_token_ids(model)
    if not ids:
        return {}
    names = {id(p): n for n, p in model.named_parameters()}
    index = torch.tensor(ids)
    rows = {"token_ids": index}
    inputs = _embedding_weight(model.get_input_embeddings())
    outputs = _embedding_weight(model.get_output_embeddings())
    for key, weight in (("input_embeddings", inputs), ("output_embeddings", outputs)):
        if weight is None or (key == "output_embeddings" and weight is inputs):
            continue
        name = names.get(id(weight))
        if state_dict is not None and name is not None:
            weight = state_dict.get(name, state_dict.get(name.replace(".default", ""), weight))
        rows[key] = weight.detach()[index].to("cpu").contiguous()
    return rows


def save_adapter_without_embeddings(model, output_dir, *, state_dict=None, is_main_process: bool = True, **kwargs):
    """
    `model.save_pretrained(output_dir, save_embedding_layers=False, ...)` plus the base rows of the trained tokens
    ([`token_rows_state`]) in `output_dir/added_token_rows.safetensors`: a few kilobytes of rows instead of the
    whole embedding matrix and LM head peft would add for a resized vocabulary (hundreds of MB for a 1B LLM).

    Args:
        model (`peft.PeftModel`): the model with its adapter.
        output_dir (`str`): the adapter folder.
        state_dict (`dict`, *optional*): the model's full state dict (ZeRO-3), passed on to `save_pretrained`.
        is_main_process (`bool`, *optional*, defaults to `True`): only the main process writes.
        **kwargs: passed on to `save_pretrained` (`selected_adapters`, ...).
    """
    from safetensors.torch import save_file  # noqa: PLC0415

    model.save_pretrained(
        output_dir, state_dict=state_dict, is_main_process=is_main_process, save_embedding_layers=False, **kwargs
    )
    rows = token_rows_state(model, state_dict)
    if rows and is_main_process:
        save_file(rows, str(Path(output_dir) / TOKEN_ROWS_NAME), metadata={"format": "pt"})


def load_speech_adapter(adapter_dir, *, is_trainable: bool = False, **model_kwargs):
    """
    Load an adapter saved by [`save_adapter_without_embeddings`] (the KD and DPO trainers save that way): the base
    model named in its `adapter_config.json`, its embeddings resized to the saved tokenizer (speech tokens included),
    the base rows of the speech tokens written back from `added_token_rows.safetensors`, then the adapter.

    Args:
        adapter_dir (`str`): the adapter folder (adapter, tokenizer and rows).
        is_trainable (`bool`, *optional*, defaults to `False`): load the adapter for further training.
        **model_kwargs: passed on to the base model's `from_pretrained` (`dtype`, ...).

    Returns:
        `tuple[peft.PeftModel, PreTrainedTokenizerBase]`.
    """
    from peft import PeftConfig, PeftModel  # noqa: PLC0415
    from safetensors.torch import load_file  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    from ..utils.safe_loading import load_pretrained  # noqa: PLC0415

    if not Path(adapter_dir).is_dir():  # a Hub repo: the rows file comes with the adapter, tokenizer and config
        from huggingface_hub import snapshot_download  # noqa: PLC0415

        adapter_dir = snapshot_download(str(adapter_dir))
    config = PeftConfig.from_pretrained(str(adapter_dir))
    tokenizer = load_pretrained(AutoTokenizer, str(adapter_dir))
    base_name = adapter_base_model(adapter_dir, config.base_model_name_or_path)
    base = load_pretrained(AutoModelForCausalLM, base_name, **model_kwargs)
    resized = base.get_input_embeddings().num_embeddings < len(tokenizer)
    if resized:
        base.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    rows_path = Path(adapter_dir) / TOKEN_ROWS_NAME
    if resized and not rows_path.exists() and not _adapter_has_embedding_tables(Path(adapter_dir)):
        raise ValueError(
            f"{adapter_dir}: the tokenizer has {len(tokenizer)} tokens, the base model "
            f"{base_name} fewer, and neither {TOKEN_ROWS_NAME} nor the adapter holds the rows of "
            "the added tokens: they would be random. Save the adapter with save_adapter_without_embeddings."
        )
    if rows_path.exists():
        rows = load_file(str(rows_path))
        index = rows["token_ids"].long()
        layers = {"input_embeddings": base.get_input_embeddings(), "output_embeddings": base.get_output_embeddings()}
        with torch.no_grad():
            for key, layer in layers.items():
                if key in rows and layer is not None:
                    layer.weight[index] = rows[key].to(layer.weight.dtype)
    return PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=is_trainable), tokenizer


def adapter_base_model(adapter_dir, base_model_name_or_path: str | None) -> str:
    """
    The base model an adapter folder's `adapter_config.json` names (`base_model_name_or_path`), found where it is: an
    existing folder as it is; a folder that is not there (the adapter was moved, or downloaded from the Hub) but was
    saved beside the adapter under its name (a tiny LLM in `<adapter_dir>/tiny_llm`) from there; else a Hub id
    (`org/name`) as it is. A config that names no base, or a local base that is nowhere, is refused, naming the file.

    Example:
    ```python
    >>> adapter_base_model("/no/adapter", "meta-llama/Llama-3.2-1B")
    'meta-llama/Llama-3.2-1B'

    ```
    """
    config_file = Path(adapter_dir) / "adapter_config.json"
    name = base_model_name_or_path
    if not name:
        raise ValueError(
            f"{config_file}: base_model_name_or_path is null, so the adapter names no base model; set it to the base "
            "model's Hub id or folder"
        )
    if Path(name).is_dir():
        return name
    hub_id = re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name) is not None and not name.startswith(".")
    beside = Path(adapter_dir) / Path(name).name
    if (beside / "config.json").is_file():  # also for `out/tiny_llm`, which reads like a Hub id
        return str(beside)
    if not hub_id:
        raise FileNotFoundError(
            f"{config_file}: the base model {name!r} is not there, nor beside the adapter ({beside})"
        )
    return name


def _adapter_has_embedding_tables(adapter_dir: Path) -> bool:
    """Whether a saved adapter holds whole embedding or LM-head tables (peft's `save_embedding_layers=True`)."""
    from safetensors import safe_open  # noqa: PLC0415

    path = adapter_dir / "adapter_model.safetensors"
    if not path.is_file():
        return False
    with safe_open(str(path), framework="pt") as f:
        return any(key.endswith(("embed_tokens.weight", "lm_head.weight")) for key in f.keys())


TOKENIZER_KINDS = ("byte_level", "metaspace")

# What two real decoders' config.json ship, kept by `build_tiny_speech_llm(shape=...)`, which cuts only the sizes
# (width, depth, heads, vocabulary; Qwen's max_window_layers, 24 of 24 layers, follows the depth).
# Qwen/Qwen2.5-0.5B: tied input and output embeddings, q/k/v projections with a bias (Qwen2's always have one),
# a sliding window that is off.
QWEN25_05B_SHAPE = {
    "model_type": "qwen2",
    "tie_word_embeddings": True,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "sliding_window": 32768,
    "use_sliding_window": False,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
}
# TinyLlama/TinyLlama-1.1B-Chat-v1.0, config.json: an untied LM head, no attention bias.
TINYLLAMA_11B_SHAPE = {
    "model_type": "llama",
    "tie_word_embeddings": False,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-5,
    "hidden_act": "silu",
    "attention_bias": False,
    "initializer_range": 0.02,
}
# shape name -> (shipped values, the tokenizer kind of the real model's family)
LLM_SHAPES = {"qwen2.5": (QWEN25_05B_SHAPE, "byte_level"), "tinyllama": (TINYLLAMA_11B_SHAPE, "metaspace")}


def train_metaspace_tokenizer(texts: Iterable[str], vocab_size: int = 400):
    """
    A SentencePiece-style BPE tokenizer trained on `texts` (`tokenizers`, offline): a `Metaspace` pre-tokenizer and
    decoder (`"▁"` marks a word start, prepended to the first word as Llama's does), byte fallback, and the special
    tokens `<unk>`, `<s>`, `</s>`, `<pad>` with ids 0-3. Llama, Mistral and Gemma tokenize this way: a word after a
    space is one token (`"▁A"`), the same word glued to what precedes it another (`"A"`).

    Returns:
        `tokenizers.Tokenizer`: without a post-processor.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: PLC0415

    texts = [text for text in texts if isinstance(text, str) and text]
    if not texts:
        raise ValueError("train_metaspace_tokenizer needs at least one non-empty text")
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    bytes_alphabet = [f"<0x{b:02X}>" for b in range(256)]
    tokenizer.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=vocab_size + len(bytes_alphabet),
            special_tokens=["<unk>", "<s>", "</s>", "<pad>", *bytes_alphabet],
            show_progress=False,
        ),
    )
    return tokenizer


def build_tiny_speech_llm(
    texts: Iterable[str],
    codebook_size: int,
    *,
    seed: int = 0,
    vocab_size: int = 400,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    max_position_embeddings: int = 512,
    tokenizer_kind: str | None = None,
    shape: str | None = None,
):
    """
    A random LLM with a tokenizer trained on `texts` and the speech tokens `<st_0>` ... added (offline runs and tests;
    a real run loads an LLM by name and calls [`add_speech_tokens`]).

    The tokenizer prepends `<s>` and appends nothing, like Llama's, and pads with `<pad>`. The model has 4 attention
    heads sharing 2 key/value heads (grouped-query attention, as both real shapes have).

    Args:
        texts (`Iterable[str]`): corpus of the tokenizer (captions, prompts, instructions).
        codebook_size (`int`): speech-token codes to add.
        seed (`int`, *optional*, defaults to `0`): seed of the weights.
        vocab_size (`int`, *optional*, defaults to `400`): largest text vocabulary.
        hidden_size (`int`, *optional*, defaults to `64`): model width (intermediate size is twice it).
        num_hidden_layers (`int`, *optional*, defaults to `2`): decoder layers.
        max_position_embeddings (`int`, *optional*, defaults to `512`): longest sequence.
        tokenizer_kind (`str`, *optional*):
            `"byte_level"` (GPT-2 / RoBERTa-style BPE, as CLAP's and Qwen's) or `"metaspace"` (SentencePiece-style, as
            Llama's: [`train_metaspace_tokenizer`]). Defaults to the shape's family (`"byte_level"` without a shape).
        shape (`str`, *optional*):
            A real decoder whose shipped config is kept, cut to the widths and depth above: `"qwen2.5"`
            (`Qwen2ForCausalLM` with Qwen/Qwen2.5-0.5B's values, [`QWEN25_05B_SHAPE`]: tied LM head, biased q/k/v
            projections, rope theta 1e6) or `"tinyllama"` (`LlamaForCausalLM` with TinyLlama-1.1B's,
            [`TINYLLAMA_11B_SHAPE`]: untied LM head, rope theta 1e4). Without it, a `LlamaForCausalLM` of
            `LlamaConfig`'s defaults (untied).

    Returns:
        `tuple[PreTrainedModel, PreTrainedTokenizerFast]`: a `LlamaForCausalLM` or a `Qwen2ForCausalLM`.
    """
    from tokenizers import Tokenizer, processors  # noqa: PLC0415
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast  # noqa: PLC0415

    from .clap import train_clap_tokenizer  # noqa: PLC0415

    if shape is not None and shape not in LLM_SHAPES:
        raise ValueError(f"shape={shape!r} is not one of {list(LLM_SHAPES)}")
    shipped, family_tokenizer = LLM_SHAPES[shape] if shape is not None else ({"model_type": "llama"}, "byte_level")
    tokenizer_kind = family_tokenizer if tokenizer_kind is None else tokenizer_kind
    if tokenizer_kind not in TOKENIZER_KINDS:
        raise ValueError(f"tokenizer_kind={tokenizer_kind!r} is not one of {list(TOKENIZER_KINDS)}")
    texts = list(texts)
    if tokenizer_kind == "metaspace":
        backend = train_metaspace_tokenizer(texts, vocab_size=vocab_size)
    else:
        backend = Tokenizer.from_str(train_clap_tokenizer(texts, vocab_size=vocab_size).backend_tokenizer.to_str())
    bos_id = backend.token_to_id("<s>")
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    settings = dict(shipped)
    if settings["model_type"] == "qwen2":  # every layer below max_window_layers, as the shipped 24 of 24
        settings["max_window_layers"] = num_hidden_layers
    config = AutoConfig.for_model(
        **settings,
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    from ..utils.distributed import zero3_init_disabled  # noqa: PLC0415

    # Built whole, as `LlamaForCausalLM(config)` always was: in a ZeRO-3 launch `from_config` would partition it at
    # construction (zero.Init), and the trainers' first evaluation, before DeepSpeed prepares the model, would read
    # empty weights; DeepSpeed partitions it when the trainer prepares it.
    with torch.random.fork_rng(devices=[]), zero3_init_disabled():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
        add_speech_tokens(tokenizer, model, codebook_size)
    return model, tokenizer


def speech_encoder_for(script_args, train_dataset=None, *, seed: int = 0, save_directory: str | Path | None = None):
    """
    The [`SpeechTokenEncoder`] of a speech-emotion recipe: the checkpoint at `script_args.speech_tokenizer_path`, or,
    offline without one, a tiny SpeechTokenizer whose first codebook is fitted by k-means on the training clips'
    audio (`script_args.audio_column` of `train_dataset`). A fitted one is saved to `save_directory` when given, so
    that later stages (pairs, DPO) tokenize speech the same way.
    """
    from ..data.audio import decode_audio  # noqa: PLC0415

    if script_args.speech_tokenizer_path is not None:
        return SpeechTokenEncoder.from_pretrained(
            script_args.speech_tokenizer_path, script_args.speech_tokenizer_weights
        )
    if train_dataset is None:
        raise ValueError("no speech_tokenizer_path and no training clips to fit a speech codebook on")
    column = script_args.audio_column
    waveforms = [
        decode_audio(v, SPEECH_TOKENIZER_SAMPLING_RATE, row=i, column=column)
        for i, v in enumerate(train_dataset[column])
    ]
    model = fit_speech_codebook(build_speech_tokenizer(seed=seed), waveforms, seed=seed)
    if save_directory is not None:
        save_speech_tokenizer(model, save_directory)
    return SpeechTokenEncoder(model)
