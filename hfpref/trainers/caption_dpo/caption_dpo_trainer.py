from collections.abc import Sequence

import torch
import torch.nn.functional as F
from datasets import Dataset

from ...models._common import caption_ids
from ...models.captioning import (
    Rollout,
    caption_collator,
    captioning_prefix,
    encode_audio,
    eos_token_ids,
    is_audio_llm,
    prepare_captioner,
    processed_log_probs,
    rollout_logits,
)
from ..base_trainer import BaseTrainer
from ..caption_rl.caption_rl_trainer import check_audio_datasets, place_audio_encoder, policy_and_reference
from .caption_dpo_config import CaptionDPOConfig


def preference_loss(
    chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, *, beta: float, loss_type: str = "sigmoid"
) -> torch.Tensor:
    r"""
    Per-pair preference loss on the policy-to-reference log-ratios `log pi(c | a) - log ref(c | a)` of the chosen and
    rejected captions, with `margin = chosen_logratios - rejected_logratios`:

    - `"sigmoid"`: DPO, `-log sigmoid(beta * margin)`
      ([Rafailov et al., 2023](https://huggingface.co/papers/2305.18290), eq. 7);
    - `"ipo"`: IPO, `(margin - 1 / (2 * beta))^2` ([Azar et al., 2023](https://huggingface.co/papers/2310.12036),
      eq. 17; TRL feeds it log-ratios averaged over each caption's tokens, and so does [`CaptionDPOTrainer`]).

    Example:
    ```python
    >>> chosen, rejected = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])
    >>> [round(v, 4) for v in preference_loss(chosen, rejected, beta=1.0).tolist()]  # -log sigmoid(1), log 2
    [0.3133, 0.6931]
    >>> preference_loss(chosen, rejected, beta=0.5, loss_type="ipo").tolist()  # (margin - 1)^2
    [0.0, 1.0]

    ```
    """
    margin = chosen_logratios - rejected_logratios
    if loss_type == "sigmoid":
        return -F.logsigmoid(beta * margin)
    if loss_type == "ipo":
        return (margin - 1 / (2 * beta)) ** 2
    raise ValueError(f"loss_type={loss_type!r} is not one of ['sigmoid', 'ipo']")


def pair_rollout(
    model, tokenizer, inputs: dict, chosen: Sequence[str], rejected: Sequence[str], max_caption_tokens: int
) -> Rollout:
    """
    The teacher-forced [`~hfpref.models.captioning.Rollout`] of each clip's chosen and rejected captions, in the
    layout of `generate(num_return_sequences=2)`: rows `[chosen_0, rejected_0, chosen_1, rejected_1, ...]`, each the
    captioner's prompt (an audio LLM's left-padded chat prompt of the batch, a seq2seq captioner's decoder prompt
    [`~hfpref.models.captioning.captioning_prefix`]) followed by the caption, its eos, and padding. So
    [`~hfpref.models.captioning.rollout_logits`] scores both captions of a clip from the one encoding of its audio.
    """
    if len(chosen) != len(rejected):
        raise ValueError(f"{len(chosen)} chosen captions for {len(rejected)} rejected ones")
    eos = eos_token_ids(model)
    if tokenizer.eos_token_id not in eos:
        raise ValueError(
            f"the tokenizer ends captions with eos id {tokenizer.eos_token_id}, which the captioner does not stop at "
            f"(its eos ids: {eos}): the caption's log-probability would run past its end"
        )
    captions = [caption for pair in zip(chosen, rejected) for caption in pair]
    rows = caption_ids(tokenizer, captions, max_caption_tokens)
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    completions = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    if is_audio_llm(model):
        prompts = inputs["input_ids"].repeat_interleave(2, dim=0)
    else:
        prompts = torch.tensor([captioning_prefix(model)]).expand(len(captions), -1)
    completions = completions.to(prompts.device)
    return Rollout(torch.cat([prompts, completions], dim=1), prompts.shape[1])


