"""PO-regularization: judged beam-search pairs, TRL DPOTrainer with LoRA (reference = adapter disabled), learning."""

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from datasets import Dataset
from peft import PeftModel
from trl import SFTConfig, SFTTrainer

from hfpref.data.audio import decode_audio
from hfpref.data.synthetic.speech_world import EMOTIONS, make_speech_world, speech_caption
from hfpref.encoders.speech_tokens import (
    SpeechTokenEncoder,
    build_speech_tokenizer,
    build_tiny_speech_llm,
    fit_speech_codebook,
)
from hfpref.judges.base import ClueOverlapJudge
from hfpref.judges.pairs import build_preference_pairs, completion_ids
from hfpref.trainers.aligncap_dpo.aligncap_dpo_config import AlignCapDPOConfig
from hfpref.trainers.aligncap_dpo.aligncap_dpo_trainer import (
    TOKEN_ID_COLUMNS,
    aligncap_dpo_trainer,
    drop_forward_patches,
    greedy_captions,
    judge_preference,
    validate_preference_pairs,
    validate_token_ids,
)
from hfpref.trainers.aligncap_kd.aligncap_kd_trainer import kd_alignment_dataset


CPU = dict(save_strategy="no", report_to="none", use_cpu=True, bf16=False, disable_tqdm=True, seed=0, logging_steps=10)


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Beam search and DPO on a tiny Llama."""


N_TRAIN, N_HELD_OUT = 32, 16


def _starting_model(output_dir, seed=0, tokenizer_kind="byte_level", sft_steps=100, leading_space=False):
    """
    A captioner fine-tuned on noisy captions (half name a wrong emotion) of the first 32 clips of a 48-clip speech
    world, so its beams differ in quality; the last 16 clips are held out (never seen by SFT or DPO).

    With `leading_space`, the SFT completions start with a space, so the captions it generates start with a
    word-initial token ("▁A" / "ĠA") as an LLM's answer after a prompt does; without it, with a glued "A".
    """
    torch.set_num_threads(1)
    world = make_speech_world(N_TRAIN + N_HELD_OUT, seed=seed, backend="procedural", clip_seconds=1.0)
    waveforms = [decode_audio(a, 16000) for a in world["audio"]]
    encoder = SpeechTokenEncoder(
        fit_speech_codebook(build_speech_tokenizer(seed=seed), waveforms[:N_TRAIN], seed=seed)
    )
    everything = kd_alignment_dataset(world, encoder)
    ds, held_out = everything.select(range(N_TRAIN)), everything.select(range(N_TRAIN, len(everything)))
    model, tokenizer = build_tiny_speech_llm(
        [c for r in ds["references"] for c in r] + list(ds["text_prompt"]), encoder.codebook_size, seed=seed,
        tokenizer_kind=tokenizer_kind,
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    rows = []
    for ex in ds:
        clip = {k: ex[k] for k in ("emotion", "voice", "pitch", "rhythm", "volume", "intonation")}
        for k in range(3):
            wrong = dict(clip, emotion=EMOTIONS[(EMOTIONS.index(clip["emotion"]) + 1 + rng.integers(5)) % 6])
            space = " " if leading_space else ""
            rows += [
                {"prompt": ex["prompt"], "completion": space + speech_caption(clip, k)},
                {"prompt": ex["prompt"], "completion": space + speech_caption(wrong, k)},
            ]
    args = SFTConfig(
        output_dir=str(output_dir),
        max_steps=sft_steps,
        per_device_train_batch_size=16,
        learning_rate=5e-3,
        gradient_checkpointing=False,
        **{**CPU, "seed": seed},
    )
    SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer).train()
    return model, tokenizer, ds, held_out


@pytest.fixture(scope="module")
def starting_model(tmp_path_factory):
    return _starting_model(tmp_path_factory.mktemp("sft"))


def test_pairs_from_the_clue_judge(starting_model):
    model, tokenizer, ds, _ = starting_model
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
        # The ids are what generation produced: they decode to the judged captions and end with EOS.
        assert row["prompt_ids"] == tokenizer(row["prompt"])["input_ids"]
        for column in ("chosen", "rejected"):
            ids = row[f"{column}_ids"]
            assert ids[-1] == tokenizer.eos_token_id and tokenizer.decode(ids[:-1]).strip() == row[column]
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
    return AlignCapDPOConfig(output_dir=str(output_dir), **{**settings, **overrides})


def test_config_has_the_paper_preset_and_says_what_would_be_valid(tmp_path):
    args = AlignCapDPOConfig.from_preset("paper", output_dir=str(tmp_path), **CPU)
    assert (args.learning_rate, args.max_steps, args.beta, args.loss_type) == (5e-7, 1000, 0.1, ["sigmoid"])
    assert AlignCapDPOConfig.from_preset("paper", output_dir=str(tmp_path), max_steps=5, **CPU).max_steps == 5
    with pytest.raises(ValueError, match=r"preset='paper_dpo' is not one of \['paper'\]"):
        AlignCapDPOConfig.from_preset("paper_dpo", output_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"beta=0.0 must be a positive number \(the paper: 0.1\)"):
        AlignCapDPOConfig(output_dir=str(tmp_path), beta=0.0, **CPU)
    with pytest.raises(ValueError, match="learning_rate=0.0 must be positive"):
        AlignCapDPOConfig(output_dir=str(tmp_path), learning_rate=0.0, **CPU)


def test_dpo_loss_uses_the_configured_beta_the_pair_order_and_the_adapter_disabled_reference(tmp_path):
    """
    The loss the trainer computes on two hand-made pairs, at beta = 1.5 (not the default 0.1), equals
    `mean(-log sigmoid(beta * ((log pi(c) - log ref(c)) - (log pi(r) - log ref(r)))))` with the sequence
    log-probabilities summed by hand from the policy (adapter on) and the reference (adapter disabled).
    """
    import torch.nn.functional as F

    texts = ["a woman sounds sad", "a man speaks fast and sounds angry", "a calm voice"] * 8
    model, tokenizer = build_tiny_speech_llm(texts, 4, seed=1)
    eos = tokenizer.eos_token_id

    def ids(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"] + [eos]

    pairs = Dataset.from_dict(
        {
            "prompt": ["<st_0><st_1> a", "<st_2><st_3><st_1> a"],
            "chosen": ["woman sounds sad", "man speaks fast"],
            "rejected": ["man sounds angry", "calm voice"],
            "prompt_ids": [tokenizer("<st_0><st_1> a")["input_ids"], tokenizer("<st_2><st_3><st_1> a")["input_ids"]],
            "chosen_ids": [ids(" woman sounds sad"), ids(" man speaks fast")],
            "rejected_ids": [ids(" man sounds angry"), ids(" calm voice")],
        }
    )
    beta = 1.5
    args = AlignCapDPOConfig(
        output_dir=str(tmp_path), beta=beta, per_device_train_batch_size=2, gradient_checkpointing=False, **CPU
    )
    trainer = aligncap_dpo_trainer(model, tokenizer, pairs, args)
    torch.manual_seed(0)
    for p in trainer.model.parameters():  # a non-zero adapter: the policy differs from the reference
        if p.requires_grad:
            p.data.normal_(0, 1.0)
    inputs = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(2)]))
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, inputs).item()

    def sequence_log_prob(prompt, completion):
        with torch.no_grad():
            logits = trainer.model(input_ids=torch.tensor([prompt + completion])).logits[0].double()
        log_probs = torch.log_softmax(logits, -1)
        return sum(log_probs[len(prompt) - 1 + t, token].item() for t, token in enumerate(completion))

    margins = []
    for row in pairs:
        policy = [sequence_log_prob(row["prompt_ids"], row[c]) for c in ("chosen_ids", "rejected_ids")]
        with trainer.model.disable_adapter():
            reference = [sequence_log_prob(row["prompt_ids"], row[c]) for c in ("chosen_ids", "rejected_ids")]
        margins.append((policy[0] - reference[0]) - (policy[1] - reference[1]))

    def dpo(b, sign=1.0):
        return float(np.mean([-F.logsigmoid(torch.tensor(sign * b * m, dtype=torch.float64)).item() for m in margins]))

    expected = dpo(beta)
    # The toy tells beta, the pair order and the reference apart: the default beta, the pairs swapped and a reference
    # equal to the policy (margin 0: ln 2) give values far from the expected one.
    assert min(abs(dpo(0.1) - expected), abs(dpo(beta, -1.0) - expected), abs(math.log(2) - expected)) > 0.05
    assert loss == pytest.approx(expected, rel=1e-4)


SWAP = {"chosen": "rejected", "rejected": "chosen", "chosen_ids": "rejected_ids", "rejected_ids": "chosen_ids"}


def dpo_check(model, tokenizer, ds, held_out, output_dir, swap=False) -> dict:
    """
    DPO (with RPO's NLL anchor, `_dpo_args`) on clue-judged pairs of the starting model's beams, from a copy of the
    model; the judge then compares the policy's greedy captions with the starting model's, on the clips the pairs
    come from (`pair_clips`) and on the held-out clips (`held_out`). `swap` trains on chosen and rejected swapped.
    """
    model = copy.deepcopy(model)  # the starting model stays as it is for the other tests
    judge = ClueOverlapJudge()
    pairs, stats = build_preference_pairs(model, tokenizer, ds, judge, num_beams=4)
    trainer = aligncap_dpo_trainer(
        model, tokenizer, pairs.rename_columns(SWAP) if swap else pairs, _dpo_args(output_dir)
    )
    rows = sorted(set(pairs["row"]))
    sets = {"pair_clips": ds.select(rows), "held_out": held_out}
    start = {name: greedy_captions(model, tokenizer, split["prompt"]) for name, split in sets.items()}
    trainer.train()
    with trainer.model.disable_adapter():  # the reference is still the starting model
        assert greedy_captions(trainer.model, tokenizer, sets["pair_clips"]["prompt"]) == start["pair_clips"]
    results = {"pairs": len(pairs), "trainer": trainer}
    for name, split in sets.items():
        policy = greedy_captions(trainer.model, tokenizer, split["prompt"])  # the policy: trainer.model, a PeftModel
        results[name] = judge_preference(policy, start[name], judge, references=split["references"])
    return results


@pytest.mark.slow
def test_dpo_raises_the_judge_preference_for_the_policy_captions(starting_model, tmp_path):
    """
    Not the evidence that DPO learns the judge's preference (see
    `test_recipe_dpo_learns_the_judged_preference_on_held_out_clips_and_the_controls_do_not`): SFT on the chosen
    captions alone, reversed or swapped pairs passed this check's held-out assertion as well.

    After DPO on judged pairs, the judge prefers the policy's greedy captions to the starting model's on the clips
    the pairs come from, and a little on 16 held-out clips. With a starting model whose captions begin with a
    word-initial token the gain was not reliable over four seeds (README); this fixture's held on every seed.
    """
    result = dpo_check(*starting_model, tmp_path)
    trainer = result["trainer"]
    assert isinstance(trainer.model, PeftModel) and trainer.ref_model is None  # reference = adapter disabled
    assert trainer.model.peft_config["default"].r == 8
    pair_clips, held_out = result["pair_clips"], result["held_out"]
    # Fixture seeds 0..3 (the README's AlignCap section has the table): on the pair clips wins - losses 6, 8, 5, 3
    # and F1 +0.080, +0.050, +0.063, +0.019; on the held-out clips wins - losses 4, 3, 2, 4 (most clips tie) and F1
    # +0.065, +0.038, +0.025, +0.063. The margins are at or under the smallest of these.
    assert pair_clips["wins"] >= pair_clips["losses"] + 3, result
    assert pair_clips["policy_score"] >= pair_clips["start_score"] + 0.015, result
    assert held_out["wins"] + held_out["losses"] + held_out["ties"] == N_HELD_OUT
    assert held_out["wins"] >= held_out["losses"] + 1, result


def test_pairs_train_on_the_token_ids_generation_produced_with_a_sentencepiece_tokenizer(tmp_path):
    """
    With a Llama-style (Metaspace) tokenizer, the caption a model generates after the prompt starts with "▁A"; TRL
    would tokenize `prompt + "A woman ..."` and train on "A", a token the model never produced. The pairs keep the
    generated ids and the trainer trains on them. The control is TRL's own text join, which differs on every pair.
    """
    model, tokenizer, ds, _ = _starting_model(
        tmp_path / "sft", tokenizer_kind="metaspace", sft_steps=40, leading_space=True
    )
    ds = ds.select(range(8))
    pairs, _ = build_preference_pairs(model, tokenizer, ds, ClueOverlapJudge(), num_beams=4)
    assert len(pairs) >= 4
    text_joined_differs = 0
    for row in pairs:
        prompt_ids = tokenizer(row["prompt"])["input_ids"]
        with torch.no_grad():
            beams = model.generate(
                torch.tensor([prompt_ids]), num_beams=4, num_return_sequences=4, do_sample=False, max_new_tokens=48,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            )  # fmt: skip
        generated = [completion_ids(b[len(prompt_ids) :].tolist(), tokenizer.eos_token_id) for b in beams]
        assert row["prompt_ids"] == prompt_ids
        assert row["chosen_ids"][:-1] in generated and row["rejected_ids"][:-1] in generated
        assert tokenizer.convert_ids_to_tokens(row["chosen_ids"][0]).startswith("▁")  # "▁A", a word start
        text_joined = tokenizer(row["prompt"] + row["chosen"])["input_ids"]  # what TRL's DPOTrainer would train on
        text_joined_differs += text_joined != prompt_ids + row["chosen_ids"][:-1]
    assert text_joined_differs == len(pairs)
    trainer = aligncap_dpo_trainer(model, tokenizer, pairs, _dpo_args(tmp_path / "dpo", max_steps=1))
    for column in TOKEN_ID_COLUMNS:
        assert trainer.train_dataset[column] == pairs[column]
    trainer.train()
    assert math.isfinite(trainer.state.log_history[-1]["train_loss"])
    with pytest.raises(ValueError, match="row 0, column 'chosen_ids': the completion does not end with EOS"):
        validate_token_ids(pairs.select([0]).map(lambda r: {"chosen_ids": r["chosen_ids"][:-1]}), tokenizer)
    with pytest.raises(ValueError, match=r"row 0, column 'prompt_ids': expected token ids in \[0, "):
        validate_token_ids(pairs.select([0]).map(lambda r: {"prompt_ids": [len(tokenizer)]}), tokenizer)


def test_a_deep_copy_trains_its_own_weights():
    """
    TRL's trainers patch `model.forward` with a closure over the patched model's bound `forward`; a deep copy kept
    running the original's weights, so DPO on a copy left its captions unchanged. `aligncap_dpo_trainer` drops it.
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


