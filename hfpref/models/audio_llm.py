"""
Audio-LLM captioners: a continuous audio encoder and a projector in front of a causal LLM
(`Qwen2AudioForConditionalGeneration` first), behind the same functions the seq2seq captioners use
([`~hfpref.models.captioning.encode_audio`], [`~hfpref.models.captioning.decode`],
[`~hfpref.models.captioning.rollout_logits`]).

A caption is the assistant's answer to one chat turn: the processor's chat template renders the system turn, the user
turn with the clip (`Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>`, the audio token expanded by the processor to one
per audio frame the encoder keeps) and the instruction, then `<|im_start|>assistant\\n`; the caption follows and ends
with the tokenizer's eos (`<|im_end|>`). Prompts are left-padded, so that every row's caption starts at the same
column, as `generate` lays them out.

The audio encoder and projector run once per batch: [`encode_prompt`] returns the prompt's input embeddings with the
audio features scattered into the audio-token positions (an [`AudioPrompt`]); the sampled decodes, the greedy decode
and the log-prob pass all start from it (`generate(inputs_embeds=...)`), never from the audio again.
"""

import copy
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..data.audio import decode_audio
from ._common import caption_ids, unwrap


# Qwen/Qwen2-Audio-7B-Instruct as published (config.json, generation_config.json, preprocessor_config.json and the
# special tokens of its tokenizer), transcribed here because no test may download it. Tiny test models keep every
# value but the widths and depths.
QWEN2_AUDIO_CONFIG = {
    "architectures": ["Qwen2AudioForConditionalGeneration"],
    "model_type": "qwen2_audio",
    "audio_token_index": 151646,
    "ignore_index": -100,
    "audio_config": {
        "model_type": "qwen2_audio_encoder",
        "num_mel_bins": 128,
        "encoder_layers": 32,
        "encoder_attention_heads": 20,
        "encoder_ffn_dim": 5120,
        "d_model": 1280,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "activation_function": "gelu",
        "scale_embedding": False,
        "max_source_positions": 1500,
    },
    "text_config": {
        "model_type": "qwen2",
        "vocab_size": 156032,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000,
        "sliding_window": 32768,
        "use_sliding_window": False,
        "tie_word_embeddings": False,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
    },
}
QWEN2_AUDIO_GENERATION_CONFIG = {
    "bos_token_id": 151643,
    "pad_token_id": 151643,
    "eos_token_id": [151643, 151645],
    "do_sample": True,
    "top_k": 0,
    "top_p": 0.5,
    "repetition_penalty": 1.1,
}
QWEN2_AUDIO_FEATURE_EXTRACTOR = {
    "feature_size": 128,
    "sampling_rate": 16000,
    "hop_length": 160,
    "chunk_length": 30,
    "n_fft": 400,
    "padding_value": 0.0,
    "return_attention_mask": True,
}
QWEN2_AUDIO_SPECIAL_TOKENS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|AUDIO|>": 151646,
    "<|audio_bos|>": 151647,
    "<|audio_eos|>": 151648,
}
DEFAULT_CAPTION_INSTRUCTION = "Describe the sound in one sentence."

# The audio-LLM classes this module serves, by `config.architectures[0]`.
AUDIO_LLM_ARCHITECTURES = ("Qwen2AudioForConditionalGeneration",)


def _base(model):
    return unwrap(model)


def is_audio_llm(model) -> bool:
    """Whether `model` (possibly wrapped: peft, DDP) is a causal LLM with an audio encoder in front (Qwen2-Audio)."""
    config = _base(model).config
    # An audio token in the text stream is what makes it one (CLAP also has audio and text configs, and no such token).
    audio_token = getattr(config, "audio_token_id", getattr(config, "audio_token_index", None))
    return (
        not getattr(config, "is_encoder_decoder", False)
        and hasattr(config, "audio_config")
        and audio_token is not None
    )


