"""
Preference pairs from a judge (AlignCap's PO-regularization data, [Liang et al., 2024](https://huggingface.co/papers/2410.19134),
section 3.2): beam-search candidates of the current model for each clip, scored by a judge; the best is chosen and
the others (`rejected="all"`) or the worst (`rejected="worst"`) are rejected. The result is TRL's preference format
(`prompt`, `chosen`, `rejected`), ready for `DPOTrainer`.

Each pair also carries the token ids generation produced (`prompt_ids`, `chosen_ids`, `rejected_ids`, EOS
appended). TRL tokenizes `prompt + chosen` as one string, and the beams' text cannot always be joined back to the
same tokens: a SentencePiece (Metaspace) tokenizer such as Llama's turns the generated `"▁A"` into `"A"` once the
decoded, stripped caption is glued to the prompt, and byte-level BPE loses its `"ĠA"` the same way.
[`~hfpref.trainers.aligncap_dpo.aligncap_dpo_trainer.aligncap_dpo_trainer`] trains on the ids, so the policy is scored on exactly the tokens
it generated.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import torch
from datasets import Dataset

from .base import Judge, JudgeError


logger = logging.getLogger(__name__)

REJECTED_MODES = ("all", "worst")
ON_ERROR = ("raise", "skip")


def completion_ids(generated: Sequence[int], eos_token_id: int) -> list[int]:
    """
    The tokens a generated completion holds: everything before the first EOS (the padding after it dropped).

    Example:
    ```python
    >>> completion_ids([5, 9, 2, 0, 0], eos_token_id=2), completion_ids([5, 9], eos_token_id=2)
    ([5, 9], [5, 9])

    ```
    """
    ids = [int(i) for i in generated]
    return ids[: ids.index(eos_token_id)] if eos_token_id in ids else ids


@torch.no_grad()
def generate_candidate_ids(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    num_beams: int = 4,
    num_candidates: int | None = None,
    max_new_tokens: int = 48,
    batch_size: int = 8,
) -> list[list[tuple[str, list[int]]]]:
    """
    Beam-search candidates of each prompt as `(text, ids)`: the `num_candidates` best beams (default `num_beams`),
    `ids` the generated tokens up to (not including) EOS, `text` their decoding without special tokens, stripped;
    empty candidates and duplicate texts are dropped (the first kept, order kept).

    Args:
        model (`PreTrainedModel`): a causal LM (a `PeftModel` with its adapter active is fine).
        tokenizer (`PreTrainedTokenizerBase`): its tokenizer, with a pad token.
        prompts (`Sequence[str]`): speech-token prompts.
        num_beams (`int`, *optional*, defaults to `4`): beam width.
        num_candidates (`int`, *optional*): returned beams per prompt, at most `num_beams`.
        max_new_tokens (`int`, *optional*, defaults to `48`): longest candidate.
        batch_size (`int`, *optional*, defaults to `8`): prompts per `generate` call.
    """
    num_candidates = num_candidates or num_beams
    if not 1 <= num_candidates <= num_beams:
        raise ValueError(f"num_candidates={num_candidates} must be between 1 and num_beams={num_beams}")
    was_training = model.training
    model.eval()
    out: list[list[str]] = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            inputs = tokenizer(chunk, return_tensors="pt", padding=True, padding_side="left").to(model.device)
            generated = model.generate(
                **inputs,
                num_beams=num_beams,
                num_return_sequences=num_candidates,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            new_tokens = generated[:, inputs["input_ids"].shape[1] :].tolist()
            for i in range(len(chunk)):
                beams: dict[str, list[int]] = {}
                for ids in new_tokens[i * num_candidates : (i + 1) * num_candidates]:
                    ids = completion_ids(ids, tokenizer.eos_token_id)
                    text = tokenizer.decode(ids, skip_special_tokens=True).strip()
                    if text:
                        beams.setdefault(text, ids)
                out.append(list(beams.items()))
    finally:
        model.train(was_training)
    return out


def generate_candidates(model, tokenizer, prompts: Sequence[str], **kwargs) -> list[list[str]]:
    """
    Beam-search candidates of each prompt, as text: [`generate_candidate_ids`] without the ids (same arguments).
    """
    return [[text for text, _ in beams] for beams in generate_candidate_ids(model, tokenizer, prompts, **kwargs)]


def pairs_from_scores(candidates: Sequence[str], scores: Sequence[float], rejected: str = "all") -> list[tuple]:
    """
    `(chosen, rejected, chosen_score, rejected_score)` tuples: the best-scored candidate against every candidate
    scored strictly lower (`"all"`), or against the lowest (`"worst"`). No pair when every score ties.

    Example:
    ```python
    >>> pairs_from_scores(["a", "b", "c"], [0.2, 0.9, 0.5])
    [('b', 'a', 0.9, 0.2), ('b', 'c', 0.9, 0.5)]
    >>> pairs_from_scores(["a", "b", "c"], [0.2, 0.9, 0.5], rejected="worst")
    [('b', 'a', 0.9, 0.2)]

    ```
    """
    if rejected not in REJECTED_MODES:
        raise ValueError(f"rejected={rejected!r} is not one of {list(REJECTED_MODES)}")
    if len(candidates) != len(scores):
        raise ValueError(f"{len(scores)} scores for {len(candidates)} candidates")
    if not candidates:
        return []
    best = max(range(len(scores)), key=lambda i: scores[i])
    losers = [i for i in range(len(scores)) if scores[i] < scores[best]]
    if rejected == "worst" and losers:
        losers = [min(losers, key=lambda i: scores[i])]
    return [(candidates[best], candidates[i], float(scores[best]), float(scores[i])) for i in losers]


def build_preference_pairs(
    model,
    tokenizer,
    dataset: Dataset,
    judge: Judge,
    *,
    prompt_column: str = "prompt",
    references_column: str | None = "references",
    audio_column: str | None = "audio",
    rejected: str = "all",
    on_error: str = "raise",
    num_beams: int = 4,
    num_candidates: int | None = None,
    max_new_tokens: int = 48,
    batch_size: int = 8,
) -> tuple[Dataset, dict[str, int]]:
    """
    Judge the model's beam-search candidates of every clip and keep (best, other) pairs.

    Args:
        model, tokenizer: the captioner (speech tokens in its vocabulary) and its tokenizer.
        dataset (`datasets.Dataset`): clips with `prompt_column` (speech tokens + instruction) and what the judge
            reads (`references_column` for the clue and LLM judges, `audio_column` for a reward model).
        judge ([`~hfpref.judges.base.Judge`]): scores the candidates of one clip.
        prompt_column (`str`, *optional*, defaults to `"prompt"`): prompt column.
        references_column (`str`, *optional*, defaults to `"references"`): reference captions (a list or a string
            per row); `None` for none.
        audio_column (`str`, *optional*, defaults to `"audio"`): audio column passed to the judge; `None` for none.
        rejected (`str`, *optional*, defaults to `"all"`): `"all"` other candidates, or the `"worst"` one.
        on_error (`str`, *optional*, defaults to `"raise"`): on a [`JudgeError`], `"raise"` it (with the row) or
            `"skip"` the clip, counted under `judge_errors` and logged.
        num_beams, num_candidates, max_new_tokens, batch_size: see [`generate_candidates`].

    Returns:
        `tuple[datasets.Dataset, dict]`: the pairs (`prompt`, `chosen`, `rejected`, `chosen_score`, `rejected_score`,
        `row`, the token ids `prompt_ids`, `chosen_ids`, `rejected_ids` (generated tokens + EOS), and `clip_id` when
        the dataset has it) and counts: `clips`, `pairs`, `judge_errors`,
        `fewer_than_two_candidates`, `all_tied`, plus the judge's own `stats`.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error={on_error!r} is not one of {list(ON_ERROR)}")
    if rejected not in REJECTED_MODES:
        raise ValueError(f"rejected={rejected!r} is not one of {list(REJECTED_MODES)}")
    for column in (prompt_column, references_column, audio_column):
        if column is not None and column not in dataset.column_names:
            raise ValueError(f"column {column!r} is not in the dataset; it has {dataset.column_names}")
    candidates = generate_candidate_ids(
        model,
        tokenizer,
        dataset[prompt_column],
        num_beams=num_beams,
        num_candidates=num_candidates,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    counts: Counter = Counter(clips=len(dataset))
    columns = ("prompt", "chosen", "rejected", "chosen_score", "rejected_score", "row", "prompt_ids", "chosen_ids",
               "rejected_ids")  # fmt: skip
    rows: dict[str, list] = {k: [] for k in columns}
    clip_ids = dataset["clip_id"] if "clip_id" in dataset.column_names else None
    eos = [tokenizer.eos_token_id]
    for i, candidate_ids in enumerate(candidates):
        beams = [text for text, _ in candidate_ids]
        if len(beams) < 2:
            counts["fewer_than_two_candidates"] += 1
            continue
        example = dataset[i]
        try:
            scores = judge.score(
                beams,
                references=example[references_column] if references_column else None,
                audio=example[audio_column] if audio_column else None,
            )
        except JudgeError as error:
            counts["judge_errors"] += 1
            if on_error == "raise":
                where = f"row {i}" + (f" (clip_id {clip_ids[i]!r})" if clip_ids else "")
                raise JudgeError(f"{where}: {error}") from error
            continue
        pairs = pairs_from_scores(beams, scores, rejected)
        if not pairs:
            counts["all_tied"] += 1
        ids = dict(candidate_ids)
        prompt_ids = tokenizer(example[prompt_column])["input_ids"]  # as generate_candidate_ids tokenized it
        for chosen, loser, chosen_score, loser_score in pairs:
            values = (example[prompt_column], chosen, loser, chosen_score, loser_score, i, prompt_ids,
                      ids[chosen] + eos, ids[loser] + eos)  # fmt: skip
            for key, value in zip(columns, values):
                rows[key].append(value)
    counts["pairs"] = len(rows["prompt"])
    if clip_ids is not None:  # built here, not with `add_column`, which fails on a dataset of no rows
        rows["clip_id"] = [clip_ids[r] for r in rows["row"]]
    pairs_ds = Dataset.from_dict(rows)
    stats = {**counts, **{f"judge_{k}": v for k, v in judge.stats.items()}}
    if counts["judge_errors"]:
        logger.warning(
            "%d of %d clips skipped on judge errors: %s", counts["judge_errors"], len(dataset), dict(judge.stats)
        )
    return pairs_ds, stats