def held_out_log_ratios(model, pairs) -> tuple[np.ndarray, np.ndarray]:
    """
    `log pi(y | x) - log ref(y | x)` of each pair's chosen and rejected completion (sequence log-probabilities of the
    pairs' token ids), with `pi` the model with its adapter and `ref` the adapter disabled.
    """

    def log_probs(column):
        scores = []
        with torch.no_grad():
            for row in pairs:
                completion = row[column]
                logits = model(input_ids=torch.tensor([row["prompt_ids"] + completion])).logits[0]
                token_log_probs = torch.log_softmax(logits.double(), -1)
                start = len(row["prompt_ids"]) - 1
                scores.append(sum(token_log_probs[start + t, token].item() for t, token in enumerate(completion)))
        return np.array(scores)

    model.eval()
    policy = log_probs("chosen_ids"), log_probs("rejected_ids")
    with model.disable_adapter():
        reference = log_probs("chosen_ids"), log_probs("rejected_ids")
    return policy[0] - reference[0], policy[1] - reference[1]


def recipe_dpo_check(model, tokenizer, ds, held_out, output_dir, variant: str = "dpo") -> dict:
    """
    From a copy of the starting model, train 40 steps on clue-judged pairs of its beams on the 32 training clips with
    the recipe's loss (standard DPO, `loss_type=["sigmoid"]`, beta 0.1; lr 1e-3, which moves this tiny LoRA in 40
    steps), and score it on judged pairs of the starting model's beams on the 16 held-out clips (never trained on):
    the mean implicit reward margin `(log pi/ref)(chosen) - (log pi/ref)(rejected)` and the mean log-ratio of the
    rejected captions. `variant`: `"dpo"`, `"sft_only"` (TRL's `sft` loss on the chosen captions alone, the rejected
    ones unused) or `"swapped"` (DPO on chosen and rejected swapped).
    """
    judge = ClueOverlapJudge()
    pairs, _ = build_preference_pairs(model, tokenizer, ds, judge, num_beams=4)
    held_out_pairs, _ = build_preference_pairs(model, tokenizer, held_out, judge, num_beams=4)
    model = copy.deepcopy(model)  # the starting model stays as it is for the other tests
    args = AlignCapDPOConfig(
        output_dir=str(output_dir / variant),
        max_steps=40,
        per_device_train_batch_size=16,
        learning_rate=1e-3,
        gradient_checkpointing=False,
        **CPU,
        **({"loss_type": ["sft"]} if variant == "sft_only" else {}),
    )
    trainer = aligncap_dpo_trainer(
        model, tokenizer, pairs.rename_columns(SWAP) if variant == "swapped" else pairs, args
    )
    trainer.train()
    chosen, rejected = held_out_log_ratios(trainer.model, held_out_pairs)
    return {
        "trainer": trainer,
        "held_out_pairs": len(held_out_pairs),
        "margin": float((chosen - rejected).mean()),
        "rejected_log_ratio": float(rejected.mean()),
    }