def caption_log_probs(
    model, encoded, rollout: Rollout, *, eos_ids: Sequence[int], attention_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Sequence log-probabilities of a teacher-forced rollout's captions: the sum of the log-probabilities of each
    caption's tokens and its eos after the captioner's prompt, and the number of those tokens; both `(rows,)`.
    """
    logits = rollout_logits(model, encoded, rollout, attention_mask=attention_mask)
    log_probs, mask = processed_log_probs(logits, rollout, temperature=1.0, eos_ids=eos_ids)
    return log_probs.sum(-1), mask.sum(-1)


def check_caption_pairs(dataset: Dataset, chosen_column: str, rejected_column: str, *, name: str) -> None:
    """Refuse a pair whose caption is missing, empty or not text, or whose captions are the same, naming its row."""
    for column in (chosen_column, rejected_column):
        if column not in dataset.column_names:
            raise ValueError(f"{name} has no column {column!r}; it has {dataset.column_names}")
    for row, (chosen, rejected) in enumerate(zip(dataset[chosen_column], dataset[rejected_column])):
        for column, caption in ((chosen_column, chosen), (rejected_column, rejected)):
            if not isinstance(caption, str) or not caption.strip():
                raise ValueError(f"{name}, row {row}: {column!r} is {caption!r}, not a caption")
        if chosen.strip() == rejected.strip():
            raise ValueError(f"{name}, row {row}: the chosen and rejected captions are the same ({chosen!r})")


class CaptionDPOTrainer(BaseTrainer):
    """
    Direct Preference Optimization ([DPO](https://huggingface.co/papers/2305.18290)) of an audio captioner on
    (audio, chosen caption, rejected caption) rows, thin on [`~transformers.Trainer`]: the AlignCap-style DPO of
    [`~hfpref.trainers.AlignCapDPOTrainer`] for captioners that read the audio itself, an audio LLM (Qwen2-Audio:
    the projected audio features merged into its chat prompt, which TRL's `DPOTrainer` cannot carry) or a seq2seq
    captioner (Whisper-style).

    A caption's log-probability is the sum of its tokens' and its eos's log-probabilities after the captioner's
    prompt, teacher-forced. Per batch the audio is encoded once ([`~hfpref.models.captioning.encode_audio`]) and both
    captions of each clip are scored from that encoding in one pass ([`pair_rollout`]); the reference scores them
    from its own.

    Args:
        model: the captioner (an audio LLM or an `AutoModelForSpeechSeq2Seq`), or a peft model wrapping one.
        args ([`CaptionDPOConfig`]): training configuration.
        train_dataset (`datasets.Dataset`): the audio column (`datasets.Audio(decode=False)` values or paths) and the
            `chosen_column` / `rejected_column` captions.
        eval_dataset (`datasets.Dataset`, *optional*): the same columns; evaluated by the DPO loss and the implicit
            rewards ([`evaluate`]).
        processing_class: the captioner's processor (feature extractor + tokenizer).
        ref_model (*optional*): the frozen reference; by default the adapter-disabled base under peft, else a frozen
            copy of `model`.
        peft_config (`peft.PeftConfig`, *optional*): wrap `model` with this adapter config (for an audio LLM,
            [`~hfpref.models.audio_llm.language_model_lora_targets`] puts it on the LLM only).
    """

    _name = "caption_dpo"
    _tag_names = ["hfpref", "caption-dpo", "dpo"]
    _card_metric = "eval_rewards/accuracies"

    def __init__(
        self,
        model,
        args: CaptionDPOConfig,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | None = None,
        processing_class=None,
        ref_model=None,
        peft_config=None,
        callbacks=None,
        optimizers=(None, None),
    ):
        if not isinstance(args, CaptionDPOConfig):
            raise TypeError(f"args must be a CaptionDPOConfig, got {type(args).__name__}")
        if processing_class is None:
            raise ValueError("CaptionDPOTrainer needs processing_class= the captioner's processor")
        check_audio_datasets(args.audio_column, train_dataset=train_dataset, eval_dataset=eval_dataset)
        for name, ds in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset)):
            if ds is not None:
                check_caption_pairs(ds, args.chosen_column, args.rejected_column, name=name)
        # One prompt for the whole run, fixed before the reference is copied (see `prepare_captioner`).
        prepare_captioner(model, processing_class.tokenizer)
        model, self.ref_model, self.is_peft = policy_and_reference(
            model, peft_config, ref_model, needs_reference=True, no_dropout=args.disable_dropout
        )
        self.tokenizer = processing_class.tokenizer
        collator = caption_collator(
            model,
            processing_class,
            audio_column=args.audio_column,
            caption_column=None,
            max_caption_tokens=args.max_caption_tokens,
        )
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
        place_audio_encoder(self, model)
        self._eos_ids = eos_token_ids(model)

    def _sequence_log_probs(self, model, inputs, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
        """`(log_probs, lengths)` of the rollout's captions under `model`, its audio encoded once for both captions."""
        encoded = encode_audio(model, inputs)
        return caption_log_probs(
            model, encoded, rollout, eos_ids=self._eos_ids, attention_mask=inputs.get("attention_mask")
        )

    def _ref_log_probs(self, model, inputs, rollout: Rollout) -> torch.Tensor:
        with torch.no_grad():
            if self.ref_model is not None:
                return self._sequence_log_probs(self.ref_model, inputs, rollout)[0]
            # The adapter-disabled base, its audio encoded again: an adapter may sit on the audio tower too.
            with getattr(model, "module", model).disable_adapter():
                return self._sequence_log_probs(model, inputs, rollout)[0]

    def pair_outputs(self, model, inputs) -> dict[str, torch.Tensor]:
        """
        The DPO loss of each pair of the batch, with the implicit rewards `beta * (log pi - log ref)` of its chosen
        and rejected captions and their log-probabilities under the policy, each `(pairs,)`.
        """
        args = self.args
        rollout = pair_rollout(
            model,
            self.tokenizer,
            inputs,
            inputs[args.chosen_column],
            inputs[args.rejected_column],
            args.max_caption_tokens,
        )
        log_probs, lengths = self._sequence_log_probs(model, inputs, rollout)
        logratios = (log_probs - self._ref_log_probs(model, inputs, rollout)).view(-1, 2)
        if args.loss_type == "ipo":
            losses = preference_loss(*(logratios / lengths.view(-1, 2)).unbind(-1), beta=args.beta, loss_type="ipo")
        else:
            losses = preference_loss(*logratios.unbind(-1), beta=args.beta, loss_type=args.loss_type)
        rewards = args.beta * logratios.detach()
        log_probs = log_probs.detach().view(-1, 2)
        return {
            "losses": losses,
            "chosen_rewards": rewards[:, 0],
            "rejected_rewards": rewards[:, 1],
            "chosen_log_probs": log_probs[:, 0],
            "rejected_log_probs": log_probs[:, 1],
        }

    @staticmethod
    def _statistics(outputs: dict[str, torch.Tensor]) -> dict[str, float]:
        """TRL's logged DPO statistics of a batch of [`pair_outputs`]."""
        chosen, rejected = outputs["chosen_rewards"], outputs["rejected_rewards"]
        return {
            "rewards/chosen": chosen.mean().item(),
            "rewards/rejected": rejected.mean().item(),
            "rewards/margins": (chosen - rejected).mean().item(),
            "rewards/accuracies": (chosen > rejected).float().mean().item(),
            "logps/chosen": outputs["chosen_log_probs"].mean().item(),
            "logps/rejected": outputs["rejected_log_probs"].mean().item(),
        }

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        outputs = self.pair_outputs(model, inputs)
        pairs = outputs["losses"].shape[0]
        for name, value in self._statistics(outputs).items():
            self._record_metric(name, value, pairs)
        loss = outputs["losses"].mean()
        return (loss, outputs) if return_outputs else loss

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """The DPO loss and TRL's reward statistics over the eval pairs (every process scores its shard)."""
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("evaluate needs an eval_dataset")
        model = self.model
        was_training = model.training
        model.eval()
        gathered = {}
        try:
            for inputs in self.get_eval_dataloader(dataset):
                inputs = self._prepare_inputs(inputs)
                with torch.no_grad():
                    outputs = self.pair_outputs(model, inputs)
                for name, value in outputs.items():
                    gathered.setdefault(name, []).append(self.accelerator.gather_for_metrics(value.float()))
        finally:
            model.train(was_training)
        outputs = {name: torch.cat(values) for name, values in gathered.items()}
        metrics = {f"{metric_key_prefix}_loss": outputs["losses"].mean().item()}
        metrics.update({f"{metric_key_prefix}_{k}": v for k, v in self._statistics(outputs).items()})
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def _card_variant(self) -> str:
        return self.args.loss_type

    def _card_training_args(self) -> dict:
        return {
            **super()._card_training_args(),
            "loss_type": self.args.loss_type,
            "beta": self.args.beta,
            "reference": "the adapter-disabled base" if self.is_peft and self.ref_model is None else "a frozen copy",
        }