def check_audio_llm(model) -> None:
    """Refuse an audio LLM this module does not know how to feed (named, with what it serves)."""
    # By class, not name: FSDP2's `fully_shard` renames it (`FSDPQwen2AudioForConditionalGeneration`).
    cls = type(_base(model))
    if not any(c.__name__ in AUDIO_LLM_ARCHITECTURES for c in cls.__mro__):
        raise ValueError(
            f"{cls.__name__} is an audio LLM hfpref does not caption with yet; it serves {AUDIO_LLM_ARCHITECTURES}"
        )


PROMPT_ONLY_TOKENS = ("<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>", "<|im_start|>")


def prepare_audio_llm(model, tokenizer=None) -> None:
    """
    Add the tokens a caption must never hold to the generation config's `suppress_tokens` (kept in saved
    checkpoints): the audio placeholder (from the config) and, given the tokenizer, its delimiters and
    `<|im_start|>` ([`PROMPT_ONLY_TOKENS`]). A sampled `<|AUDIO|>` would make the model's own forward over prompt +
    caption look for audio features it has none for. Idempotent.
    """
    base = _base(model)
    ids = {base.config.audio_token_id}
    if tokenizer is not None:
        vocab = tokenizer.get_vocab()
        ids |= {vocab[token] for token in PROMPT_ONLY_TOKENS if token in vocab}
    gen = base.generation_config
    eos = set(gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id])
    gen.suppress_tokens = sorted(set(gen.suppress_tokens or []) | (ids - eos))


