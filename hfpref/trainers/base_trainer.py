"""
What every hfpref trainer shares, as TRL's `trl/trainer/base_trainer.py`: the method's name, paper and Hub tags, and
one `create_model_card` that renders the card through [`hfpref.hub.cards`] and writes `README.md` to `output_dir`;
and what data-parallel training needs to come out as one process at the same global batch: the token-weighted
cross-entropy of the global batch, the place of a micro-batch in the global batch, and logged statistics averaged over
every process. Its `train()` resumes from the newest complete checkpoint (a torn one, cut off by a kill, is skipped
with a warning naming it) and refuses a run whose logged losses are not finite or diverged.
"""

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard
from transformers import Trainer

from ..hub.cards import METHODS, audio_llm_captioner_usage, render_model_card
from ..utils.checks import check_training_losses, resolve_resume_checkpoint


def summed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """
    Cross-entropy of `logits` `(..., classes)` against `labels` `(...)`, summed over the positions whose label is not
    -100 (computed in float32).

    Example:

    ```python
    >>> logits = torch.tensor([[0.0, 0.0], [0.0, 0.0], [5.0, -5.0]])
    >>> round(summed_cross_entropy(logits, torch.tensor([0, -100, 1])).item(), 4)  # ln 2 + (10 + ln(1 + e^-10))
    10.6932

    ```
    """
    return F.cross_entropy(
        logits.flatten(0, -2).float(),
        labels.flatten().to(logits.device),
        ignore_index=-100,
        reduction="sum",
        label_smoothing=label_smoothing,
    )


def micro_batch_index(micro_step: int, process_index: int, num_processes: int) -> int:
    """
    Place of a micro-batch in its optimizer step's global batch, in the order accelerate's sharded dataloader deals
    per-device batches: process `p` of `P` takes every `P`-th batch, so its micro-step `m` holds batch `m * P + p`.
    The index depends only on which part of the global batch the micro-batch is, not on how the global batch is split
    over processes and accumulation steps: 2 processes of 1 micro-step and 1 process of 2 micro-steps both number
    their micro-batches 0 and 1.

    Example:

    ```python
    >>> [micro_batch_index(m, p, num_processes=2) for m in range(2) for p in range(2)]  # (m, p): (0, 0) (0, 1) ...
    [0, 1, 2, 3]
    >>> [micro_batch_index(m, 0, num_processes=1) for m in range(4)]
    [0, 1, 2, 3]

    ```
    """
    return micro_step * num_processes + process_index


def mean_over_processes(
    totals: Mapping[str, tuple[float, float]], sum_over_processes: Callable[[torch.Tensor], torch.Tensor]
) -> dict[str, float]:
    """
    Weighted means of statistics recorded on every process: `totals` maps a name to this process's `(sum of values x
    weights, sum of weights)`, `sum_over_processes` sums a float64 tensor over the processes (an all-reduce). Every
    process must hold the same names.

    Example:

    ```python
    >>> rank0 = {"reward": (0.5 * 4, 4.0)}  # 4 samples of mean reward 0.5
    >>> rank1 = torch.tensor([[1.0 * 2, 2.0]])  # the other process: 2 samples of mean 1.0
    >>> mean_over_processes(rank0, lambda local: local + rank1)  # (2 + 2) / 6
    {'reward': 0.6666666666666666}

    ```
    """
    names = sorted(totals)
    local = torch.tensor([[float(v) for v in totals[name]] for name in names], dtype=torch.float64).reshape(-1, 2)
    summed = sum_over_processes(local).tolist()
    return {name: total / weight if weight else float("nan") for name, (total, weight) in zip(names, summed)}


class TrainedAdapterSaveMixin:
    """
    For trainers of a LoRA policy (`DPOTrainer`, `GRPOTrainer`, AlignCap's KD): save only the trained (active)
    adapter, and the rows of its trainable tokens instead of the whole embedding matrix and LM head.

    TRL adds a frozen `"ref"` adapter, a copy of the initial one, as the reference; the artifact is the trained
    adapter alone, and under DeepSpeed ZeRO-3 the engine's gathered state dict holds only the trained adapter's
    trainable-token deltas, so saving every adapter fails (`KeyError: '...trainable_tokens_delta.ref'`). When the
    vocabulary was resized (speech tokens added), peft's `save_embedding_layers="auto"` would save the full embedding
    matrix and LM head (268 MB for a 4-layer TinyLlama) although the trainable-token delta already holds the trained
    rows: [`~hfpref.encoders.speech_tokens.save_adapter_without_embeddings`] saves the adapter and the base rows of
    those tokens, and [`~hfpref.encoders.speech_tokens.load_speech_adapter`] loads them back.
    """

    def _save(self, output_dir: str | None = None, state_dict=None):
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        if not getattr(model, "peft_config", None):
            return super()._save(output_dir, state_dict=state_dict)
        if not self.args.should_save:
            # Only FSDP calls `_save` on every process (with the full state dict on the main one, an empty one
            # elsewhere); the other engines call it on the main process alone. Nothing collective happens here.
            return None
        from transformers.trainer import TRAINING_ARGS_NAME

        from ..encoders.speech_tokens import save_adapter_without_embeddings

        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        save_adapter_without_embeddings(
            model,
            output_dir,
            state_dict=state_dict,
            selected_adapters=[model.active_adapter],
        )
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))


