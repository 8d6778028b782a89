"""
Classifier-guided decoding: steer a frozen captioner towards captions a text classifier likes (audible ones)
by optimizing its key/value cache at inference time.

[Classifier-Guided Captioning Across Modalities](https://huggingface.co/papers/2501.03183), section III, on top of
ZeroCap's context optimization ([arXiv:2111.14447](https://huggingface.co/papers/2111.14447)). At every step, with
`C_0` the cache of the caption so far and `x` its last token:

1. one plain forward gives the unguided next-token distribution `p(. | C_0)` and its top-k candidate tokens;
2. every candidate continuation (caption so far + candidate) is scored by the classifier in one batched forward;
   the target over candidates is `q = softmax(log_odds / T)`;
3. an additive perturbation `delta` of the self-attention keys and values of `C_0` takes `n` normalized gradient
   steps on `lambda_ce * KL(p(. | C_0 + delta) || p(. | C_0)) + lambda_cls * CE(q, p_topk(. | C_0 + delta))`,
   where `p_topk` is the LM's distribution renormalized over the candidates;
4. the next token is the candidate the guided distribution ranks first; the perturbation is then dropped, and the
   next step starts from the unguided cache of the longer prefix (ZeroCap's `reset_context_delta`).

The fluency term is ZeroCap's `sum p (log p - log p0)`, the cross-entropy to the unguided distribution minus the
guided one's entropy, which is zero when the cache is unchanged. The model's weights are never updated (gradients are
taken with respect to the perturbation only).

Deviation from ZeroCap, for cost: candidates and their classifier scores are computed once per token from the
unguided distribution, not once per optimization step.

That is the reference mode (`GuidanceConfig(mode="reference")`: k = 512, n = 5). The default fast mode runs the same
steps with k = `fast_top_k` (8) candidates and n = `fast_num_optimization_steps` (2) steps of `5 / 2` times the step
size (the same path length), and its step-1 forward is the unguided forward itself, run with gradients on a zero
perturbation (`C_0 + 0 = C_0`, exact): 3 LM forwards and 8 classified candidates per token instead of 7 and 512.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput

from .guidance_config import GuidanceConfig


@dataclass
class GuidedDecodingOutput:
    r"""
    Result of [`guided_generate`].

    Attributes:
        sequences (`torch.LongTensor` of shape `(batch, steps)`):
            Generated ids (prompt excluded), padded with the pad id after eos.
        kl_to_unguided (`torch.FloatTensor` of shape `(batch, steps)`):
            `KL(p(. | C) || p(. | C_0))` of the distribution the token was picked from (0 where unguided).
        ce_to_unguided (`torch.FloatTensor` of shape `(batch, steps)`):
            `CE(p(. | C), p(. | C_0)) = -sum p(. | C) log p(. | C_0)` (the unguided entropy where unguided).
        classifier_loss_before (`torch.FloatTensor` of shape `(batch, steps)`):
            The classifier term `CE(q, p_topk)` on the unguided cache (0 where unguided).
        classifier_loss_after (`torch.FloatTensor` of shape `(batch, steps)`):
            The same after the `n` steps on the cache.
        unguided_log_prob (`torch.FloatTensor` of shape `(batch, steps)`):
            `log p(token | C_0)` of each picked token under the unguided model.
        finished (`torch.BoolTensor` of shape `(batch, steps)`):
            True at steps after a row's eos (its pad positions).
    """

    sequences: torch.Tensor
    kl_to_unguided: torch.Tensor
    ce_to_unguided: torch.Tensor
    classifier_loss_before: torch.Tensor
    classifier_loss_after: torch.Tensor
    unguided_log_prob: torch.Tensor
    finished: torch.Tensor


def _self_attention_cache(cache: Cache) -> Cache:
    return cache.self_attention_cache if isinstance(cache, EncoderDecoderCache) else cache


def _snapshot(cache: Cache) -> list:
    """Shallow copies of the self-attention layers: `update` concatenates into new tensors, so these keep `C_0`."""
    return [copy.copy(layer) for layer in _self_attention_cache(cache).layers]


def _zero_deltas(layers: list) -> list[torch.Tensor]:
    """The perturbation of every self-attention layer's keys and values, zero, as leaves to differentiate."""
    return [
        torch.zeros_like(t, dtype=torch.float32, requires_grad=True)
        for layer in layers
        for t in (layer.keys, layer.values)
    ]