def test_recipe_dpo_learns_the_judged_preference_on_held_out_clips_and_the_controls_do_not(starting_model, tmp_path):
    """
    The recipe's loss on judged pairs learns the judge's preference and carries it to held-out clips: relative to the
    reference, the policy prefers the judge's choice among the starting model's beams of clips it never trained on
    (a positive implicit reward margin) and pushes the rejected caption down. The controls: SFT on the chosen captions
    alone (rejected ones unused) raises chosen and rejected alike, and DPO on swapped pairs learns the reverse.

    Measured with `recipe_dpo_check` (fixture seeds 0..3; 18, 45, 24, 38 held-out pairs), held-out margin / mean
    rejected log-ratio:

    | seed | dpo | sft_only | swapped |
    |---|---|---|---|
    | 0 | 1.54 / -73.1 | 0.145 / +0.77 | -0.67 / -6.5 |
    | 1 | 0.40 / -10.0 | 0.008 / +0.78 | -0.54 / -5.7 |
    | 2 | 5.20 / -38.3 | 0.330 / +1.03 | -1.51 / -3.9 |
    | 3 | 0.32 / -15.8 | 0.167 / +0.82 | -0.30 / -21.2 |

    Mean +- sd: DPO margin 1.87 +- 2.29 and rejected log-ratio -34.3 +- 28.6; SFT only 0.16 +- 0.13 and +0.85 +- 0.12;
    swapped -0.75 +- 0.53 and -9.3 +- 8.0.

    The margin alone does not separate DPO from SFT (SFT 0.33 on seed 2 against DPO 0.32 on seed 3): SFT on better
    captions raises them a little more than their rejected neighbours. What SFT cannot do is push the rejected
    captions below the reference; what swapped DPO cannot do is rank chosen above rejected.

    At this learning rate pure DPO lowers the chosen captions' likelihood too (seed 0: -72 nats against the
    reference) and the greedy captions' clue F1 falls (0.46 -> 0.39), the known drift of DPO without an anchor; the
    check is about the preference it learns, not about caption quality
    (`test_dpo_raises_the_judge_preference_for_the_policy_captions`, slow, uses DPO plus an NLL term for that).
    """
    recipe = yaml.safe_load((Path(__file__).parents[2] / "recipes" / "aligncap_dpo" / "config_dpo.yaml").read_text())
    results = {v: recipe_dpo_check(*starting_model, tmp_path, v) for v in ("dpo", "sft_only", "swapped")}
    trainer = results["dpo"]["trainer"]
    assert (trainer.args.loss_type, trainer.args.beta) == (recipe["loss_type"], recipe["beta"]) == (["sigmoid"], 0.1)
    assert isinstance(trainer.model, PeftModel) and trainer.ref_model is None  # reference = adapter disabled
    summary = {k: {m: r[m] for m in ("held_out_pairs", "margin", "rejected_log_ratio")} for k, r in results.items()}

    def passes(result):
        return result["margin"] >= 0.1 and result["rejected_log_ratio"] <= -1.0

    # Over the four seeds DPO's smallest margin was 0.32 and its largest rejected log-ratio -10.0; SFT's rejected
    # log-ratio was never under +0.77 and swapped DPO's margin never over -0.30. Both thresholds sit a factor of three
    # or more inside the DPO values and on the far side of every control value.
    assert passes(results["dpo"]), summary
    assert not passes(results["sft_only"]) and not passes(results["swapped"]), summary
