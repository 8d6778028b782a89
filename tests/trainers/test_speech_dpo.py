"""PO-regularization: judged beam-search pairs, TRL DPOTrainer with LoRA (reference = adapter disabled), learning."""

import copy

import numpy as np
import pytest
import torch
from datasets import Dataset
from peft import PeftModel
from trl import DPOConfig, SFTConfig, SFTTrainer

from hfpref.data.audio import decode_audio
from hfpref.data.speech_world import EMOTIONS, make_speech_world, speech_caption
from hfpref.encoders.speech_tokens import (
    SpeechTokenEncoder,
    build_speech_tokenizer,
    build_tiny_speech_llm,
    fit_speech_codebook,
)
from hfpref.judges.base import ClueOverlapJudge
from hfpref.judges.pairs import build_preference_pairs
from hfpref.trainers.kd_align_trainer import kd_alignment_dataset
from hfpref.trainers.speech_dpo import (
    drop_forward_patches,
    greedy_captions,
    judge_preference,
    speech_dpo_trainer,
    validate_preference_pairs,
)


CPU = dict(save_strategy="no", report_to="none", use_cpu=True, bf16=False, disable_tqdm=True, seed=0, logging_steps=10)


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Beam search and DPO on a tiny Llama."""


@pytest.fixture(scope="module")
def starting_model(tmp_path_factory):
    """A captioner fine-tuned on noisy captions (half name a wrong emotion), so its beams differ in quality."""
    torch.set_num_threads(1)
    world = make_speech_world(32, seed=0, backend="procedural", clip_seconds=1.0)
    encoder = SpeechTokenEncoder(
        fit_speech_codebook(build_speech_tokenizer(), [decode_audio(a, 16000) for a in world["audio"]])
    )
    ds = kd_alignment_dataset(world, encoder)
    model, tokenizer = build_tiny_speech_llm(
        [c for r in world["references"] for c in r] + list(ds["text_prompt"]), encoder.codebook_size
    )
    rng = np.random.default_rng(0)
    rows = []
    for ex in ds:
        clip = {k: ex[k] for k in ("emotion", "voice", "pitch", "rhythm", "volume", "intonation")}
        for k in range(3):
            wrong = dict(clip, emotion=EMOTIONS[(EMOTIONS.index(clip["emotion"]) + 1 + rng.integers(5)) % 6])
            rows += [
                {"prompt": ex["prompt"], "completion": speech_caption(clip, k)},
                {"prompt": ex["prompt"], "completion": speech_caption(wrong, k)},
            ]
    args = SFTConfig(
        output_dir=str(tmp_path_factory.mktemp("sft")),
        max_steps=100,
        per_device_train_batch_size=16,
        learning_rate=5e-3,
        gradient_checkpointing=False,
        **CPU,
    )
    SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer).train()
    return model, tokenizer, ds


def test_pairs_from_the_clue_judge(starting_model):
    model, tokenizer, ds = starting_model
    judge = ClueOverlapJudge()
    pairs, stats = build_preference_pairs(model, tokenizer, ds.select(range(8)), judge, num_beams=4)
    assert (
        stats["clips"] == 8
        and stats["pairs"] == len(pairs) > 0
        and stats["judge_scored_clips"] + stats.get("fewer_than_two_candidates", 0) == 8
    )
    for row in pairs:
        references = ds[row["row"]]["references"]
        assert row["chosen_score"] > row["rejected_score"]
        assert judge.score([row["chosen"], row["rejected"]], references=references) == [
            row["chosen_score"],
            row["rejected_score"],
        ]
        assert row["clip_id"] == ds[row["row"]]["clip_id"]
    worst, _ = build_preference_pairs(model, tokenizer, ds.select(range(8)), judge, num_beams=4, rejected="worst")
    assert len(worst) == len(set(worst["row"])) <= len(pairs)


def test_validation_names_the_bad_row():
    with pytest.raises(ValueError, match="row 1, column 'rejected'"):
        validate_preference_pairs(
            Dataset.from_dict({"prompt": ["a", "b"], "chosen": ["x", "y"], "rejected": ["z", ""]})
        )
    with pytest.raises(ValueError, match="no preference pairs"):
        validate_preference_pairs(Dataset.from_dict({"prompt": [], "chosen": [], "rejected": []}))
    with pytest.raises(ValueError, match="row 0: chosen and rejected are the same"):
        validate_preference_pairs(Dataset.from_dict({"prompt": ["a"], "chosen": ["x"], "rejected": ["x"]}))


def _dpo_args(output_dir, **overrides):
    # DPO plus an NLL term on the chosen caption (TRL loss_type ["sigmoid", "sft"], RPO:
    # https://huggingface.co/papers/2404.19733). Pure DPO at a learning rate that moves this tiny LoRA in 40 steps
    # lowers the likelihood of chosen and rejected alike and collapses every clip onto one caption (seed 0: judge
    # score 0.71 -> 0.36); the paper's lr 5e-7 on a 7B model stays close to the reference, which the NLL anchor
    # stands in for here. The recipe's default stays pure DPO.
    settings = dict(
        max_steps=40,
        per_device_train_batch_size=16,
        learning_rate=3e-3,
        beta=0.1,
        loss_type=["sigmoid", "sft"],
        loss_weights=[1.0, 1.0],
        gradient_checkpointing=False,
        **CPU,
    )
    return DPOConfig(output_dir=str(output_dir), **{**settings, **overrides})


def _judged_on_pair_clips(trainer, model, tokenizer, ds, pairs, judge):
    rows = sorted(set(pairs["row"]))
    prompts = [ds[i]["prompt"] for i in rows]
    start = greedy_captions(model, tokenizer, prompts)
    trainer.train()
    with trainer.model.disable_adapter():  # the reference is still the starting model
        assert greedy_captions(trainer.model, tokenizer, prompts) == start
    policy = greedy_captions(trainer.model, tokenizer, prompts)  # the trained policy is trainer.model, a PeftModel
    return judge_preference(policy, start, judge, references=[ds[i]["references"] for i in rows])


def test_dpo_raises_the_judge_preference_for_the_policy_captions(starting_model, tmp_path):
    """
    After DPO on judged pairs, the judge prefers the policy's greedy captions to the starting model's on the clips
    the pairs come from. Held-out clips do not move reliably at this scale (32 training clips, a 2-layer Llama):
    the policy sharpens what it says about the clips it was trained on, and the clips without pairs (all beams tied)
    can get worse (seed 0: 7 wins, 9 losses over all 32 clips).
    """
    model, tokenizer, ds = starting_model
    model = copy.deepcopy(model)  # the module fixture stays the starting model for the other tests
    judge = ClueOverlapJudge()
    pairs, stats = build_preference_pairs(model, tokenizer, ds, judge, num_beams=4)
    trainer = speech_dpo_trainer(model, tokenizer, pairs, _dpo_args(tmp_path))
    assert isinstance(trainer.model, PeftModel) and trainer.ref_model is None  # reference = adapter disabled
    assert trainer.model.peft_config["default"].r == 8
    result = _judged_on_pair_clips(trainer, model, tokenizer, ds, pairs, judge)
    # Seed noise: the same test with fixture and training seeds 0..3 gave, on the pair clips, wins - losses of
    # 6, 7, 10, 3 and clue-F1 gains of 0.080, 0.050, 0.087, 0.019 (seed 0 here: 7 wins, 1 loss, 0.77 -> 0.85).
    # The margins are the smallest of those, so a seed that happens to help cannot pass a policy that did not learn.
    assert result["wins"] >= result["losses"] + 3, result
    assert result["policy_score"] >= result["start_score"] + 0.015, result


def test_a_deep_copy_trains_its_own_weights():
    """
    TRL's trainers patch `model.forward` with a closure over the patched model's bound `forward`; a deep copy kept
    running the original's weights, so DPO on a copy left its captions unchanged. `speech_dpo_trainer` drops it.
    """
    from trl.trainer.utils import add_fused_lm_head

    model, tokenizer = build_tiny_speech_llm(["a woman sounds sad", "a man speaks fast and sounds angry"] * 8, 4)
    add_fused_lm_head(model)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.lm_head.weight.mul_(2.0)
    ids = tokenizer(["<st_1><st_2> a woman"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(twin(ids).logits, model(ids).logits)  # the stale closure: the twin's weights unused
        assert drop_forward_patches(twin) and not drop_forward_patches(twin)
        assert not torch.allclose(twin(ids).logits, model(ids).logits)


@pytest.mark.slow
def test_swapped_pairs_do_not_raise_the_judge_preference(starting_model, tmp_path):
    """
    The control: the same run on pairs with chosen and rejected swapped must not help, so the gain above comes from
    the judge's preferences, not from any 40 steps of training (seed 0: 1 win, 10 losses, clue F1 0.77 -> 0.64).
    """
    model, tokenizer, ds = starting_model
    model = copy.deepcopy(model)
    judge = ClueOverlapJudge()
    pairs, _ = build_preference_pairs(model, tokenizer, ds, judge, num_beams=4)
    swapped = pairs.rename_columns({"chosen": "rejected", "rejected": "chosen"})
    trainer = speech_dpo_trainer(model, tokenizer, swapped, _dpo_args(tmp_path))
    result = _judged_on_pair_clips(trainer, model, tokenizer, ds, pairs, judge)
    assert result["wins"] <= result["losses"] and result["policy_score"] <= result["start_score"], result