def _detach_self_attention(cache: Cache) -> None:
    """Cut the autograd graph out of a cache computed on `C_0 + 0`: what is left is the unguided cache."""
    for layer in _self_attention_cache(cache).layers:
        layer.keys, layer.values = layer.keys.detach(), layer.values.detach()


def _perturbed_cache(template: Cache, layers: list, deltas: list[torch.Tensor]) -> Cache:
    """A fresh cache whose self-attention keys/values are `C_0 + delta`; the cross-attention cache is shared."""
    new_layers = []
    for i, layer in enumerate(layers):
        shifted = copy.copy(layer)
        shifted.keys = layer.keys + deltas[2 * i].to(layer.keys.dtype)
        shifted.values = layer.values + deltas[2 * i + 1].to(layer.values.dtype)
        new_layers.append(shifted)
    self_cache = copy.copy(_self_attention_cache(template))
    self_cache.layers = new_layers
    if isinstance(template, EncoderDecoderCache):
        cache = copy.copy(template)
        cache.self_attention_cache = self_cache
        cache.is_updated = dict(template.is_updated)
        return cache
    return self_cache


class _Decoder:
    """One decoding step of a causal LM or of an encoder-decoder captioner's decoder, on a given cache."""

    def __init__(self, model, encoder_outputs: BaseModelOutput | None, attention_mask: torch.Tensor | None):
        self.model = model
        self.encoder_outputs = encoder_outputs
        self.attention_mask = attention_mask
        # The generation config's suppressed tokens (Whisper's timestamps and prompt-only tokens) are never decoded,
        # guided or not, as `generate` would never emit them.
        suppress = getattr(getattr(model, "generation_config", None), "suppress_tokens", None) or []
        self.suppress = sorted({int(i) for i in suppress})

    def positions(self, mask: torch.Tensor) -> torch.Tensor:
        return (mask.long().cumsum(-1) - 1).clamp(min=0)

    def __call__(self, ids: torch.Tensor, cache: Cache | None) -> tuple[torch.Tensor, Cache]:
        if self.encoder_outputs is not None:
            out = self.model(
                encoder_outputs=self.encoder_outputs, decoder_input_ids=ids, past_key_values=cache, use_cache=True
            )
        else:
            mask = self.attention_mask[:, : (cache.get_seq_length() if cache is not None else 0) + ids.shape[1]]
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=self.positions(mask)[:, -ids.shape[1] :],
                past_key_values=cache,
                use_cache=True,
            )
        logits = out.logits[:, -1, :].float()
        if self.suppress:
            logits = logits.index_fill(
                -1, torch.tensor(self.suppress, device=logits.device), torch.finfo(logits.dtype).min
            )
        return logits, out.past_key_values


def candidate_target(log_odds: torch.Tensor, temperature: float) -> torch.Tensor:
    """
    The classifier's target over each row's candidates: `q = softmax(log_odds / temperature)`.

    Example:

    ```python
    >>> candidate_target(torch.tensor([[0.0, 1.0]]), 0.5)  # softmax([0, 2])
    tensor([[0.1192, 0.8808]])

    ```
    """
    return F.softmax(log_odds.float() / temperature, dim=-1)