def caption_messages(instruction: str = DEFAULT_CAPTION_INSTRUCTION) -> list[dict]:
    """The chat of one caption request: the clip, then the instruction (the system turn is the template's default)."""
    return [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": instruction}]}]


def caption_prompt(processor, instruction: str = DEFAULT_CAPTION_INSTRUCTION) -> str:
    """The chat-templated prompt text (audio placeholder not yet expanded) a caption is the answer to."""
    return processor.apply_chat_template(caption_messages(instruction), add_generation_prompt=True, tokenize=False)


@dataclass
class AudioPrompt:
    r"""
    A batch of caption prompts with their audio already encoded: what [`encode_prompt`] returns and every decode and
    log-prob pass of the batch starts from.

    Attributes:
        input_ids (`torch.LongTensor` of shape `(rows, prompt_length)`): the prompts, left-padded.
        attention_mask (`torch.LongTensor` of shape `(rows, prompt_length)`): 0 on the left padding.
        inputs_embeds (`torch.FloatTensor` of shape `(rows, prompt_length, hidden)`): the LLM's input embeddings of
            the prompts, the projected audio features in the audio-token positions.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    inputs_embeds: torch.Tensor

    @property
    def last_hidden_state(self) -> torch.Tensor:
        """The embeddings (the name the seq2seq encoder output gives its tensor: device, dtype, rows)."""
        return self.inputs_embeds

    def repeat_rows(self, repeats: int) -> "AudioPrompt":
        """Each prompt `repeats` times in a row, as `generate(num_return_sequences=repeats)` expands its inputs."""
        if repeats == 1:
            return self
        return AudioPrompt(
            *(t.repeat_interleave(repeats, dim=0) for t in (self.input_ids, self.attention_mask, self.inputs_embeds))
        )

    def detach(self) -> "AudioPrompt":
        return AudioPrompt(self.input_ids, self.attention_mask, self.inputs_embeds.detach())


def position_ids_of(attention_mask: torch.Tensor) -> torch.Tensor:
    """The position ids `generate` gives a left-padded batch: the count of attended tokens before each one."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 1)


def encode_prompt(model, inputs) -> AudioPrompt:
    """
    One pass of the audio encoder and projector over the batch's clips, scattered into the prompts' embeddings,
    exactly as the model's own forward merges them (`Qwen2AudioModel.forward`, audio tokens expanded by the
    processor).
    """
    from transformers.masking_utils import create_bidirectional_mask

    check_audio_llm(model)
    base = _base(model)
    inner = base.model
    features, feature_mask = inputs["input_features"], inputs["feature_attention_mask"]
    input_ids = inputs["input_ids"]
    tower = inner.audio_tower
    features = features.to(tower.device, dtype=next(tower.parameters()).dtype)
    feature_lengths, output_lengths = tower._get_feat_extract_output_lengths(feature_mask.to(tower.device).sum(-1))
    rows, _, frames = features.shape
    width = (frames - 2) // 2 + 1
    mask_2d = (torch.arange(width, device=features.device)[None, :] < feature_lengths[:, None]).long()
    dummy = torch.zeros((rows, width, 1), dtype=features.dtype, device=features.device)
    audio_mask = create_bidirectional_mask(config=tower.config, inputs_embeds=dummy, attention_mask=mask_2d)
    audio = inner.multi_modal_projector(tower(features, attention_mask=audio_mask).last_hidden_state)
    keep = torch.arange(audio.shape[1], device=audio.device)[None, :] < output_lengths.to(audio.device)[:, None]
    audio = audio[keep]
    embeds = base.get_input_embeddings()(input_ids)
    slots = input_ids == base.config.audio_token_id
    if int(slots.sum()) != audio.shape[0]:
        raise ValueError(
            f"the prompts hold {int(slots.sum())} audio tokens for {audio.shape[0]} audio frames: build them with the "
            "captioner's processor (it expands the audio token to the clip's length)"
        )
    embeds = embeds.masked_scatter(slots[..., None].to(embeds.device), audio.to(embeds.device, embeds.dtype))
    return AudioPrompt(input_ids, inputs["attention_mask"], embeds)


def generate_from_prompt(model, prompt: AudioPrompt, **kwargs):
    """`generate` from the encoded prompts (the audio is never re-encoded); the sequences hold prompt + completion."""
    return _base(model).generate(
        input_ids=prompt.input_ids, inputs_embeds=prompt.inputs_embeds, attention_mask=prompt.attention_mask, **kwargs
    )


def prompt_logits(model, prompt: AudioPrompt, completion_ids: torch.Tensor) -> torch.Tensor:
    """
    Teacher-forced next-token logits of `completion_ids` `(rows, steps)` after the (already row-expanded) prompts:
    `(rows, steps, vocab)`. The completion's tokens are attended to as `generate` attends to them (every generated
    position, also the padding after eos), at the positions it gives them. `model` may be wrapped (DDP, peft): the
    forward goes through it.
    """
    base = _base(model)
    steps = completion_ids.shape[1]
    embeds = torch.cat([prompt.inputs_embeds, base.get_input_embeddings()(completion_ids[:, :-1])], dim=1)
    ones = prompt.attention_mask.new_ones(completion_ids.shape[0], steps - 1)
    mask = torch.cat([prompt.attention_mask, ones], dim=1)
    out = model(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids_of(mask), use_cache=False)
    return out.logits[:, prompt.input_ids.shape[1] - 1 :]


@dataclass
class AudioLLMCaptionCollator:
    """
    Decode audio (never through `datasets`), build each clip's chat prompt with the processor (audio token expanded
    to the clip's length, features at the model's own sampling rate with its feature attention mask), left-pad the
    prompts; with `caption_column`, append each caption and eos and mask everything but them in `labels`.

    Every other column is passed through as a python list under its own name (reward callables receive them).

    Args:
        processor: the captioner's processor (`Qwen2AudioProcessor`: feature extractor, tokenizer, chat template).
        audio_column (`str`): audio column (`datasets.Audio(decode=False)` values or paths).
        caption_column (`str` or `None`): caption column to train on (SFT), or `None` (RL, decoding).
        instruction (`str`): the user turn's text after the clip.
        max_caption_tokens (`int`): captions are truncated to this many tokens (eos included).
    """

    processor: object
    audio_column: str = "audio"
    caption_column: str | None = "caption"
    instruction: str = DEFAULT_CAPTION_INSTRUCTION
    max_caption_tokens: int = 64

    def prompts(self, arrays: Sequence[np.ndarray]) -> dict:
        """The model inputs of the caption prompts of `arrays` (waveforms at the feature extractor's rate)."""
        tokenizer = self.processor.tokenizer
        side = tokenizer.padding_side
        tokenizer.padding_side = "left"
        try:
            text = [caption_prompt(self.processor, self.instruction)] * len(arrays)
            rate = self.processor.feature_extractor.sampling_rate
            inputs = self.processor(
                text=text, audio=list(arrays), sampling_rate=rate, padding=True, return_tensors="pt"
            )
        finally:
            tokenizer.padding_side = side
        return {k: inputs[k] for k in ("input_ids", "attention_mask", "input_features", "feature_attention_mask")}

    def __call__(self, features: list[dict]) -> dict:
        rate = self.processor.feature_extractor.sampling_rate
        arrays = [decode_audio(f[self.audio_column], rate, column=self.audio_column) for f in features]
        batch = self.prompts(arrays)
        if self.caption_column is not None:
            batch.update(
                append_captions(
                    self.processor.tokenizer,
                    batch,
                    [f[self.caption_column] for f in features],
                    self.max_caption_tokens,
                )
            )
        passthrough = {k for f in features for k in f} - {self.audio_column, self.caption_column}
        for key in sorted(passthrough):
            batch[key] = [f.get(key) for f in features]
        batch[self.audio_column] = [f[self.audio_column] for f in features]
        return batch


def append_captions(tokenizer, prompts: dict, captions: Sequence[str], max_tokens: int) -> dict[str, torch.Tensor]:
    """
    `input_ids`, `attention_mask` and `labels` of the left-padded prompts followed by each caption and eos (right-
    padded): `labels` is -100 everywhere but on the caption and its eos, in the causal-LM convention (the model's
    logit at position t predicts the label at t + 1).
    """
    rows = caption_ids(tokenizer, captions, max_tokens)
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    real = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    prompt_ids, prompt_mask = prompts["input_ids"], prompts["attention_mask"]
    labels = torch.cat([torch.full_like(prompt_ids, -100), ids.masked_fill(real == 0, -100)], dim=1)
    return {
        "input_ids": torch.cat([prompt_ids, ids], dim=1),
        "attention_mask": torch.cat([prompt_mask, real.to(prompt_mask.dtype)], dim=1),
        "labels": labels,
    }


def freeze_audio_tower(model) -> None:
    """Freeze the audio encoder (and the projector with it: `projector=True`), the default for fine-tuning."""
    for parameter in _base(model).model.audio_tower.parameters():
        parameter.requires_grad_(False)


def language_model_lora_targets(model) -> str:
    """A peft `target_modules` regex matching the LLM's linear layers only (the audio tower and projector left out)."""
    names = {
        n.rsplit(".", 1)[-1]
        for n, m in _base(model).model.language_model.named_modules()
        if isinstance(m, torch.nn.Linear)
    }
    return rf".*language_model\..*\.({'|'.join(sorted(names))})"


def build_tiny_qwen2_audio_captioner(
    texts: Iterable[str],
    *,
    seed: int = 0,
    shipped_ids: bool = True,
    clip_seconds: float | None = None,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    audio_d_model: int = 64,
    audio_layers: int = 2,
    vocab_size: int = 400,
):
    """
    A random-weight `Qwen2AudioForConditionalGeneration` built from Qwen2-Audio-7B-Instruct's config
    ([`QWEN2_AUDIO_CONFIG`]) cut to tiny widths and depths, with a byte-level BPE tokenizer trained on `texts`
    (Qwen2's kind) carrying the checkpoint's special tokens, its chat template and its `WhisperFeatureExtractor`.

    Args:
        texts (`Iterable[str]`): corpus of the tokenizer (captions, instructions).
        seed (`int`): seed of the weights.
        shipped_ids (`bool`, defaults to `True`): keep the checkpoint's token ids (special tokens at 151643..151648,
            vocabulary 156032 rows, the published generation config); `False` puts the special tokens right after the
            trained vocabulary, sizes the model to it and decodes greedily by default (a captioner trained from
            scratch: the quickstart).
        clip_seconds (`float`, *optional*): the audio window; `None` keeps the checkpoint's 30 s (3000 mel frames,
            1500 encoder positions). A shorter window sets `chunk_length` and `max_source_positions` to match.
        hidden_size, num_hidden_layers, audio_d_model, audio_layers: the cut widths and depths.
        vocab_size (`int`): largest trained text vocabulary.

    Returns:
        `(Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor)`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        GenerationConfig,
        PreTrainedTokenizerFast,
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    corpus = [*texts, DEFAULT_CAPTION_INSTRUCTION, "You are a helpful assistant.", "system user assistant Audio 1:"]
    backend.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
        ),
    )
    state = json.loads(backend.to_str())
    trained = len(state["model"]["vocab"])
    if shipped_ids:
        specials = dict(QWEN2_AUDIO_SPECIAL_TOKENS)
        model_vocab = QWEN2_AUDIO_CONFIG["text_config"]["vocab_size"]
    else:
        specials = {token: trained + i for i, token in enumerate(QWEN2_AUDIO_SPECIAL_TOKENS)}
        model_vocab = trained + len(specials)
    state["model"]["vocab"].update(specials)  # ids fixed in the model's vocabulary, then declared special
    state["added_tokens"] = [
        {
            "id": i,
            "content": t,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for t, i in specials.items()
    ]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(state)),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=QWEN2_AUDIO_CONFIG["text_config"]["max_position_embeddings"],
    )
    for token, i in specials.items():
        if tokenizer.convert_tokens_to_ids(token) != i:
            raise RuntimeError(
                f"the trained tokenizer gives {token} id {tokenizer.convert_tokens_to_ids(token)}, not {i}"
            )

    shipped = copy.deepcopy(QWEN2_AUDIO_CONFIG)
    audio, text = shipped["audio_config"], shipped["text_config"]
    extractor = dict(QWEN2_AUDIO_FEATURE_EXTRACTOR)
    if clip_seconds is not None:
        extractor["chunk_length"] = int(clip_seconds)
    feature_extractor = WhisperFeatureExtractor(**extractor)
    audio.update(
        d_model=audio_d_model,
        encoder_layers=audio_layers,
        encoder_attention_heads=2,
        encoder_ffn_dim=2 * audio_d_model,
        max_source_positions=feature_extractor.nb_max_frames // 2,
    )
    text.update(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=model_vocab,
        bos_token_id=specials["<|endoftext|>"],
        eos_token_id=specials["<|im_end|>"],
        pad_token_id=specials["<|endoftext|>"],
    )
    config = Qwen2AudioConfig(
        audio_config=audio,
        text_config=text,
        audio_token_index=specials["<|AUDIO|>"],
        ignore_index=shipped["ignore_index"],
    )
    config.architectures = list(shipped["architectures"])
    from ..utils.distributed import zero3_init_disabled

    # Built whole even in a ZeRO-3 launch (its zero.Init would hand `_init_weights` empty partitions); DeepSpeed
    # partitions the model when the trainer prepares it.
    with torch.random.fork_rng(devices=[]), zero3_init_disabled():
        torch.manual_seed(seed)
        model = Qwen2AudioForConditionalGeneration(config)
    # The checkpoint's sampling settings (top-p 0.5, repetition penalty 1.1) with its ids; a captioner trained from
    # scratch has none of its own: greedy, eos and pad only.
    generation = dict(QWEN2_AUDIO_GENERATION_CONFIG) if shipped_ids else {"do_sample": False}
    generation.update(
        bos_token_id=specials["<|endoftext|>"],
        pad_token_id=specials["<|endoftext|>"],
        eos_token_id=[specials["<|endoftext|>"], specials["<|im_end|>"]],
    )
    model.generation_config = GenerationConfig(**generation)
    processor = Qwen2AudioProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    return model, processor
