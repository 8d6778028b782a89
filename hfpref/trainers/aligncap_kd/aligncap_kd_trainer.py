"""
AlignCap's KD-regularization ([Liang et al., 2024](https://huggingface.co/papers/2410.19134), section 3.1, eq. 5):
the LLM given text teaches the same LLM, with a LoRA adapter, given speech tokens.

    L_KL = - sum_t sum_y p_teacher(y | text prefix, y_<t) log p_student(y | speech tokens, y_<t)

The teacher's prefix is the acoustic prompt + caption + instruction, the student's the speech tokens + instruction;
both are followed by the same response (the caption), and the two distributions are compared at the response
positions only, which sit at different offsets in the two sequences (the prefixes differ in length). Padding is
masked. The teacher is the student's base model with the adapter disabled, so one copy of the weights is in memory
(`bench/kd_memory.py` measures what a separate frozen copy would cost); a separate `teacher_model` is accepted too.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from ...encoders.audio_tokens import audio_token_prompts
from ...encoders.speech_tokens import speech_lora_config, speech_token_ids
from ...prompts.emotion_clues import teacher_prompt
from ...utils.distributed import apply_peft
from ..base_trainer import BaseTrainer, TrainedAdapterSaveMixin
from .aligncap_kd_config import DEFAULT_INSTRUCTION, AlignCapKDConfig


def kd_alignment_dataset(
    ds: Dataset,
    tokenize_audio,
    *,
    instruction: str = DEFAULT_INSTRUCTION,
    audio_column: str = "audio",
    caption_column: str = "caption",
    sampling_rate: int = 16000,
) -> Dataset:
    """
    Add the two prompts KD needs: `prompt` (speech tokens + instruction, the student's) and `text_prompt`
    (acoustic prompt + caption + instruction, the teacher's, see [`~hfpref.prompts.emotion_clues.teacher_prompt`]).

    Args:
        ds (`datasets.Dataset`): clips with `audio_column` and `caption_column`.
        tokenize_audio (`Callable[[np.ndarray, int], Sequence[int]]`):
            speech tokens of a waveform, e.g. a [`~hfpref.encoders.speech_tokens.SpeechTokenEncoder`].
        instruction (`str`, *optional*, defaults to `"Describe the speaker's emotion."`): the user's instruction.
        audio_column (`str`, *optional*, defaults to `"audio"`): audio column.
        caption_column (`str`, *optional*, defaults to `"caption"`): caption column (a string per row).
        sampling_rate (`int`, *optional*, defaults to `16000`): rate the audio is decoded at.
    """
    if caption_column not in ds.column_names:
        raise ValueError(f"caption_column={caption_column!r} is not a column; the dataset has {ds.column_names}")
    if "text_prompt" in ds.column_names:
        raise ValueError("the dataset already has a `text_prompt` column; remove or rename it first")
    ds = audio_token_prompts(
        ds, tokenize_audio, audio_column=audio_column, instruction=instruction, sampling_rate=sampling_rate
    )

    def add_text_prompt(example, index):
        caption = example[caption_column]
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError(f"row {index}, column {caption_column!r}: expected a non-empty caption, got {caption!r}")
        return {"text_prompt": teacher_prompt(caption, instruction)}

    return ds.map(add_text_prompt, with_indices=True, desc="teacher prompts")


class AlignCapKDCollator:
    """
    Tokenizes (student prompt, teacher prompt, response) rows into two right-padded batches and the index of the
    logit that predicts each response token in each (`prompt_length - 1 + t`).

    Args:
        tokenizer (`PreTrainedTokenizerBase`): the LLM's tokenizer (speech tokens added).
        args ([`AlignCapKDConfig`]): column names and length limits.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, args: AlignCapKDConfig):
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer needs a pad token and an EOS token")
        self.tokenizer = tokenizer
        self.args = args

    def _prompt(self, text, row, column) -> list[int]:
        if not isinstance(text, str) or not text:
            raise ValueError(f"row {row}, column {column!r}: expected a non-empty prompt, got {text!r}")
        ids = self.tokenizer(text)["input_ids"]
        if len(ids) > self.args.max_prompt_length:
            raise ValueError(
                f"row {row}, column {column!r}: {len(ids)} prompt tokens exceed max_prompt_length="
                f"{self.args.max_prompt_length}"
            )
        return ids

    def _pad(self, sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(map(len, sequences))
        ids = torch.full((len(sequences), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for i, seq in enumerate(sequences):
            ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
        return ids, mask

    def __call__(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        args = self.args
        students, teachers, responses, starts = [], [], [], {"student": [], "teacher": []}
        for i, row in enumerate(rows):
            where = row.get("clip_id", i)
            response = row[args.response_column]
            if not isinstance(response, str) or not response.strip():
                raise ValueError(f"row {where}, column {args.response_column!r}: empty response {response!r}")
            response_ids = self.tokenizer(response, add_special_tokens=False)["input_ids"]
            response_ids = [*response_ids[: args.max_response_length - 1], self.tokenizer.eos_token_id]
            student = self._prompt(row[args.speech_prompt_column], where, args.speech_prompt_column)
            teacher = self._prompt(row[args.text_prompt_column], where, args.text_prompt_column)
            starts["student"].append(len(student) - 1)
            starts["teacher"].append(len(teacher) - 1)
            students.append(student + response_ids)
            teachers.append(teacher + response_ids)
            responses.append(response_ids)
        response_ids, response_mask = self._pad(responses)
        offsets = torch.arange(response_ids.shape[1])
        batch = {"response_ids": response_ids, "response_mask": response_mask}
        for name, sequences in (("student", students), ("teacher", teachers)):
            batch[f"{name}_input_ids"], batch[f"{name}_attention_mask"] = self._pad(sequences)
            positions = torch.tensor(starts[name])[:, None] + offsets
            # Padded response slots point at the last real position; the mask removes them from the loss.
            batch[f"{name}_positions"] = torch.minimum(
                positions, batch[f"{name}_attention_mask"].sum(1, keepdim=True) - 1
            )
        return batch


def _takes_logits_to_keep(model) -> bool:
    """Whether the causal LM under `model` (a peft or DDP wrapper, or the model itself) takes `logits_to_keep`."""
    from ...models._common import unwrap

    return "logits_to_keep" in inspect.signature(unwrap(model).forward).parameters


def response_logits(model, input_ids, attention_mask, positions) -> torch.Tensor:
    """
    The logits (batch, response_length, vocab) that predict each response token.

    Only the positions from the first to the last of `positions` go through the LM head (`logits_to_keep`, which
    transformers' causal LMs take): the prompt's logits, `(batch, prompt_length, vocab)` and most of the sequence,
    are never made. A model whose `forward` does not take `logits_to_keep` makes them all, and the same rows are
    picked from them.
    """
    if _takes_logits_to_keep(model):
        first = int(positions.min())
        window = torch.arange(first, int(positions.max()) + 1, device=input_ids.device)
        logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=window).logits
        positions = positions - first
    else:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    index = positions[..., None].expand(-1, -1, logits.shape[-1])
    return logits.gather(1, index)


@torch.no_grad()
def response_log_likelihoods(
    model, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 32
) -> list[float]:
    """
    `log p(response + EOS | prompt)` under `model`, summed over the response tokens, for each (prompt, response) pair;
    tokenized as [`AlignCapKDCollator`] does for the student (prompt with BOS, response without, EOS appended).
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts for {len(responses)} responses")
    # The collator reads only column names and length limits; nothing is cut when scoring.
    limits = SimpleNamespace(
        speech_prompt_column="prompt", text_prompt_column="text_prompt", response_column="caption",
        max_prompt_length=sys.maxsize, max_response_length=sys.maxsize,
    )  # fmt: skip
    collator = AlignCapKDCollator(tokenizer, limits)
    was_training = model.training
    model.eval()
    scores: list[float] = []
    try:
        for start in range(0, len(prompts), batch_size):
            rows = [
                {"prompt": p, "text_prompt": p, "caption": r}
                for p, r in zip(prompts[start : start + batch_size], responses[start : start + batch_size])
            ]
            batch = {k: v.to(model.device) for k, v in collator(rows).items()}
            logits = response_logits(
                model, batch["student_input_ids"], batch["student_attention_mask"], batch["student_positions"]
            )
            token_log_probs = torch.log_softmax(logits.float(), -1).gather(-1, batch["response_ids"][..., None])
            scores += (token_log_probs[..., 0] * batch["response_mask"]).sum(1).tolist()
    finally:
        model.train(was_training)
    return scores


def forced_choice_accuracy(
    model,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    candidates: Sequence[Sequence[str]],
    answers: Sequence[int],
    batch_size: int = 32,
) -> float:
    """
    Share of prompts whose most likely candidate response ([`response_log_likelihoods`]) is the right one: for a
    speech prompt and captions that differ only in a clue (see [`~hfpref.data.synthetic.speech_world.caption_alternatives`]),
    what the model gets right from the speech. A model that ignores its prompt scores the base rate of the value it
    prefers.

    Example:
    ```python
    >>> from hfpref.encoders.speech_tokens import build_tiny_speech_llm
    >>> model, tokenizer = build_tiny_speech_llm(["a sad voice", "a happy voice"] * 4, 2)
    >>> forced_choice_accuracy(model, tokenizer, ["<st_0>", "<st_1>"], [["sad", "happy"]] * 2, [0, 1])
    0.5

    ```
    """
    if not len(prompts) == len(candidates) == len(answers):
        raise ValueError(f"{len(prompts)} prompts, {len(candidates)} candidate lists and {len(answers)} answers")
    flat_prompts = [p for p, options in zip(prompts, candidates) for _ in options]
    flat = [c for options in candidates for c in options]
    scores = response_log_likelihoods(model, tokenizer, flat_prompts, flat, batch_size)
    correct, offset = 0, 0
    for options, answer in zip(candidates, answers):
        block = scores[offset : offset + len(options)]
        correct += int(np.argmax(block)) == answer
        offset += len(options)
    return correct / max(len(answers), 1)


def clue_accuracy(model, tokenizer: PreTrainedTokenizerBase, dataset: Dataset, field: str = "emotion") -> float:
    """
    On speech-world clips ([`~hfpref.data.synthetic.speech_world.make_speech_world`] rows with their speech `prompt`): the
    [`forced_choice_accuracy`] between the clip's caption with each value of `field` (`"emotion"`: six captions that
    differ in the emotion and the prosody it fixes; `"voice"`, `"pitch"`: two), so only the speech can settle it.
    Chance is one over the number of values; a model that ignores the speech scores the base rate of its favourite.
    """
    from ...data.synthetic.speech_world import caption_alternatives  # noqa: PLC0415

    choices = [caption_alternatives(row, row["caption"], field) for row in dataset]
    return forced_choice_accuracy(
        model, tokenizer, dataset["prompt"], [captions for captions, _ in choices], [answer for _, answer in choices]
    )


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    AlignCap eq. 5 per response token, averaged over the unmasked ones:
    `-temperature**2 * sum_y p_t(y) log p_s(y)` with `p = softmax(logits / temperature)`; and the KL divergence
    `KL(p_t || p_s)` (the same minus the teacher's entropy, for monitoring).

    Args:
        student_logits (`torch.Tensor`): `(batch, length, vocab)`.
        teacher_logits (`torch.Tensor`): same shape, no gradient needed.
        mask (`torch.Tensor`): `(batch, length)`, 1 for response tokens, 0 for padding.
        temperature (`float`, *optional*, defaults to `1.0`): softmax temperature.

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: the loss and the mean per-token KL (both scalars; no gradient reaches
        the teacher's logits).

    Example:
    ```python
    >>> import torch
    >>> student = torch.log(torch.tensor([[[0.5, 0.5], [0.9, 0.1]]]))
    >>> teacher = torch.log(torch.tensor([[[0.5, 0.5], [0.2, 0.8]]]))
    >>> loss, kl = kd_loss(student, teacher, torch.tensor([[1, 0]]))
    >>> round(loss.item(), 4), round(kl.item(), 4)  # only the first position counts: ln 2, and identical
    (0.6931, 0.0)

    ```
    """
    mask = mask.to(student_logits.dtype)
    teacher_log_probs = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher_probs = teacher_log_probs.exp()
    cross_entropy = -(teacher_probs * student_log_probs).sum(-1)
    kl = (teacher_probs * (teacher_log_probs - student_log_probs)).sum(-1)
    tokens = mask.sum().clamp(min=1)
    return temperature**2 * (cross_entropy * mask).sum() / tokens, (kl * mask).sum() / tokens


class AlignCapKDTrainer(TrainedAdapterSaveMixin, BaseTrainer):
    """
    KD-regularization of a speech-token student against the text-conditioned teacher (AlignCap, eq. 5).

    Args:
        model (`PreTrainedModel` or `PeftModel`):
            The LLM with speech tokens in its vocabulary. A plain model is wrapped with `peft_config`, by default
            [`~hfpref.encoders.speech_tokens.speech_lora_config`] (LoRA r = 8 on the attention projections plus
            trainable speech-token rows).
        args ([`AlignCapKDConfig`]): training arguments.
        train_dataset (`datasets.Dataset`): rows with the prompt, text prompt and response columns
            ([`kd_alignment_dataset`] writes them).
        eval_dataset (`datasets.Dataset`, *optional*): held-out rows; `evaluate` reports `eval_kl` and `eval_kd_loss`.
        processing_class (`PreTrainedTokenizerBase`): the tokenizer.
        teacher_model (`PreTrainedModel`, *optional*):
            A separate frozen teacher; by default the teacher is the student's base with the adapter disabled (one
            copy of the weights in memory).
        peft_config (`peft.LoraConfig`, *optional*): adapter of a plain `model`.
        callbacks (`list`, *optional*): trainer callbacks.
    """

    _name = "aligncap_kd"
    _tag_names = ["hfpref", "aligncap", "kd", "speech-emotion-captioning"]
    _card_metric = "eval_kl"

    def __init__(
        self,
        model,
        args: AlignCapKDConfig,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        teacher_model=None,
        peft_config=None,
        callbacks=None,
    ):
        if not isinstance(args, AlignCapKDConfig):
            raise TypeError(f"args must be a AlignCapKDConfig, got {type(args).__name__}")
        if processing_class is None:
            raise ValueError("AlignCapKDTrainer needs the tokenizer as processing_class")
        if not isinstance(model, PeftModel):
            model = apply_peft(model, peft_config or speech_lora_config(speech_token_ids(processing_class)))
        elif peft_config is not None:
            raise ValueError("model is already a PeftModel; do not pass peft_config as well")
        if teacher_model is not None:
            teacher_model.eval().requires_grad_(False)
        self.teacher_model = teacher_model
        for dataset, name in ((train_dataset, "train_dataset"), (eval_dataset, "eval_dataset")):
            if dataset is not None:
                missing = {args.speech_prompt_column, args.text_prompt_column, args.response_column}
                missing -= set(dataset.column_names)
                if missing:
                    raise ValueError(f"{name} lacks column(s) {sorted(missing)}; it has {dataset.column_names}")
        super().__init__(
            model=model,
            args=args,
            data_collator=AlignCapKDCollator(processing_class, args),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
        )
        if self.teacher_model is not None:
            self.teacher_model.to(self.args.device)

    @torch.no_grad()
    def teacher_logits(self, model, inputs) -> torch.Tensor:
        """The teacher's response logits: the separate teacher, or the student with its adapter disabled."""
        batch = (inputs["teacher_input_ids"], inputs["teacher_attention_mask"], inputs["teacher_positions"])
        if self.teacher_model is not None:
            return response_logits(self.teacher_model, *batch)
        unwrapped = self.accelerator.unwrap_model(model)
        with unwrapped.disable_adapter():
            return response_logits(model, *batch)

    def _losses(self, model, inputs, with_teacher: bool | None = None) -> dict[str, torch.Tensor]:
        """
        `loss = kd_weight * kd_loss + ce_weight * ce` and its parts; the teacher runs unless `kd_weight` is 0 (or
        `with_teacher` says otherwise: evaluation always compares with it).
        """
        if with_teacher is None:
            with_teacher = self.args.kd_weight > 0
        # The teacher runs first: its forward's transient tensors are freed before the student's activations (kept
        # for backward) exist, so the two never add up; only its response logits are kept, until the loss.
        teacher = self.teacher_logits(model, inputs) if with_teacher else None
        student = response_logits(
            model, inputs["student_input_ids"], inputs["student_attention_mask"], inputs["student_positions"]
        )
        mask = inputs["response_mask"]
        losses = {}
        if with_teacher:
            losses["kd_loss"], losses["kl"] = kd_loss(student, teacher, mask, self.args.temperature)
            del teacher
        if self.args.ce_weight > 0:
            token_ce = F.cross_entropy(student.transpose(1, 2).float(), inputs["response_ids"], reduction="none")
            losses["ce"] = (token_ce * mask).sum() / mask.sum().clamp(min=1)
        distill, ce = losses.get("kd_loss", 0.0), losses.get("ce", 0.0)
        losses["loss"] = self.args.kd_weight * distill + self.args.ce_weight * ce
        return losses

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        losses = self._losses(model, inputs)
        if model.training:
            # Means over this micro-batch's response tokens: logged token-weighted over every process.
            tokens = inputs["response_mask"].sum().clamp(min=1).item()
            for name in ("kd_loss", "kl", "ce"):
                if name in losses:
                    self._record_metric(name, losses[name].item(), tokens)
        return (losses["loss"], losses) if return_outputs else losses["loss"]

    @torch.no_grad()
    def student_teacher_kl(self, dataset: Dataset, batch_size: int | None = None) -> dict[str, float]:
        """
        Token-weighted mean `kl` (KL(teacher || student)) and `kd_loss` over `dataset`, in eval mode.
        """
        batch_size = batch_size or self.args.per_device_eval_batch_size
        model = self.model
        was_training = model.training
        model.eval()
        totals = {"kl": 0.0, "kd_loss": 0.0}
        tokens = 0
        try:
            for start in range(0, len(dataset), batch_size):
                rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
                inputs = self._prepare_inputs(self.data_collator(rows))
                losses = self._losses(model, inputs, with_teacher=True)
                n = int(inputs["response_mask"].sum())
                totals["kl"] += losses["kl"].item() * n
                totals["kd_loss"] += losses["kd_loss"].item() * n
                tokens += n
        finally:
            model.train(was_training)
        return {k: v / max(tokens, 1) for k, v in totals.items()}

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("evaluate needs an eval_dataset")
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in self.student_teacher_kl(dataset).items()}
        self.log(metrics)
        return metrics

    def _card_training_args(self) -> dict:
        return {
            "temperature": self.args.temperature,
            "kd_weight": self.args.kd_weight,
            "ce_weight": self.args.ce_weight,
            "teacher": "separate model" if self.teacher_model is not None else "adapter-disabled base",
            "learning_rate": self.args.learning_rate,
        }