def _classifier_target(
    classifier, tokenizer, prefixes: list[list[int]], candidates: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Target distribution over each row's candidates from the classifier's audible log-odds, one batched pass."""
    rows = [prefix + [token] for prefix, cand in zip(prefixes, candidates.tolist()) for token in cand]
    texts = [t.strip() for t in tokenizer.batch_decode(rows, skip_special_tokens=True)]
    log_odds = classifier.audible_log_odds(texts).to(candidates.device).float().view(candidates.shape)
    return candidate_target(log_odds, temperature)


def guidance_losses(
    logits: torch.Tensor, log_p0: torch.Tensor, candidates: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    The two terms of the guidance objective, per row: the fluency term `KL(p || p0) = sum p (log p - log p0)` of the
    guided distribution `p = softmax(logits)` from the unguided one, and the classifier term
    `CE(q, p_topk) = -sum_k q_k log p_topk(k)`, where `p_topk` is `p` renormalized over the row's `candidates`.

    Args:
        logits (`torch.Tensor` of shape `(batch, vocab)`): next-token logits on the perturbed cache.
        log_p0 (`torch.Tensor` of shape `(batch, vocab)`): unguided next-token log-probabilities.
        candidates (`torch.LongTensor` of shape `(batch, k)`): the top-k candidate token ids.
        target (`torch.Tensor` of shape `(batch, k)`): the classifier's target `q` over the candidates.
    """
    log_p = F.log_softmax(logits, dim=-1)
    kl = (log_p.exp() * (log_p - log_p0)).sum(-1)
    cls = -(target * F.log_softmax(logits.gather(1, candidates), dim=-1)).sum(-1)
    return kl, cls


def guidance_objective(kl: torch.Tensor, cls: torch.Tensor, config: GuidanceConfig) -> torch.Tensor:
    """
    Per-row objective the cache perturbation descends: `lambda_ce * KL(p || p0) + lambda_cls * CE(q, p_topk)`.

    Example:

    ```python
    >>> guidance_objective(torch.tensor([1.0]), torch.tensor([2.0]), GuidanceConfig(lambda_ce=0.5, lambda_cls=3.0))
    tensor([6.5000])

    ```
    """
    return config.lambda_ce * kl + config.lambda_cls * cls


def _row_norm(grad: torch.Tensor) -> torch.Tensor:
    return grad.flatten(1).norm(dim=1).view(-1, *([1] * (grad.dim() - 1))) + 1e-10


def guided_generate(
    model,
    tokenizer,
    classifier=None,
    *,
    input_ids: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    encoder_outputs: BaseModelOutput | None = None,
    decoder_input_ids: torch.Tensor | None = None,
    config: GuidanceConfig | None = None,
) -> GuidedDecodingOutput:
    r"""
    Decode with audibility-classifier guidance of the key/value cache (greedy when unguided).

    Works for causal LMs (pass `input_ids`, left-padded with an `attention_mask` for prompts of different lengths)
    and for encoder-decoder captioners such as Whisper (pass the audio's `encoder_outputs`, e.g. from
    [`~hfpref.models.captioning.encode_audio`], and optionally a `decoder_input_ids` prompt; the default is
    the captioner's own prompt, [`~hfpref.models.captioning.captioning_prefix`]: the decoder start token, or Whisper's
    start, language, task and no-timestamps tokens, as it was trained and as `generate` decodes; an unprepared Whisper
    is prepared first, with a warning). Tokens the generation
    config suppresses (Whisper's timestamps) are never decoded. All rows of the batch are decoded together; each row's perturbation is stepped on its
    own gradient. The first token of a decode whose prompt is a single token is unguided: its cache is empty.

    Args:
        model (`PreTrainedModel`):
            The frozen LM or captioner; it is put in eval mode for the call and its weights never change.
        tokenizer (`PreTrainedTokenizerBase`):
            The model's tokenizer, to turn candidate continuations into text for the classifier.
        classifier (*optional*):
            An object with `audible_log_odds(list[str]) -> torch.Tensor`, e.g.
            [`~hfpref.metrics.audibility.AudibilityClassifier`]. `None` decodes greedily.
        input_ids (`torch.LongTensor` of shape `(batch, prompt_length)`, *optional*):
            Causal LM prompt.
        attention_mask (`torch.LongTensor` of shape `(batch, prompt_length)`, *optional*):
            Its mask (left padding).
        encoder_outputs (`BaseModelOutput`, *optional*):
            Encoder output of an encoder-decoder captioner.
        decoder_input_ids (`torch.LongTensor` of shape `(batch, prompt_length)`, *optional*):
            Decoder prompt of an encoder-decoder captioner.
        config ([`GuidanceConfig`], *optional*):
            Guidance settings; defaults to the paper's (`top_k=512`, `lambda_ce=0.2`, `lambda_cls=0.6`).

    Returns:
        [`GuidedDecodingOutput`].
    """
    config = config or GuidanceConfig()
    guided = config.guided and classifier is not None
    if (input_ids is None) == (encoder_outputs is None):
        raise ValueError("pass input_ids (causal LM) or encoder_outputs (encoder-decoder captioner), not both")
    if encoder_outputs is not None:
        from ..models.captioning import _ensure_prepared, decoder_special_ids

        _, eos, pad = decoder_special_ids(model)
        hidden = encoder_outputs.last_hidden_state.detach()
        encoder_outputs = BaseModelOutput(last_hidden_state=hidden)
        batch, device = hidden.shape[0], hidden.device
        if decoder_input_ids is None:
            decoder_input_ids = torch.tensor([_ensure_prepared(model)], device=device).expand(batch, -1)
        prompt = decoder_input_ids
        if prompt.shape[0] != batch:
            raise ValueError(f"decoder_input_ids has {prompt.shape[0]} rows for {batch} encoded clips")
        mask = None
    else:
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else model.config.eos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        if eos is None:
            raise ValueError("the tokenizer and the model config both lack an eos token id")
        prompt, device = input_ids, input_ids.device
        batch = prompt.shape[0]
        mask = attention_mask if attention_mask is not None else torch.ones_like(prompt)
        mask = torch.cat([mask, mask.new_ones(batch, config.max_new_tokens)], dim=1)
    step = _Decoder(model, encoder_outputs, mask)

    # Text the classifier reads before each candidate: the prompt's non-pad tokens (when asked) and the caption so far.
    keep = (
        attention_mask.bool() if attention_mask is not None else torch.ones_like(prompt, dtype=torch.bool)
    ).tolist()
    prefixes = [
        [t for t, k in zip(row, row_keep) if k] if config.classify_prompt else []
        for row, row_keep in zip(prompt.tolist(), keep)
    ]

    was_training = model.training
    model.eval()
    stats = {name: [] for name in ("kl", "ce", "cls_before", "cls_after", "logp0")}
    tokens, done_before = [], []
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    try:
        with torch.no_grad():
            cache = step(prompt[:, :-1], None)[1] if prompt.shape[1] > 1 else None
        if cache is None:
            cache = (
                EncoderDecoderCache(DynamicCache(), DynamicCache()) if encoder_outputs is not None else DynamicCache()
            )
        last = prompt[:, -1:]
        for _ in range(config.max_new_tokens):
            context = _snapshot(cache) if _self_attention_cache(cache).get_seq_length() > 0 else None
            guide = guided and context is not None
            # The fast mode's unguided forward runs on `C_0 + delta` at `delta = 0`, with gradients: it gives
            # `p(. | C_0)` and the longer prefix's cache, and it is the first optimization step's forward as well.
            reuse = guide and config.mode == "fast"
            if reuse:
                deltas = _zero_deltas(context)
                with torch.enable_grad():
                    logits_at_zero, cache = step(last, _perturbed_cache(cache, context, deltas))
                _detach_self_attention(cache)
                logits0 = logits_at_zero.detach()
            else:
                with torch.no_grad():
                    logits0, cache = step(last, cache)
            log_p0 = F.log_softmax(logits0, dim=-1)
            zeros = torch.zeros(batch, device=device)
            kl, cls_before, cls_after = zeros, zeros, zeros
            ce = -(log_p0.exp() * log_p0).sum(-1)
            if guide:
                k = min(config.candidates, logits0.shape[-1])
                candidates = logits0.topk(k, dim=-1).indices
                target = _classifier_target(classifier, tokenizer, prefixes, candidates, config.classifier_temperature)
                active = (~finished).float()
                if not reuse:
                    deltas = _zero_deltas(context)
                step_size = config.optimization_step_size
                for i in range(config.optimization_steps):
                    with torch.enable_grad():
                        if reuse and i == 0:
                            logits = logits_at_zero
                        else:
                            logits, _ = step(last, _perturbed_cache(cache, context, deltas))
                        kl_i, cls_i = guidance_losses(logits, log_p0, candidates, target)
                        loss = (guidance_objective(kl_i, cls_i, config) * active).sum()
                        grads = torch.autograd.grad(loss, deltas)
                    if i == 0:
                        cls_before = cls_i.detach()
                    deltas = [
                        (d - step_size * g / _row_norm(g)).detach().requires_grad_(True) for d, g in zip(deltas, grads)
                    ]
                with torch.no_grad():
                    logits, _ = step(last, _perturbed_cache(cache, context, deltas))
                    kl, cls_after = guidance_losses(logits, log_p0, candidates, target)
                    ce = -(F.softmax(logits, dim=-1) * log_p0).sum(-1)
                    token = candidates.gather(1, logits.gather(1, candidates).argmax(-1, keepdim=True)).squeeze(1)
            else:
                token = logits0.argmax(-1)
            token = torch.where(finished, torch.full_like(token, pad), token)
            done_before.append(finished.clone())
            for name, value in zip(stats, (kl, ce, cls_before, cls_after, log_p0.gather(1, token[:, None])[:, 0])):
                stats[name].append(torch.where(finished, torch.zeros_like(value), value))
            tokens.append(token)
            for prefix, t, f in zip(prefixes, token.tolist(), finished.tolist()):
                if not f:
                    prefix.append(t)
            finished = finished | (token == eos)
            if finished.all():
                break
            last = token[:, None]
    finally:
        model.train(was_training)
    return GuidedDecodingOutput(
        sequences=torch.stack(tokens, dim=1),
        kl_to_unguided=torch.stack(stats["kl"], dim=1),
        ce_to_unguided=torch.stack(stats["ce"], dim=1),
        classifier_loss_before=torch.stack(stats["cls_before"], dim=1),
        classifier_loss_after=torch.stack(stats["cls_after"], dim=1),
        unguided_log_prob=torch.stack(stats["logp0"], dim=1),
        finished=torch.stack(done_before, dim=1),
    )


def guided_captions(
    model,
    processor,
    audio: Sequence,
    classifier=None,
    *,
    config: GuidanceConfig | None = None,
    batch_size: int = 8,
) -> list[str]:
    r"""
    Caption audio with an encoder-decoder captioner (Whisper-style), guided by an audibility classifier.

    Args:
        model: the captioner (`WhisperForConditionalGeneration`, `SpeechEncoderDecoderModel`, ...).
        processor: its processor (with `feature_extractor` and `tokenizer`).
        audio (`Sequence`): waveforms at the feature extractor's rate, `datasets.Audio(decode=False)` values, or paths.
        classifier: e.g. [`~hfpref.metrics.audibility.AudibilityClassifier`]; `None` decodes greedily.
        config ([`GuidanceConfig`], *optional*): guidance settings.
        batch_size (`int`, *optional*, defaults to `8`): clips decoded together.
    """
    import numpy as np

    from ..data.audio import decode_audio
    from ..models.captioning import encode_audio, encoder_input_name, extract_features, ids_to_text

    feature_extractor, tokenizer = processor.feature_extractor, processor.tokenizer
    rate = feature_extractor.sampling_rate
    arrays = [a if isinstance(a, np.ndarray) else decode_audio(a, rate, row=i) for i, a in enumerate(audio)]
    name = encoder_input_name(model)
    captions = []
    for i in range(0, len(arrays), batch_size):
        inputs = extract_features(feature_extractor, arrays[i : i + batch_size], name)
        inputs = {k: v.to(model.device) for k, v in inputs.items() if k in (name, "attention_mask")}
        with torch.no_grad():
            encoded = encode_audio(model, inputs)
        out = guided_generate(model, tokenizer, classifier, encoder_outputs=encoded, config=config)
        captions.extend(ids_to_text(tokenizer, out.sequences))
    return captions