class BaseTrainer(Trainer):
    r"""
    Base of hfpref's trainers. A method's trainer puts it first among its bases, so that its `create_model_card`
    replaces the one of the trainer class it extends: `class CaptionRLTrainer(BaseTrainer)` on
    [`~transformers.Trainer`], `class CaptionSFTTrainer(BaseTrainer, Seq2SeqTrainer)`, or
    `class AlignCapDPOTrainer(BaseTrainer, DPOTrainer)` on TRL's `DPOTrainer` (whose `_save_checkpoint` then writes
    hfpref's card too).

    Class attributes:
        _name (`str`):
            The method: its `hfpref/trainers/<method>/` folder and its key in [`~hfpref.hub.cards.METHODS`], which
            holds the paper, objective, task and card defaults.
        _tag_names (`list[str]`):
            Tags every card of the method carries (the method's own tag and `hfpref` are always added).
        _card_metric (`str`, *optional*):
            A logged key, e.g. `"eval_reward"`: when `create_model_card` gets no `metrics`, the last logged entry that
            has it fills the card's results.

    Hooks a method's trainer overrides when the defaults do not fit: [`_card_variant`] (the loss variant the card
    shows), [`_card_training_args`] (the hyperparameter table), [`_render_card`] (a card of another template).
    """

    _name: str = ""
    _tag_names: list[str] = ["hfpref"]
    _card_metric: str | None = None

    @property
    def _paper(self) -> dict[str, str]:
        """Title and arXiv id of the paper the method (its variant, for a loss variant) comes from."""
        info = METHODS[self._name].variant(self._card_variant())
        return {"title": info.paper_title, "id": info.paper_id}

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """
        [`~transformers.Trainer.train`], with two checks around it:

        - `resume_from_checkpoint=True` resumes from the newest *complete* checkpoint of `output_dir`: a newer one torn
          by a kill (no `trainer_state.json`, an unreadable safetensors or `torch.save` file) is skipped with a warning
          naming it; a torn checkpoint named by path is refused, naming it
          ([`~hfpref.utils.checks.resolve_resume_checkpoint`]).
        - After training, a log whose losses are NaN or inf, or whose last loss is more than 100x the loss of the
          first optimizer step ([`~hfpref.utils.checks.check_training_losses`]), raises instead of returning to a
          script that would save the model.
        """
        resume_from_checkpoint = resolve_resume_checkpoint(self.args.output_dir, resume_from_checkpoint)
        self._first_step, self._first_step_loss = None, None
        output = super().train(
            resume_from_checkpoint=resume_from_checkpoint,
            trial=trial,
            ignore_keys_for_eval=ignore_keys_for_eval,
            **kwargs,
        )
        check_training_losses(
            self.state.log_history, initial_loss=self._initial_loss(), what=f"the model for {self.args.output_dir}"
        )
        return output

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        # The first optimizer step's loss, as transformers logs it: the sum of its micro-batches' losses (each already
        # divided by the accumulation steps), averaged over the processes at the end of `train` (no collective here).
        if self.__dict__.get("_first_step") is None:
            self._first_step = self.state.global_step
        if self.state.global_step == self._first_step:
            total = loss.detach().float().sum().cpu()
            previous = self.__dict__.get("_first_step_loss")
            self._first_step_loss = total if previous is None else previous + total
        return loss

    def _initial_loss(self) -> float | None:
        """
        The loss of this `train()`'s first optimizer step over every process, or `None` where it was not recorded (a
        trainer whose `training_step` does not call this one).
        """
        if self.__dict__.get("_first_step_loss") is None:
            return None
        total = self._sum_over_processes(self._first_step_loss.to(torch.float64).reshape(1))
        return float(total[0]) / self.accelerator.num_processes

    def _micro_batch(self) -> tuple[int, int]:
        """
        `(optimizer step, index of this micro-batch in the step's global batch)` ([`micro_batch_index`]), for
        randomness and data drawn per micro-batch; call it once per training micro-batch.
        """
        step = self.state.global_step
        if step != getattr(self, "_micro_batch_step", None):
            self._micro_batch_step, self._micro_step = step, 0
        index = micro_batch_index(self._micro_step, self.accelerator.process_index, self.accelerator.num_processes)
        self._micro_step += 1
        return step, index

    def _record_metric(self, name: str, value: float, weight: float = 1.0) -> None:
        """
        Add a training statistic to the next logged entry (the one with `loss`): `value` is a mean over `weight`
        samples (or tokens), and the entry gets the weighted mean over every micro-batch of every process since the
        last log. Every process must record the same names.
        """
        totals = self.__dict__.setdefault("_metric_totals", {})
        total, weights = totals.get(name, (0.0, 0.0))
        totals[name] = (total + float(value) * float(weight), weights + float(weight))

    def _sum_over_processes(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.accelerator.num_processes == 1:
            return tensor
        return self.accelerator.reduce(tensor.to(self.accelerator.device), reduction="sum").cpu()

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        totals = self.__dict__.get("_metric_totals")
        if totals and "loss" in logs:
            # Every process logs the training loss at the same steps (transformers gathers it), so all reduce here.
            logs = {**logs, **mean_over_processes(totals, self._sum_over_processes)}
            totals.clear()
        super().log(logs, start_time)

    def _token_mean_cross_entropy(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        """
        `compute_loss` of a trainer whose model is trained by cross-entropy on `labels` (seq2seq captioners, sequence
        classifiers): the loss summed over the labelled positions of this micro-batch, divided by their count over the
        whole global batch, transformers' `num_items_in_batch`.

        Why not the model's own loss: transformers' Trainer hands `num_items_in_batch` to any model whose `forward`
        takes `**kwargs` (`Trainer.model_accepts_loss_kwargs`) and then trusts the loss to be normalised by it: it no
        longer divides by the accumulation steps, and multiplies by the number of processes
        (`average_tokens_across_devices`, where `num_items_in_batch` counts the labels of every process). Whisper and
        DistilBERT take `**kwargs` but ignore it and return their micro-batch mean, so loss and gradient came out
        multiplied by the accumulation steps times the processes. Normalising the summed loss here, rather than
        declaring `model_accepts_loss_kwargs = False` (a mean of micro-batch means), gives the token-weighted mean
        transformers intends: exactly the loss of one forward pass over the global batch, however it is split over
        processes and accumulation steps, for captions of any lengths. The loss is taken from the logits, never from
        the model, so a model that does honour the count (Moonshine) trains the same.
        """
        from ..models.captioning import unwrap

        labels = inputs["labels"]
        if labels.dim() == 2 and not unwrap(model).config.is_encoder_decoder:
            # A causal LM's logit at t predicts the label at t + 1 (its labels are its input ids, masked); the model
            # is not handed them, so it computes no loss of its own (Qwen2-Audio's would be a second full softmax),
            # nor the collator's passed-through columns (python lists).
            outputs = model(**{k: v for k, v in inputs.items() if k != "labels" and isinstance(v, torch.Tensor)})
            logits, labels = outputs.logits[:, :-1], labels[:, 1:]
        else:
            outputs = model(**inputs)
            logits = outputs.logits
        summed = summed_cross_entropy(logits, labels, self.args.label_smoothing_factor)
        if num_items_in_batch is None:
            # Called without a count: the micro-batch mean, which `training_step` divides by the accumulation steps
            # (it takes a loss as normalised only when it passed a count).
            loss = summed / labels.ne(-100).sum().clamp(min=1)
        else:
            loss = summed / num_items_in_batch
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                # The count covers every process and the processes' gradients are averaged: each carries its share
                # times the number of processes, as `Trainer.compute_loss` scales a model-normalised loss.
                loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss

    def _card_variant(self) -> str | None:
        """The method's variant the card shows (a key of `METHODS[self._name].variants`), or `None`."""
        return None

    def _card_training_args(self) -> dict[str, Any]:
        """The hyperparameters the card lists (`None` values are left out)."""
        args = self.args
        length = {"max_steps": args.max_steps} if args.max_steps > 0 else {"num_train_epochs": args.num_train_epochs}
        return {
            **length,
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "learning_rate": args.learning_rate,
        }

    def _card_base_model(self) -> str | None:
        """The checkpoint training started from, as the model's config records it (`None` for a model built here)."""
        model = self.accelerator.unwrap_model(self.model)
        model = model.get_base_model() if hasattr(model, "get_base_model") else model
        name = getattr(getattr(model, "config", None), "_name_or_path", None)
        return name if isinstance(name, str) and name else None

    def _render_card(self, **fields) -> ModelCard:
        """
        Render the card from `fields` (the arguments of [`~hfpref.hub.cards.render_model_card`]). An audio-LLM
        captioner's quick start is its own chat-turn snippet (the whole model, or its LoRA adapter on its base).
        """
        from ..models.audio_llm import DEFAULT_CAPTION_INSTRUCTION, is_audio_llm

        model = self.accelerator.unwrap_model(self.model)
        if "usage" not in fields and is_audio_llm(model):
            is_peft = hasattr(model, "get_base_model")
            base = fields.get("base_model") if is_peft else None
            if is_peft and not base:
                raise ValueError("the adapter's card needs the base model it loads onto: pass base_model=")
            fields["usage"] = audio_llm_captioner_usage(
                fields["repo_id"],
                type(model.get_base_model() if is_peft else model).__name__,
                getattr(self.data_collator, "instruction", DEFAULT_CAPTION_INSTRUCTION),
                base,
            )
            if is_peft:
                fields.setdefault("library_name", "peft")
        return render_model_card(method=self._name, variant=self._card_variant(), **fields)

    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | Sequence[str] | None = None,
        tags: str | Sequence[str] | None = None,
        *,
        base_model: str | None = None,
        reward_model: str | None = None,
        metrics: Mapping[str, Any] | None = None,
        dataset: str | Sequence[str] | None = None,
        finetuned_from: str | None = None,
        license: str | None = None,
        language: str | list[str] | None = None,
        eval_dataset: str | Mapping[str, str] | None = None,
        **kwargs,
    ) -> None:
        r"""
        Write the model card (the template, paper and defaults of the method in [`~hfpref.hub.cards.METHODS`]) to
        `output_dir/README.md`, on the main process only. [`~transformers.Trainer.push_to_hub`] calls it with its
        own keyword arguments.

        Args:
            model_name (`str`, *optional*):
                Repository name when `hub_model_id` is not set; defaults to the name of `output_dir`.
            dataset_name (`str` or `Sequence[str]`, *optional*):
                Training data; Hub ids go into the front matter and are linked. `dataset` is the same argument under
                the name `transformers` gives it.
            tags (`str` or `Sequence[str]`, *optional*):
                Extra tags, after the method's `_tag_names`.
            base_model (`str`, *optional*):
                The checkpoint training started from; defaults to the one the model's config records. `finetuned_from`
                is the same argument under the name `transformers` gives it.
            reward_model (`str`, *optional*):
                The reward model optimized against, if any.
            metrics (`Mapping[str, Any]`, *optional*):
                Results, numeric ones rounded to 4 decimals (and listed in the `model-index`); defaults to the last
                logged entry that has `_card_metric`.
            license (`str`, *optional*), language (`str` or `list[str]`, *optional*):
                Hub license id (default: the config's `license`) and language of the card's front matter.
            eval_dataset (`str` or `Mapping[str, str]`, *optional*):
                The evaluation data the results are listed under; named evaluation sets (`eval_<name>_<metric>`
                results) as `{name: data}`.
            kwargs:
                Other arguments of `transformers`' `create_model_card` (`tasks`, `dataset_tags`, ...), unused.
        """
        if not self.is_world_process_zero():
            return
        repo_id = self.args.hub_model_id or model_name or os.path.basename(os.path.abspath(self.args.output_dir))
        if metrics is None and self._card_metric is not None:
            metrics = next((e for e in reversed(self.state.log_history) if self._card_metric in e), None)
        tags = [tags] if isinstance(tags, str) else list(tags or [])
        # `--license` of the method's config (CardConfigMixin) when the caller names none.
        optional = {
            "license": license or getattr(self.args, "license", None),
            "language": language,
            "eval_dataset": eval_dataset,
        }
        card = self._render_card(
            repo_id=repo_id,
            base_model=base_model or finetuned_from or self._card_base_model(),
            datasets=dataset_name or dataset,
            reward_model=reward_model,
            training_args=self._card_training_args(),
            metrics={k: round(float(v), 4) for k, v in (metrics or {}).items() if isinstance(v, (int, float))},
            tags=list(dict.fromkeys([*self._tag_names, *tags])),
            **{name: value for name, value in optional.items() if value is not None},
        )
        os.makedirs(self.args.output_dir, exist_ok=True)
        card.save(os.path.join(self.args.output_dir, "README.md"))
