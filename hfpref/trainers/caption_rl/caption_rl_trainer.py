import json
import math
import os
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np
import torch
from datasets import Dataset
from torch.optim.lr_scheduler import LambdaLR
from transformers import TrainerCallback

from ...models.captioning import (
    Rollout,
    caption_collator,
    check_generation_config,
    decode,
    encode_audio,
    encoder_input_name,
    eos_token_ids,
    ids_to_text,
    is_audio_llm,
    prepare_captioner,
    processed_log_probs,
    rollout_logits,
    unwrap,
)
from ...utils.distributed import apply_peft, frozen_copy, gather_whole_for_forward, shard_separately
from ..base_trainer import BaseTrainer
from .caption_rl_config import CaptionRLConfig


KL_CONTROLLER_FILE = "kl_controller.json"


class _AdaptiveKLCallback(TrainerCallback):
    """Calls the trainer's adaptive-KL update after every optimizer step."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer._update_kl_coef()


def distinct_n(texts: Sequence[str], n: int) -> float:
    """
    Distinct-n: distinct n-grams over all n-grams of a set of captions (0 when there are none).

    Example:
    ```python
    >>> distinct_n(["a dog barks", "a dog runs"], 1)
    0.6666666666666666

    ```
    """
    grams = [tuple(w[i : i + n]) for t in texts for w in [t.split()] for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def sequence_advantages(
    rewards: torch.Tensor, num_samples: int, baseline: str, baseline_rewards: torch.Tensor | None = None
) -> torch.Tensor:
    """
    Advantage of each sampled caption: its reward minus a baseline. `rewards` holds `num_samples` consecutive rows per
    clip; `baseline` is `"greedy"` (the clip's greedy caption's reward, `baseline_rewards`, SCST), `"loo"` (the mean
    reward of the clip's other samples, RLOO), `"group"` (the group's mean, divided by its standard deviation: GRPO's
    advantage) or `"none"` (no baseline: plain REINFORCE, an ablation).

    Example:
    ```python
    >>> sequence_advantages(torch.tensor([1.0, 0.0, 0.5, 0.5]), 2, "loo").tolist()
    [1.0, -1.0, 0.0, 0.0]
    >>> [round(a, 3) for a in sequence_advantages(torch.tensor([1.0, 0.0, 0.5, 0.5]), 2, "group").tolist()]
    [0.707, -0.707, 0.0, 0.0]

    ```
    """
    grouped = rewards.view(-1, num_samples)
    if baseline == "greedy":
        if baseline_rewards is None:
            raise ValueError("the greedy baseline needs the greedy captions' rewards")
        return (grouped - baseline_rewards.view(-1, 1)).flatten()
    if baseline == "loo":
        if num_samples < 2:
            raise ValueError("the leave-one-out baseline needs at least 2 samples per clip")
        return (grouped - (grouped.sum(1, keepdim=True) - grouped) / (num_samples - 1)).flatten()
    if baseline == "group":
        # GRPO (DeepSeekMath, eq. 3): the clip's group of samples, standardised by its mean and standard deviation.
        if num_samples < 2:
            raise ValueError("the group baseline needs at least 2 samples per clip")
        return ((grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4)).flatten()
    if baseline == "none":
        return rewards.clone()
    raise ValueError(f"baseline={baseline!r} is not one of ['greedy', 'loo', 'group', 'none']")


def reinforce_loss(log_probs: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """
    SCST/RLOO policy-gradient loss, `-mean_i A_i * sum_t log p(c_i,t | c_i,<t, a_i)` (DESIGN section 4, the paper's
    eq. 5), with `log_probs` and `mask` of shape `(rows, steps)` and one advantage per row.
    """
    return -(advantages * (log_probs * mask).sum(-1)).mean()


def ppo_clip_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    mask: torch.Tensor,
    advantages: torch.Tensor,
    cliprange: float,
    per_token_penalty: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    PPO's clipped surrogate, `-min(r_t A, clip(r_t, 1 - eps, 1 + eps) A)` with `r_t = exp(log p - log p_old)` per
    token, plus an optional per-token penalty (the KL term), averaged over the unmasked tokens of the batch.

    Returns `(loss, clip_fraction)`.
    """
    ratio = torch.exp(log_probs - old_log_probs)
    unclipped = ratio * advantages[:, None]
    clipped = torch.clamp(ratio, 1 - cliprange, 1 + cliprange) * advantages[:, None]
    per_token = -torch.minimum(unclipped, clipped)
    if per_token_penalty is not None:
        per_token = per_token + per_token_penalty
    tokens = mask.sum().clamp(min=1)
    clip_fraction = (((ratio - 1).abs() > cliprange).float() * mask).sum() / tokens
    return (per_token * mask).sum() / tokens, clip_fraction.detach()


