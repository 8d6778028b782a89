import copy
import math
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np
import torch
from datasets import Dataset
from torch.optim.lr_scheduler import LambdaLR
from transformers import Trainer

from .caption_rl_config import CaptionRLConfig
from .captioning_utils import (
    CaptionCollator,
    decode,
    encode_audio,
    encoder_input_name,
    ids_to_text,
    token_log_probs,
)


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


def warmup_step_decay(steps_per_epoch: float, warmup_epochs: float, every_epochs: int | None, gamma: float):
    """LR multiplier: linear warm-up over `warmup_epochs`, then x`gamma` every `every_epochs` epochs."""

    def factor(step: int) -> float:
        epoch = step / steps_per_epoch
        scale = min(1.0, (step + 1) / (warmup_epochs * steps_per_epoch)) if warmup_epochs > 0 else 1.0
        if every_epochs:
            scale *= gamma ** math.floor(epoch / every_epochs)
        return scale

    return factor


class CaptionRLTrainer(Trainer):
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

    _tag_names = ["hfpref", "caption-rl"]

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
        for name, ds in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset)):
            if ds is not None and len(ds) == 0:
                raise ValueError(f"{name} is empty")
            if ds is not None and args.audio_column not in ds.column_names:
                raise ValueError(f"{name} has no audio column {args.audio_column!r}; it has {ds.column_names}")
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        self.is_peft = hasattr(model, "disable_adapter")
        if args.kl_coef > 0 and ref_model is None and not self.is_peft:
            ref_model = copy.deepcopy(model)
        if ref_model is not None:
            ref_model.eval().requires_grad_(False)
        self.ref_model = ref_model
        self.reward_funcs = reward_funcs
        self.reward_names = [getattr(f, "__name__", f"reward_{i}") for i, f in enumerate(reward_funcs)]
        self.reward_weights = torch.tensor(args.reward_weights or [1.0] * len(reward_funcs))
        self.tokenizer = processing_class.tokenizer
        collator = CaptionCollator(
            processing_class.feature_extractor,
            audio_column=args.audio_column,
            caption_column=None,
            input_name=encoder_input_name(model),
        )
        self._metrics = defaultdict(list)
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
        self._eos_id = self.tokenizer.eos_token_id

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
            components[name] = values.mean().item()
        return totals, components

    def _kl(self, model, inputs, samples, log_probs, repeats):
        with torch.no_grad():
            if self.ref_model is not None:
                ref_encoded = encode_audio(self.ref_model, inputs)
                ref_log_probs, _ = token_log_probs(self.ref_model, ref_encoded, samples, repeats=repeats)
            else:
                with model.disable_adapter():
                    ref_encoded = encode_audio(model, inputs)
                    ref_log_probs, _ = token_log_probs(model, ref_encoded, samples, repeats=repeats)
        delta = ref_log_probs - log_probs
        return torch.exp(delta) - delta - 1  # k3 estimator, >= 0

    def training_step(self, model, inputs, num_items_in_batch=None):
        model.train()
        inputs = self._prepare_inputs(inputs)
        args, k = self.args, self.args.num_samples
        encoded = encode_audio(model, inputs)  # once: feeds every decode and the first log-prob pass
        was_training = model.training
        model.eval()  # decoding without dropout
        samples = decode(
            model,
            encoded,
            do_sample=True,
            num_return_sequences=k,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
        )
        needs_greedy = args.loss_type == "scst" or (args.loss_type == "ppo" and args.ppo_baseline == "greedy")
        greedy = decode(model, encoded, do_sample=False, max_new_tokens=args.max_new_tokens) if needs_greedy else None
        model.train(was_training)

        sample_texts = ids_to_text(self.tokenizer, samples)
        sample_rewards, components = self.score(sample_texts, self._reward_columns(inputs, k))
        grouped = sample_rewards.view(-1, k)
        if greedy is not None:
            greedy_texts = ids_to_text(self.tokenizer, greedy)
            greedy_rewards, _ = self.score(greedy_texts, self._reward_columns(inputs, 1))
            advantages = (grouped - greedy_rewards[:, None]).flatten()
            self._metrics["reward_greedy"].append(greedy_rewards.mean().item())
            self._metrics["sample_beats_greedy"].append((grouped > greedy_rewards[:, None]).float().mean().item())
        else:  # leave-one-out baseline
            advantages = (grouped - (grouped.sum(1, keepdim=True) - grouped) / (k - 1)).flatten()
        advantages = advantages.to(encoded.last_hidden_state.device)

        self._metrics["reward"].append(sample_rewards.mean().item())
        self._metrics["reward_std"].append(sample_rewards.std().item() if len(sample_rewards) > 1 else 0.0)
        for name, value in components.items():
            self._metrics[f"rewards/{name}"].append(value)
        self._metrics["completion_length"].append(float(np.mean([len(t.split()) for t in sample_texts])))
        self._metrics["distinct_1"].append(distinct_n(sample_texts, 1))
        self._metrics["distinct_2"].append(distinct_n(sample_texts, 2))
        self._metrics["empty_completions"].append(float(np.mean([not t for t in sample_texts])))

        if args.loss_type in ("scst", "rloo"):
            log_probs, mask = token_log_probs(model, encoded, samples, repeats=k)
            loss = -(advantages * (log_probs * mask).sum(-1)).mean()
            if args.kl_coef > 0:
                kl = (self._kl(model, inputs, samples, log_probs, k) * mask).sum(-1).mean()
                loss = loss + args.kl_coef * kl
                self._metrics["kl"].append(kl.item())
            self.accelerator.backward(loss)
            return loss.detach()

        with torch.no_grad():
            old_log_probs, mask = token_log_probs(model, encoded, samples, repeats=k)
        for epoch in range(args.ppo_epochs):
            if epoch > 0:
                encoded = encode_audio(model, inputs)  # weights changed since the last pass
            log_probs, _ = token_log_probs(model, encoded, samples, repeats=k)
            ratio = torch.exp(log_probs - old_log_probs)
            unclipped = ratio * advantages[:, None]
            clipped = torch.clamp(ratio, 1 - args.cliprange, 1 + args.cliprange) * advantages[:, None]
            per_token = -torch.minimum(unclipped, clipped)
            if args.kl_coef > 0:
                per_token = per_token + args.kl_coef * self._kl(model, inputs, samples, log_probs, k)
            loss = (per_token * mask).sum() / mask.sum().clamp(min=1)
            self.accelerator.backward(loss)
            if epoch < args.ppo_epochs - 1:
                if args.max_grad_norm:
                    self.accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad()
        self._metrics["clip_fraction"].append(((ratio - 1).abs() > args.cliprange).float().mean().item())
        return loss.detach()

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._metrics and "loss" in logs:
            logs = {**logs, **{key: float(np.mean(values)) for key, values in self._metrics.items()}}
            self._metrics.clear()
        super().log(logs, start_time)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Greedy-decode the eval set and report the mean reward, its components and caption statistics."""
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("evaluate needs an eval_dataset")
        model = self.model
        was_training = model.training
        model.eval()
        texts, totals, parts = [], [], defaultdict(list)
        try:
            for inputs in self.get_eval_dataloader(dataset):
                inputs = self._prepare_inputs(inputs)
                with torch.no_grad():
                    ids = decode(
                        model, encode_audio(model, inputs), do_sample=False, max_new_tokens=self.args.max_new_tokens
                    )
                batch_texts = ids_to_text(self.tokenizer, ids)
                rewards, components = self.score(batch_texts, self._reward_columns(inputs, 1))
                texts += batch_texts
                totals += rewards.tolist()
                for name, value in components.items():
                    parts[name].append(value * len(batch_texts))
        finally:
            model.train(was_training)
        metrics = {
            f"{metric_key_prefix}_reward": float(np.mean(totals)),
            f"{metric_key_prefix}_completion_length": float(np.mean([len(t.split()) for t in texts])),
            f"{metric_key_prefix}_distinct_1": distinct_n(texts, 1),
            f"{metric_key_prefix}_distinct_2": distinct_n(texts, 2),
        }
        for name, values in parts.items():
            metrics[f"{metric_key_prefix}_rewards/{name}"] = float(np.sum(values) / len(texts))
        self.log(metrics)
        return metrics

    def create_model_card(self, model_name=None, dataset_name=None, tags=None, reward_model=None, metrics=None, **kw):
        """Write the captioner's card (from `hub_cards/model_card.md`) to `output_dir/README.md`."""
        import os

        from ..hub.cards import render_model_card

        if not self.is_world_process_zero():
            return
        if metrics is None:
            metrics = next((e for e in reversed(self.state.log_history) if "eval_reward" in e), {})
        base = getattr(self.model, "get_base_model", lambda: self.model)()
        card = render_model_card(
            repo_id=self.args.hub_model_id or model_name or os.path.basename(os.path.abspath(self.args.output_dir)),
            method=self.args.loss_type,
            base_model=getattr(base.config, "_name_or_path", None) or None,
            datasets=dataset_name,
            reward_model=reward_model,
            training_args={
                "loss_type": self.args.loss_type,
                "num_samples": self.args.num_samples,
                "rewards": ", ".join(self.reward_names),
                "reward_weights": self.args.reward_weights,
                "kl_coef": self.args.kl_coef,
                "learning_rate": self.args.learning_rate,
            },
            metrics={k: round(float(v), 4) for k, v in metrics.items() if isinstance(v, (int, float))},
            tags=[*self._tag_names, *(tags or [])],
        )
        os.makedirs(self.args.output_dir, exist_ok=True)
        card.save(os.path.join(self.args.output_dir, "README.md"))
