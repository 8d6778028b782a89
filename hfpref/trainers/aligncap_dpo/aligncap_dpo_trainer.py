"""
AlignCap's PO-regularization ([Liang et al., 2024](https://huggingface.co/papers/2410.19134), section 3.2, eq. 6):
standard DPO on (speech-token prompt, chosen, rejected) with a LoRA adapter, through TRL's `DPOTrainer`; the
reference is the policy with its adapter disabled (TRL does this under peft), so no second copy of the LLM is held.
The pairs come from a judge ([`~hfpref.judges.pairs.build_preference_pairs`]).

Pairs from [`~hfpref.judges.pairs.build_preference_pairs`] carry the token ids generation produced, and
[`AlignCapDPOTrainer`] trains on them as they are: TRL would otherwise re-tokenize `prompt + chosen` as one string,
which for a SentencePiece tokenizer (Llama's `"▁A"` becomes `"A"`) or byte-level BPE scores tokens the policy never
generated.

The paper fine-tunes for about 1k steps at lr 5e-7 (`AlignCapDPOConfig.from_preset("paper")`,
`recipes/aligncap_dpo/config_dpo.yaml`); about 50k pairs was its point of diminishing returns.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from datasets import Dataset
from peft import PeftModel
from transformers import AutoModelForCausalLM
from trl import DPOConfig, DPOTrainer

from ...encoders.speech_tokens import prepare_fused_lm_head, speech_lora_config, speech_token_ids
from ...judges.base import Judge
from ...judges.pairs import generate_candidates
from ...utils.distributed import peft_before_trl
from ...utils.safe_loading import load_pretrained, refuse_remote_code
from ..base_trainer import BaseTrainer, TrainedAdapterSaveMixin


TOKEN_ID_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")

logger = logging.getLogger(__name__)


def validate_preference_pairs(pairs: Dataset) -> None:
    """
    Check TRL's preference format: non-empty string `prompt`, `chosen`, `rejected`, and `chosen != rejected`.

    Raises:
        `ValueError`: naming the first bad row and column.
    """
    missing = {"prompt", "chosen", "rejected"} - set(pairs.column_names)
    if missing:
        raise ValueError(f"preference pairs lack column(s) {sorted(missing)}; they have {pairs.column_names}")
    if len(pairs) == 0:
        raise ValueError("no preference pairs: every clip's candidates tied under the judge, or the judge failed")
    for i, row in enumerate(pairs.select_columns(["prompt", "chosen", "rejected"])):
        for column, value in row.items():
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"row {i}, column {column!r}: expected a non-empty string, got {value!r}")
        if row["chosen"] == row["rejected"]:
            raise ValueError(f"row {i}: chosen and rejected are the same caption {row['chosen']!r}")


def validate_token_ids(pairs: Dataset, tokenizer, max_length: int | None = None) -> None:
    """
    Check pre-tokenized pairs: `prompt_ids`, `chosen_ids`, `rejected_ids` non-empty lists of ids of `tokenizer`'s
    vocabulary, each completion ending with EOS, each prompt shorter than `max_length`.

    Raises:
        `ValueError`: naming the first bad row and column.
    """
    vocab, eos = len(tokenizer), tokenizer.eos_token_id
    for i, row in enumerate(pairs.select_columns(list(TOKEN_ID_COLUMNS))):
        for column, ids in row.items():
            if not ids or not all(isinstance(t, int) and 0 <= t < vocab for t in ids):
                raise ValueError(f"row {i}, column {column!r}: expected token ids in [0, {vocab}), got {ids!r}")
            if column != "prompt_ids" and ids[-1] != eos:
                raise ValueError(f"row {i}, column {column!r}: the completion does not end with EOS ({eos})")
        if max_length is not None and len(row["prompt_ids"]) >= max_length:
            raise ValueError(
                f"row {i}: the prompt has {len(row['prompt_ids'])} tokens, max_length={max_length} leaves no room for "
                "the completion"
            )


class AlignCapDPOTrainer(TrainedAdapterSaveMixin, BaseTrainer, DPOTrainer):
    """
    TRL's `DPOTrainer`, trained on the token ids the pairs carry (`prompt_ids`, `chosen_ids`, `rejected_ids`, as
    [`~hfpref.judges.pairs.build_preference_pairs`] writes them) instead of re-tokenizing `prompt + chosen`. Pairs
    without ids go through TRL's own tokenization (with a warning: text glued to the prompt may not give back the
    tokens a model generated).

    A tied LM head whose speech-token rows peft trains is made readable by TRL's fused head
    ([`~hfpref.encoders.speech_tokens.prepare_fused_lm_head`]).
    """

    _name = "aligncap_dpo"
    _tag_names = ["hfpref", "aligncap", "dpo", "speech-emotion-captioning"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        prepare_fused_lm_head(self.model)

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if isinstance(dataset, Dataset) and all(c in dataset.column_names for c in TOKEN_ID_COLUMNS):
            tokenizer = getattr(processing_class, "tokenizer", processing_class)
            validate_token_ids(dataset, tokenizer, args.max_length if args.truncation_mode == "keep_start" else None)
            return dataset
        logger.warning(
            "%s pairs have no %s: TRL tokenizes prompt + completion as one string, which need not give back the "
            "tokens the model generated (build pairs with hfpref.judges.pairs.build_preference_pairs to keep them)",
            dataset_name, list(TOKEN_ID_COLUMNS),
        )  # fmt: skip
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)


def drop_forward_patches(model) -> bool:
    """
    Remove an instance-level `forward` left on `model` by an earlier TRL trainer, so the class's own `forward` runs.

    TRL's trainers (SFT, DPO, GRPO, ...) call `trl.trainer.utils.add_fused_lm_head`, which sets `model.forward` to a
    closure over the bound `forward` of the model it patched. `copy.deepcopy` copies the attribute but not the
    closure, so a deep copy of a model that has been through a TRL trainer runs the *original's* weights: training
    the copy (its LoRA adapter included) then changes nothing it generates. `DPOTrainer` adds the fused head again
    itself, so dropping the stale one loses nothing.

    Args:
        model (`PreTrainedModel` or `PeftModel`): the model (for a `PeftModel`, its base model is cleaned).

    Returns:
        `bool`: whether a patched `forward` was removed.
    """
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    return base.__dict__.pop("forward", None) is not None


def aligncap_dpo_trainer(
    model, tokenizer, pairs: Dataset, args: DPOConfig, *, peft_config=None, eval_pairs=None, callbacks=None
) -> DPOTrainer:
    """
    A [`AlignCapDPOTrainer`] (TRL's `DPOTrainer` on the pairs' token ids) for a speech-token captioner: LoRA by default ([`~hfpref.encoders.speech_tokens.speech_lora_config`],
    r = 8, speech-token rows trainable), reference = the adapter-disabled policy.

    Args:
        model (`PreTrainedModel`, `PeftModel` or `str`): the captioner (a KD student merged or not), or its path
            (loaded with [`~hfpref.utils.safe_loading.load_pretrained`]: safetensors only, no remote code).
        tokenizer (`PreTrainedTokenizerBase`): its tokenizer, speech tokens included.
        pairs (`datasets.Dataset`): `prompt`, `chosen`, `rejected` rows (checked by [`validate_preference_pairs`]).
        args ([`~hfpref.trainers.aligncap_dpo.AlignCapDPOConfig`] or `trl.DPOConfig`): DPO arguments; on CPU set
            `bf16=False` and `gradient_checkpointing=False`.
        peft_config (`peft.LoraConfig`, *optional*): adapter of a plain model (default: `speech_lora_config`).
        eval_pairs (`datasets.Dataset`, *optional*): held-out pairs.
        callbacks (`list`, *optional*): trainer callbacks.
    """
    validate_preference_pairs(pairs)
    refuse_remote_code(args, model if isinstance(model, str) else None)
    if isinstance(model, str):
        model = load_pretrained(AutoModelForCausalLM, model, **(args.model_init_kwargs or {}))
    drop_forward_patches(model)
    if eval_pairs is not None:
        validate_preference_pairs(eval_pairs)
    if not isinstance(model, PeftModel) and peft_config is None:
        peft_config = speech_lora_config(speech_token_ids(tokenizer))
    model, peft_config = peft_before_trl(model, peft_config)
    return AlignCapDPOTrainer(
        model=model,
        args=args,
        train_dataset=pairs,
        eval_dataset=eval_pairs,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )


def greedy_captions(
    model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 48, batch_size: int = 8
) -> list[str]:
    """The greedy caption of each prompt (`""` when the model stops at once)."""
    beams = generate_candidates(
        model, tokenizer, prompts, num_beams=1, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    return [b[0] if b else "" for b in beams]


def judge_preference(
    policy_captions: Sequence[str], start_captions: Sequence[str], judge: Judge, *, references=None, audio=None
) -> dict[str, float]:
    """
    How the judge compares the policy's captions with the starting model's, clip by clip: `wins`, `losses`, `ties`,
    `win_rate` (wins over non-ties, as the RLHF captioning paper's human win rate; `nan` when every clip ties), and
    both mean scores.

    Example:
    ```python
    >>> from hfpref.judges.base import ClueOverlapJudge
    >>> judge_preference(["a woman sounds sad", "a man sounds angry"], ["a woman sounds happy", "a man sounds angry"],
    ...                  ClueOverlapJudge(), references=[["a woman sounds sad"], ["an angry man"]])
    {'wins': 1, 'losses': 0, 'ties': 1, 'win_rate': 1.0, 'policy_score': 1.0, 'start_score': 0.5}

    ```
    """
    if len(policy_captions) != len(start_captions):
        raise ValueError(f"{len(policy_captions)} policy captions for {len(start_captions)} starting-model captions")
    wins = losses = 0
    policy_scores, start_scores = [], []
    for i, (policy, start) in enumerate(zip(policy_captions, start_captions)):
        kwargs = {
            "references": None if references is None else references[i],
            "audio": None if audio is None else audio[i],
        }
        policy_score, start_score = judge.score([policy or " ", start or " "], **kwargs)
        policy_scores.append(policy_score)
        start_scores.append(start_score)
        wins += policy_score > start_score
        losses += policy_score < start_score
    decided = wins + losses
    return {
        "wins": wins,
        "losses": losses,
        "ties": len(policy_captions) - decided,
        "win_rate": wins / decided if decided else float("nan"),
        "policy_score": float(np.mean(policy_scores)),
        "start_score": float(np.mean(start_scores)),
    }