# What each `kl_estimator` optimises (the logged `kl` is always the k3 estimate of KL(pi || ref)); shown on the card.
KL_OPTIMISED = {
    "k3": "loss exp(-d) + d - 1: gradient of KL(ref || pi)",
    "k2": "loss d^2 / 2: gradient of KL(pi || ref)",
    "k1": "reward - kl_coef * sum d: E[reward] - kl_coef * KL(pi || ref)",
}


def k3_kl(log_probs: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    """Per-token `KL(pi || ref)` estimator `exp(d) - d - 1` with `d = log ref - log pi` (unbiased, >= 0)."""
    delta = ref_log_probs - log_probs
    return torch.exp(delta) - delta - 1


def kl_penalty(log_probs: torch.Tensor, ref_log_probs: torch.Tensor, estimator: str) -> torch.Tensor:
    r"""
    Per-token KL estimate between the policy and the reference on the policy's own samples
    ([Schulman, 2020](http://joschu.net/blog/kl-approx.html)), with `d = log pi - log ref`:

    - `"k1"`: `d`, unbiased for `KL(pi || ref)`; used detached, subtracted from the reward (its gradient as a loss
      would be zero in expectation);
    - `"k2"`: `d^2 / 2`, biased but low-variance; as a loss its expected gradient is that of `KL(pi || ref)`;
    - `"k3"`: `exp(-d) + d - 1`, unbiased for `KL(pi || ref)` and >= 0; as a loss its expected gradient is that of
      `KL(ref || pi)` (the expected gradient is `E_pi[(1 - ref / pi) grad log pi] = -E_ref[grad log pi]`).

    Example:
    ```python
    >>> pi, ref = torch.log(torch.tensor([0.5])), torch.log(torch.tensor([0.25]))  # d = log 2
    >>> [round(kl_penalty(pi, ref, e).item(), 4) for e in ("k1", "k2", "k3")]
    [0.6931, 0.2402, 0.1931]

    ```
    """
    if estimator == "k3":
        return k3_kl(log_probs, ref_log_probs)
    delta = log_probs - ref_log_probs
    if estimator == "k2":
        return 0.5 * delta**2
    if estimator == "k1":
        return delta
    raise ValueError(f"estimator={estimator!r} is not one of ['k3', 'k2', 'k1']")


def adaptive_kl_coef(coef: float, kl: float, target: float, samples: int, horizon: int) -> float:
    """
    One update of Ziegler et al.'s adaptive KL coefficient: `coef * (1 + clip(kl / target - 1, -0.2, 0.2) *
    samples / horizon)`.

    Example:
    ```python
    >>> round(adaptive_kl_coef(0.1, kl=12.0, target=6.0, samples=100, horizon=1000), 6)  # KL too high: clipped to 0.2
    0.102
    >>> round(adaptive_kl_coef(0.1, kl=5.4, target=6.0, samples=100, horizon=1000), 6)  # 10 % low: -0.1 * 0.1
    0.099

    ```
    """
    error = min(max(kl / target - 1.0, -0.2), 0.2)
    return coef * (1.0 + error * samples / horizon)


def disable_dropout(model) -> None:
    """
    Turn off every dropout of `model` in place, as TRL's `disable_dropout_in_model`, and also the probabilities that
    transformers models keep as plain floats on their modules and apply functionally (Whisper's `dropout`,
    `activation_dropout`, attention `dropout` and `layerdrop`, Llama's `attention_dropout`), which TRL's misses.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            module.p = 0.0
        for name, value in list(vars(module).items()):
            if isinstance(value, float) and ("dropout" in name or "layerdrop" in name):
                setattr(module, name, 0.0)


def policy_and_reference(model, peft_config, ref_model, *, needs_reference: bool, no_dropout: bool):
    """
    The policy and its frozen reference, as a captioning trainer holds them: `model` wrapped with `peft_config`
    (when given); the reference `ref_model`, else (when `needs_reference`) a frozen copy of the policy, whole on every
    process also when ZeRO-3 partitioned it at load, except under peft, whose reference is the adapter-disabled base
    (`None` here); every dropout of both turned off with `no_dropout`.

    Returns:
        `(model, ref_model, is_peft)`.
    """
    if peft_config is not None:
        model = apply_peft(model, peft_config)
    is_peft = hasattr(model, "disable_adapter")
    if needs_reference and ref_model is None and not is_peft:
        ref_model = frozen_copy(model)
    if ref_model is not None:
        ref_model.eval().requires_grad_(False)
    if no_dropout:
        disable_dropout(model)
        if ref_model is not None:
            disable_dropout(ref_model)
    return model, ref_model, is_peft


def check_audio_datasets(audio_column: str, **datasets) -> None:
    """Refuse an empty dataset, or one without the audio column, naming it (`datasets`: name -> dataset or None)."""
    for name, ds in datasets.items():
        if ds is not None and len(ds) == 0:
            raise ValueError(f"{name} is empty")
        if ds is not None and audio_column not in ds.column_names:
            raise ValueError(f"{name} has no audio column {audio_column!r}; it has {ds.column_names}")


def place_audio_encoder(trainer, model) -> None:
    """
    Where a captioning trainer's audio encoder runs alone once per batch ([`encode_audio`]), outside the model's
    forward: under FSDP2 it is a unit of its own (an audio LLM's projector and input embeddings too, which
    [`~hfpref.models.audio_llm.encode_prompt`] calls there); under ZeRO-3 an audio LLM's audio tower is gathered
    whole for its forward (it reads its position embeddings' weight directly).
    """
    base = unwrap(model)
    if trainer.is_fsdp_enabled:
        if is_audio_llm(model):
            alone = [base.model.audio_tower, base.model.multi_modal_projector, base.get_input_embeddings()]
        else:
            alone = [base.get_encoder()]
        shard_separately(model, alone, trainer.accelerator.state.fsdp_plugin)
    if is_audio_llm(model):
        gather_whole_for_forward([base.model.audio_tower])


def warmup_step_decay(steps_per_epoch: float, warmup_epochs: float, every_epochs: int | None, gamma: float):
    """LR multiplier: linear warm-up over `warmup_epochs`, then x`gamma` every `every_epochs` epochs."""

    def factor(step: int) -> float:
        epoch = step / steps_per_epoch
        scale = min(1.0, (step + 1) / (warmup_epochs * steps_per_epoch)) if warmup_epochs > 0 else 1.0
        if every_epochs:
            scale *= gamma ** math.floor(epoch / every_epochs)
        return scale

    return factor


def unwrap_peft(model):
    """The peft model inside a DDP wrapper (what owns `disable_adapter`)."""
    return getattr(model, "module", model)


class CaptionRLTrainer(BaseTrainer):
    """
    RL fine-tuning of seq2seq audio captioners (Whisper-style, `SpeechEncoderDecoderModel`), thin on
    [`~transformers.Trainer`]: SCST as in "Aligning Audio Captions with Human Preferences"
    (https://huggingface.co/papers/2509.14659, eq. 5), RLOO, and a PPO-style clipped objective.

    Per batch the audio encoder runs once; its output feeds the sampled decode(s), the greedy decode and
    the log-prob pass. Rewards are plain callables `f(completions, **columns) -> list[float]` receiving the
    dataset's other columns (`audio`, `audio_embedding`, `references`, ...) as keyword arguments.

    Args:
        model: the captioner (`AutoModelForSpeechSeq2Seq`), or a peft model wrapping one.
        reward_funcs (`Callable` or `list[Callable]`): reward callables; trainers take callables, never names.
        args ([`CaptionRLConfig`]): training configuration.
        train_dataset (`datasets.Dataset`): audio column (`datasets.Audio(decode=False)`) plus reward columns.
        eval_dataset (`datasets.Dataset`, *optional*): evaluated by greedy decoding and mean reward.
        processing_class: the captioner's processor (feature extractor + tokenizer).
        ref_model (*optional*): the frozen reference for `kl_coef > 0`; by default a frozen copy of `model`, or
            the adapter-disabled base under peft.
        peft_config (`peft.PeftConfig`, *optional*): wrap `model` with this adapter config.
    """

    _name = "caption_rl"
    _tag_names = ["hfpref", "caption-rl"]
    _card_metric = "eval_reward"

    def __init__(
        self,
        model,
        reward_funcs: Callable | list[Callable],
        args: CaptionRLConfig,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | None = None,
        processing_class=None,
        ref_model=None,
        peft_config=None,
        callbacks=None,
        optimizers=(None, None),
    ):
        if not isinstance(args, CaptionRLConfig):
            raise TypeError(f"args must be a CaptionRLConfig, got {type(args).__name__}")
        if processing_class is None:
            raise ValueError("CaptionRLTrainer needs processing_class= the captioner's processor")
        reward_funcs = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
        for func in reward_funcs:
            if not callable(func):
                raise TypeError(
                    f"reward {func!r} is not callable; build callables with hfpref.rewards.get_reward_func"
                )
        if args.reward_weights is not None and len(args.reward_weights) != len(reward_funcs):
            raise ValueError(f"{len(args.reward_weights)} reward_weights for {len(reward_funcs)} reward functions")
        check_audio_datasets(args.audio_column, train_dataset=train_dataset, eval_dataset=eval_dataset)
        # One decoder prompt for the whole run, fixed before the reference is copied: an SFT checkpoint's saved
        # prompt is kept; a Whisper nobody prepared gets English, transcribe, no timestamps (prepare_captioner).
        prepare_captioner(model, processing_class.tokenizer)
        # Samples are scored under the distribution they were drawn from: dropout off (`disable_dropout`).
        model, self.ref_model, self.is_peft = policy_and_reference(
            model, peft_config, ref_model, needs_reference=args.kl_coef > 0, no_dropout=args.disable_dropout
        )
        self.kl_coef = args.kl_coef  # fixed, or adapted after every step (`kl_target`)
        self._step_kl = [0.0, 0.0]  # this process's sum of sampled-caption KLs and their count since the last step
        self.reward_funcs = reward_funcs
        self.reward_names = [getattr(f, "__name__", f"reward_{i}") for i, f in enumerate(reward_funcs)]
        self.reward_weights = torch.tensor(args.reward_weights or [1.0] * len(reward_funcs))
        self.tokenizer = processing_class.tokenizer
        collator = caption_collator(model, processing_class, audio_column=args.audio_column, caption_column=None)
        super().__init__(
            model=model,
            args=args,
            data_collator=collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        if self.ref_model is not None:
            self.ref_model.to(self.args.device)
        self.add_callback(_AdaptiveKLCallback(self))
        place_audio_encoder(self, model)
        check_generation_config(model)
        self._eos_ids = eos_token_ids(model)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.args.step_decay_every_epochs is None and self.args.warmup_epochs == 0:
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            steps_per_epoch = max(1.0, num_training_steps / max(self.args.num_train_epochs, 1e-9))
            factor = warmup_step_decay(
                steps_per_epoch, self.args.warmup_epochs, self.args.step_decay_every_epochs, self.args.step_decay_gamma
            )
            self.lr_scheduler = LambdaLR(self.optimizer if optimizer is None else optimizer, factor)
        return self.lr_scheduler

    def _reward_columns(self, inputs: dict, repeats: int) -> dict:
        name = encoder_input_name(self.model)
        columns = {}
        for key, value in inputs.items():
            if key in (name, "attention_mask", "labels") or not isinstance(value, list):
                continue
            columns[key] = [v for v in value for _ in range(repeats)]
        return columns

    def score(self, completions: list[str], columns: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted sum of the rewards of `completions`; stops with an error naming a reward that misbehaves."""
        totals = torch.zeros(len(completions))
        components = {}
        for func, name, weight in zip(self.reward_funcs, self.reward_names, self.reward_weights):
            values = func(completions=completions, **columns)
            if values is None or len(values) != len(completions):
                got = "None" if values is None else f"{len(values)} values"
                raise ValueError(f"reward {name!r} returned {got} for {len(completions)} completions")
            values = torch.tensor([float("nan") if v is None else float(v) for v in values])
            if not torch.isfinite(values).all():
                bad = (~torch.isfinite(values)).nonzero().flatten().tolist()
                raise ValueError(f"reward {name!r} returned NaN or inf for completions {bad[:5]}: {values[bad[:5]]}")
            totals += weight * values
            components[name] = values
        return totals, components

    def _ref_log_probs(self, model, inputs, rollout: Rollout) -> torch.Tensor:
        """The reference's log-probs of the rollout, under the same processed (temperature, support) distribution."""
        mask = inputs.get("attention_mask")
        with torch.no_grad():
            if self.ref_model is not None:
                logits = rollout_logits(
                    self.ref_model, encode_audio(self.ref_model, inputs), rollout, attention_mask=mask
                )
            else:
                with unwrap_peft(model).disable_adapter():
                    logits = rollout_logits(model, encode_audio(model, inputs), rollout, attention_mask=mask)
        return processed_log_probs(logits, rollout, eos_ids=self._eos_ids)[0]

    def _rollout_seed(self) -> int:
        """
        Seed of this micro-batch's sampling: a function of (`seed`, optimizer step, index of the micro-batch in the
        step's global batch) only, the index being the one of its data (`micro-step * num_processes +
        process_index`, [`~hfpref.trainers.base_trainer.micro_batch_index`]). So each clip's samples, and the
        update, do not depend on how a global batch is split over processes and accumulation steps, and a resumed run
        draws what the uninterrupted one drew.
        """
        step, index = self._micro_batch()
        return int(np.random.SeedSequence([self.args.seed, step, index]).generate_state(1)[0])

    def _sample(self, model, encoded, inputs) -> Rollout:
        """`num_samples` captions per clip from the policy, drawn with this micro-batch's seed (see `_rollout_seed`)."""
        args = self.args
        device = encoded.last_hidden_state.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self._rollout_seed())
            return decode(
                model,
                encoded,
                attention_mask=inputs.get("attention_mask"),
                do_sample=True,
                num_return_sequences=args.num_samples,
                max_new_tokens=args.max_new_tokens,
                temperature=args.temperature,
                top_k=args.top_k,
            )

    def training_step(self, model, inputs, num_items_in_batch=None):
        """
        One rollout and update. The policy optimised is the sampler's: every log-probability (policy gradient, PPO
        ratio, KL to the reference) is taken under the logits divided by `temperature` and restricted to the tokens
        the sampler could draw (top-k, and the generation config's suppressed/forced tokens).
        """
        model.train()
        inputs = self._prepare_inputs(inputs)
        args, k = self.args, self.args.num_samples
        audio_mask = inputs.get("attention_mask")
        encoded = encode_audio(model, inputs)  # once: feeds every decode and the first log-prob pass
        policy = unwrap(model)
        was_training = policy.training
        policy.eval()  # decoding without dropout
        samples = self._sample(model, encoded, inputs)
        baseline = {"scst": args.scst_baseline, "rloo": "loo", "ppo": args.ppo_baseline}[args.loss_type]
        greedy = None
        if baseline == "greedy":
            greedy = decode(
                model, encoded, attention_mask=audio_mask, do_sample=False, max_new_tokens=args.max_new_tokens
            )
        policy.train(was_training)

        sample_texts = ids_to_text(self.tokenizer, samples)
        sample_rewards, components = self.score(sample_texts, self._reward_columns(inputs, k))
        # Logged as the sample-weighted mean over every micro-batch of every process (`_record_metric`); the spread
        # and distinct-n are those within each micro-batch, averaged so.
        rows = len(sample_texts)
        greedy_rewards = None
        if greedy is not None:
            greedy_texts = ids_to_text(self.tokenizer, greedy)
            greedy_rewards, _ = self.score(greedy_texts, self._reward_columns(inputs, 1))
            self._record_metric("reward_greedy", greedy_rewards.mean().item(), len(greedy_texts))
            beats = sample_rewards.view(-1, k) > greedy_rewards[:, None]
            self._record_metric("sample_beats_greedy", beats.float().mean().item(), rows)

        self._record_metric("reward", sample_rewards.mean().item(), rows)
        self._record_metric("reward_std", sample_rewards.std().item() if rows > 1 else 0.0, rows)
        for name, values in components.items():
            self._record_metric(f"rewards/{name}", values.mean().item(), rows)
        self._record_metric("completion_length", float(np.mean([len(t.split()) for t in sample_texts])), rows)
        self._record_metric("distinct_1", distinct_n(sample_texts, 1), rows)
        self._record_metric("distinct_2", distinct_n(sample_texts, 2), rows)
        self._record_metric("empty_completions", float(np.mean([not t for t in sample_texts])), rows)

        ref_log_probs = self._ref_log_probs(model, inputs, samples) if args.kl_coef > 0 else None
        device = encoded.last_hidden_state.device

        def advantages_of(log_probs, mask):
            """The baseline-subtracted rewards, less `kl_coef` times the caption's k1 KL when that is the estimator."""
            rewards = sample_rewards
            if ref_log_probs is not None and args.kl_estimator == "k1":
                k1 = (kl_penalty(log_probs.detach(), ref_log_probs, "k1") * mask).sum(-1)
                rewards = rewards - self.kl_coef * k1.cpu()
            return sequence_advantages(rewards, k, baseline, greedy_rewards).to(device)

        def loss_penalty(log_probs):
            """The per-token KL term added to the loss (none for `k1`, which is in the reward)."""
            if ref_log_probs is None or args.kl_estimator == "k1":
                return None
            return self.kl_coef * kl_penalty(log_probs, ref_log_probs, args.kl_estimator)

        # As transformers' Trainer does: each micro-batch's loss is divided by the number of micro-batches per
        # update, so accumulation gives the gradient of the global batch's mean, not the sum of the micro-batch means.
        scale = getattr(self, "current_gradient_accumulation_steps", args.gradient_accumulation_steps)
        backward_kwargs = {"scale_wrt_gas": False} if self.accelerator.distributed_type == "DEEPSPEED" else {}

        if args.loss_type in ("scst", "rloo"):
            logits = rollout_logits(model, encoded, samples, attention_mask=audio_mask)
            log_probs, mask = processed_log_probs(logits, samples, eos_ids=self._eos_ids)
            loss = reinforce_loss(log_probs, mask, advantages_of(log_probs, mask))
            penalty = loss_penalty(log_probs)
            if penalty is not None:
                loss = loss + (penalty * mask).sum(-1).mean()
            if ref_log_probs is not None:
                kl = (k3_kl(log_probs.detach(), ref_log_probs) * mask).sum(-1).mean()
                self._record_metric("kl", kl.item(), rows)
                self._add_step_kl(kl.item(), rows)
            self.accelerator.backward(loss / scale, **backward_kwargs)
            return loss.detach() / scale

        old_log_probs = advantages = None
        for epoch in range(args.ppo_epochs):
            if epoch > 0:
                encoded = encode_audio(model, inputs)  # weights changed since the last pass
            logits = rollout_logits(model, encoded, samples, attention_mask=audio_mask)
            log_probs, mask = processed_log_probs(logits, samples, eos_ids=self._eos_ids)
            if old_log_probs is None:  # the sampling policy's, fixed for every epoch
                old_log_probs = log_probs.detach()
                advantages = advantages_of(log_probs, mask)
                if ref_log_probs is not None:  # the sampling policy's KL to the reference, as SCST and RLOO log it
                    token_kl = k3_kl(old_log_probs, ref_log_probs)
                    kl = (token_kl * mask).sum(-1).mean().item()
                    self._record_metric("kl", kl, rows)
                    self._add_step_kl(kl, rows)
            penalty = loss_penalty(log_probs)
            loss, clip_fraction = ppo_clip_loss(log_probs, old_log_probs, mask, advantages, args.cliprange, penalty)
            self.accelerator.backward(loss, **backward_kwargs)
            if epoch < args.ppo_epochs - 1:
                if args.max_grad_norm:
                    self.accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad()
        self._record_metric("clip_fraction", clip_fraction.item(), mask.sum().clamp(min=1).item())
        return loss.detach()

    def _add_step_kl(self, kl: float, rows: int) -> None:
        self._step_kl[0] += kl * rows
        self._step_kl[1] += rows

    def _update_kl_coef(self) -> None:
        """After an optimizer step: adapt `kl_coef` to the step's mean KL over every process (`kl_target`)."""
        if self.args.kl_target is not None:
            total, samples = self._sum_over_processes(torch.tensor(self._step_kl, dtype=torch.float64)).tolist()
            if samples > 0:
                self.kl_coef = adaptive_kl_coef(
                    self.kl_coef, total / samples, self.args.kl_target, int(samples), self.args.kl_horizon
                )
            self._record_metric("kl_coef", self.kl_coef)
        self._step_kl = [0.0, 0.0]

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.kl_target is not None and self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
            with open(os.path.join(folder, KL_CONTROLLER_FILE), "w") as f:
                json.dump({"kl_coef": self.kl_coef, "global_step": self.state.global_step}, f)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        if self.args.kl_target is not None:
            path = os.path.join(resume_from_checkpoint, KL_CONTROLLER_FILE)
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"{resume_from_checkpoint} has no {KL_CONTROLLER_FILE}: it was not saved by a run with kl_target, so "
                    "the adaptive KL coefficient it reached is unknown"
                )
            with open(path) as f:
                self.kl_coef = float(json.load(f)["kl_coef"])

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Greedy-decode the eval set and report the mean reward, its components and caption statistics."""
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("evaluate needs an eval_dataset")
        model = self.model
        was_training = model.training
        model.eval()
        texts, totals, parts = [], [], defaultdict(list)
        gather = self.accelerator.gather_for_metrics  # every process decodes its shard; metrics cover the whole set
        try:
            for inputs in self.get_eval_dataloader(dataset):
                inputs = self._prepare_inputs(inputs)
                with torch.no_grad():
                    greedy = decode(
                        model,
                        encode_audio(model, inputs),
                        attention_mask=inputs.get("attention_mask"),
                        do_sample=False,
                        max_new_tokens=self.args.max_new_tokens,
                    )
                batch_texts = ids_to_text(self.tokenizer, greedy)
                rewards, components = self.score(batch_texts, self._reward_columns(inputs, 1))
                texts += gather(batch_texts, use_gather_object=True)
                totals += gather(rewards.to(self.args.device)).tolist()
                for name, values in components.items():
                    parts[name] += gather(values.to(self.args.device)).tolist()
        finally:
            model.train(was_training)
        metrics = {
            f"{metric_key_prefix}_reward": float(np.mean(totals)),
            f"{metric_key_prefix}_completion_length": float(np.mean([len(t.split()) for t in texts])),
            f"{metric_key_prefix}_distinct_1": distinct_n(texts, 1),
            f"{metric_key_prefix}_distinct_2": distinct_n(texts, 2),
        }
        for name, values in parts.items():
            metrics[f"{metric_key_prefix}_rewards/{name}"] = float(np.mean(values))
        self.log(metrics)
        return metrics

    def _card_variant(self) -> str:
        return self.args.loss_type

    def _card_training_args(self) -> dict:
        return {
            "loss_type": self.args.loss_type,
            "num_samples": self.args.num_samples,
            "rewards": ", ".join(self.reward_names),
            "reward_weights": self.args.reward_weights,
            "kl_coef": self.args.kl_coef,
            "kl_target": self.args.kl_target,
            "kl_estimator": f"{self.args.kl_estimator} ({KL_OPTIMISED[self.args.kl_estimator]})",
            "disable_dropout": self.args.disable_dropout,
            "learning_rate": self.args.learning_rate,
        }
