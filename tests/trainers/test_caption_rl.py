import copy
import json
import math

import numpy as np
import pytest
import torch

from hfpref.data.synthetic.audio_world import make_world
from hfpref.models.captioning import build_tiny_whisper_captioner, ids_to_text
from hfpref.trainers.base_trainer import mean_over_processes
from hfpref.trainers.caption_rl.caption_rl_config import CaptionRLConfig
from hfpref.trainers.caption_rl.caption_rl_trainer import CaptionRLTrainer, distinct_n, warmup_step_decay


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Every test here decodes token by token with tiny models."""


@pytest.fixture(scope="module")
def world():
    return make_world(32, seed=0)


@pytest.fixture
def captioner(world):
    return build_tiny_whisper_captioner([r for refs in world["references"] for r in refs], seed=0)


def brevity(completions, **kwargs):
    """Prefers short captions: a property a random captioner learns in a few dozen steps (emit eos early)."""
    return [1.0 - min(len(c), 40) / 40 for c in completions]


def _args(tmp_path, **kw):
    defaults = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        learning_rate=5e-3,
        max_steps=40,
        max_new_tokens=12,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        ppo_epochs=2,
    )
    return CaptionRLConfig(**{**defaults, **kw})


@pytest.mark.parametrize("loss_type, num_samples", [("scst", 1), ("rloo", 4), ("ppo", 2)])
def test_each_loss_type_raises_the_mean_reward(tmp_path, world, captioner, loss_type, num_samples):
    model, processor = captioner
    args = _args(tmp_path, loss_type=loss_type, num_samples=num_samples)
    trainer = CaptionRLTrainer(model, brevity, args, train_dataset=world, processing_class=processor)
    trainer.train()
    rewards = [e["reward"] for e in trainer.state.log_history if "reward" in e]
    assert len(rewards) == 40
    # The sampled reward starts near 0.2 (random captions run to max length). Seeded runs reach 0.38 (SCST),
    # 0.68 (RLOO) and 0.98 (PPO) over the last five steps; +0.1 is well outside step-to-step noise (std ~0.03).
    assert np.mean(rewards[-5:]) > np.mean(rewards[:5]) + 0.1


def test_logs_what_makes_reward_hacking_visible(tmp_path, world, captioner):
    model, processor = captioner
    trainer = CaptionRLTrainer(
        model, brevity, _args(tmp_path, max_steps=2), train_dataset=world, processing_class=processor
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer.train()
    logged = [e for e in trainer.state.log_history if "loss" in e]
    assert len(logged) == 2
    for key in ["reward", "reward_greedy", "sample_beats_greedy", "completion_length", "distinct_1", "distinct_2"]:
        assert all(np.isfinite(e[key]) for e in logged), key
    assert "rewards/brevity" in logged[0]
    changed = [n for n, p in trainer.model.named_parameters() if n in before and not torch.equal(p, before[n])]
    assert len(changed) == len(before)


def test_evaluate_reports_greedy_reward(tmp_path, world, captioner):
    model, processor = captioner
    trainer = CaptionRLTrainer(
        model, brevity, _args(tmp_path), eval_dataset=world.select(range(8)), processing_class=processor
    )
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_reward"] <= 1.0 and "eval_rewards/brevity" in metrics


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda completions, **kw: [float("nan")] * len(completions), "reward 'nan_reward' returned NaN or inf"),
        (lambda completions, **kw: [1.0], r"reward 'short_reward' returned 1 values for 8 completions"),
    ],
)
def test_misbehaving_rewards_stop_training_naming_the_reward(tmp_path, world, captioner, bad, message):
    model, processor = captioner
    bad.__name__ = "nan_reward" if "NaN" in message else "short_reward"
    trainer = CaptionRLTrainer(
        model, bad, _args(tmp_path, max_steps=1), train_dataset=world, processing_class=processor
    )
    with pytest.raises(ValueError, match=message):
        trainer.train()


def test_empty_caption_is_scored(tmp_path, world, captioner):
    model, processor = captioner
    eos = processor.tokenizer.eos_token_id
    assert ids_to_text(processor.tokenizer, torch.tensor([[eos, 1, 1]])) == [""]
    trainer = CaptionRLTrainer(model, brevity, _args(tmp_path), train_dataset=world, processing_class=processor)
    totals, components = trainer.score(["", "a bell rings"], {})
    assert totals.tolist() == pytest.approx([1.0, 1.0 - 12 / 40])


def test_lora_and_kl_to_the_adapter_disabled_base(tmp_path, world, captioner):
    from peft import LoraConfig

    model, processor = captioner
    trainer = CaptionRLTrainer(
        model,
        brevity,
        _args(tmp_path, max_steps=2, kl_coef=0.1, learning_rate=1e-2),
        train_dataset=world,
        processing_class=processor,
        peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"]),
    )
    assert trainer.ref_model is None  # the reference is the base with the adapter disabled
    lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    frozen_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if not p.requires_grad}
    trainer.train()
    params = dict(trainer.model.named_parameters())
    assert all(n.count("lora_") for n in lora_before)
    assert any(not torch.equal(params[n], p) for n, p in lora_before.items() if "lora_B" in n)
    assert all(torch.equal(params[n], p) for n, p in frozen_before.items())
    assert all(np.isfinite(e["kl"]) for e in trainer.state.log_history if "kl" in e)


def test_kl_with_a_frozen_copy(tmp_path, world, captioner):
    model, processor = captioner
    trainer = CaptionRLTrainer(
        model,
        brevity,
        _args(tmp_path, max_steps=2, kl_coef=0.1, loss_type="ppo", num_samples=2),
        train_dataset=world,
        processing_class=processor,
    )
    assert trainer.ref_model is not None and not any(p.requires_grad for p in trainer.ref_model.parameters())
    trainer.train()
    logged = [e for e in trainer.state.log_history if "loss" in e]
    assert len(logged) == 2 and all("clip_fraction" in e for e in logged)
    # PPO logs the sampling policy's KL to the reference: 0 while the policy is still the frozen copy, then > 0.
    assert logged[0]["kl"] == pytest.approx(0.0, abs=1e-6) and logged[1]["kl"] > 1e-6


def test_logged_statistics_are_sample_weighted_means_over_processes():
    """Two processes' reward and KL, over 8 and 4 samples: every process logs the mean over all 12."""
    ranks = [{"reward": (0.5 * 8, 8), "kl": (0.2 * 8, 8)}, {"reward": (1.0 * 4, 4), "kl": (0.8 * 4, 4)}]
    tensors = [torch.tensor([totals[name] for name in sorted(totals)], dtype=torch.float64) for totals in ranks]
    for rank, totals in enumerate(ranks):
        logged = mean_over_processes(totals, lambda local, rank=rank: local + tensors[1 - rank])
        assert logged == pytest.approx({"reward": (4.0 + 4.0) / 12, "kl": (1.6 + 3.2) / 12})
    # Unweighted, rank 0 alone would log 0.5 and 0.2; the mean of the two ranks' means 0.75 and 0.5.


def test_training_logs_reduce_every_statistic_over_processes(tmp_path, world, captioner):
    """
    One SCST step with a greedy baseline and a KL term, with an all-reduce stubbed to add another process that saw 3
    samples of value 1.0 for every statistic: each logged statistic is the weighted mean of both, with this process's
    weights its sample counts (4 clips, 2 samples each).
    """
    model, processor = captioner
    args = _args(tmp_path, max_steps=1, per_device_train_batch_size=4, num_samples=2, kl_coef=0.1)
    trainer = CaptionRLTrainer(model, brevity, args, train_dataset=world, processing_class=processor)
    reduced = {}

    def sum_with_another_process(local):
        reduced["local"] = local.clone()
        return local + torch.tensor([[3.0, 3.0]], dtype=torch.float64)

    trainer._sum_over_processes = sum_with_another_process
    trainer.train()
    logged = next(e for e in trainer.state.log_history if "loss" in e)
    names = sorted(["reward", "reward_std", "reward_greedy", "sample_beats_greedy", "rewards/brevity", "kl",
                    "completion_length", "distinct_1", "distinct_2", "empty_completions"])  # fmt: skip
    local = dict(zip(names, reduced["local"].tolist(), strict=True))
    assert local["reward"][1] == 8 and local["reward_greedy"][1] == 4 and local["kl"][1] == 8
    for name, (total, weight) in local.items():
        assert logged[name] == pytest.approx((total + 3.0) / (weight + 3.0)), name
    assert logged["reward"] != pytest.approx(local["reward"][0] / 8)  # not this process's own mean


def test_sampling_seed_follows_the_data_not_its_split(tmp_path, world, captioner, monkeypatch):
    """
    A micro-batch's sampling seed is that of the part of the global batch it holds (process p's micro-step m holds
    part m * processes + p, as accelerate deals batches): 2 processes accumulating 2 micro-steps sample each part as 1
    process accumulating 4 does, so the runs draw the same captions for the same clips.
    """
    model, processor = captioner
    trainer = CaptionRLTrainer(
        model, brevity, _args(tmp_path, max_steps=1), train_dataset=world, processing_class=processor
    )
    accelerator = type(trainer.accelerator)

    def seeds(processes: int, accumulation: int) -> dict[tuple[int, int], int]:
        monkeypatch.setattr(trainer.args, "gradient_accumulation_steps", accumulation)
        monkeypatch.setattr(accelerator, "num_processes", property(lambda self: processes))
        by_part = {}
        for process in range(processes):
            monkeypatch.setattr(accelerator, "process_index", property(lambda self, p=process: p))
            view = copy.copy(trainer)  # the trainer as it is in that process
            for step in range(2):
                view.state.global_step = step
                for micro_step in range(accumulation):
                    by_part[step, micro_step * processes + process] = view._rollout_seed()
        return by_part

    split = seeds(processes=2, accumulation=2)
    assert split == seeds(processes=1, accumulation=4) and len(set(split.values())) == 8


def test_resume_from_checkpoint(tmp_path, world, captioner):
    model, processor = captioner
    kw = dict(max_steps=4, save_strategy="steps", save_steps=2, learning_rate=5e-3)
    full = CaptionRLTrainer(
        model, brevity, _args(tmp_path / "full", **kw), train_dataset=world, processing_class=processor
    )
    full.train()
    reference = {n: p.detach().clone() for n, p in full.model.named_parameters()}

    fresh, _ = build_tiny_whisper_captioner([r for refs in world["references"] for r in refs], seed=7)
    resumed = CaptionRLTrainer(
        fresh, brevity, _args(tmp_path / "full", **kw), train_dataset=world, processing_class=processor
    )
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    assert resumed.state.global_step == 4
    for name, param in resumed.model.named_parameters():
        torch.testing.assert_close(param, reference[name], rtol=1e-4, atol=1e-5)


def test_adaptive_kl_follows_ziegler_update_and_resumes(tmp_path, world, captioner):
    """
    With `kl_target`, the coefficient after each step is the previous one times `1 + clip(kl / target - 1, -0.2,
    0.2) * n / horizon`, with the step's logged KL and its 8 x 2 sampled captions: recomputed here from the log. A
    checkpoint keeps it, and a resumed run goes on from it.
    """
    from hfpref.trainers.caption_rl.caption_rl_trainer import KL_CONTROLLER_FILE

    model, processor = captioner
    kw = dict(
        max_steps=4, loss_type="rloo", num_samples=2, kl_coef=0.05, kl_target=0.002, kl_horizon=40,
        learning_rate=5e-2, logging_steps=1, save_strategy="steps", save_steps=2,
    )  # fmt: skip
    trainer = CaptionRLTrainer(
        model, brevity, _args(tmp_path / "run", **kw), train_dataset=world, processing_class=processor
    )
    trainer.train()
    logs = [e for e in trainer.state.log_history if "kl" in e]
    coef = 0.05
    for entry in logs:
        coef *= 1 + min(max(entry["kl"] / 0.002 - 1, -0.2), 0.2) * 16 / 40
        assert entry["kl_coef"] == pytest.approx(coef, rel=1e-5)
    assert trainer.kl_coef == pytest.approx(coef, rel=1e-5) and coef != pytest.approx(0.05)
    saved = json.loads((tmp_path / "run" / "checkpoint-2" / KL_CONTROLLER_FILE).read_text())
    assert saved == {"kl_coef": pytest.approx(logs[1]["kl_coef"], rel=1e-5), "global_step": 2}

    fresh, _ = build_tiny_whisper_captioner([r for refs in world["references"] for r in refs], seed=7)
    resumed = CaptionRLTrainer(
        fresh, brevity, _args(tmp_path / "run", **kw), train_dataset=world, processing_class=processor
    )
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))
    assert resumed.kl_coef == pytest.approx(coef, rel=1e-4)

    # Without a target the coefficient is fixed and the controller leaves no trace.
    fixed = CaptionRLTrainer(
        copy.deepcopy(fresh), brevity, _args(tmp_path / "fixed", **{**kw, "kl_target": None}),
        train_dataset=world, processing_class=processor,
    )  # fmt: skip
    fixed.train()
    assert fixed.kl_coef == 0.05 and not any("kl_coef" in e for e in fixed.state.log_history)
    assert not (tmp_path / "fixed" / "checkpoint-2" / KL_CONTROLLER_FILE).exists()
    with pytest.raises(ValueError, match="set kl_coef > 0"):
        _args(tmp_path, kl_target=1.0, kl_coef=0.0)


def test_paper_schedule_preset_and_lr_factor(tmp_path):
    config = CaptionRLConfig.from_preset("paper_scst", output_dir=str(tmp_path))
    assert (config.num_train_epochs, config.per_device_train_batch_size) == (100, 128)
    assert (config.warmup_epochs, config.step_decay_every_epochs, config.step_decay_gamma) == (2.0, 10, 0.1)
    factor = warmup_step_decay(steps_per_epoch=10, warmup_epochs=2, every_epochs=10, gamma=0.1)
    assert factor(0) == pytest.approx(1 / 20) and factor(19) == pytest.approx(1.0)
    assert (
        factor(99) == pytest.approx(1.0) and factor(100) == pytest.approx(0.1) and factor(250) == pytest.approx(0.01)
    )
    with pytest.raises(ValueError, match="num_samples >= 2"):
        CaptionRLConfig(output_dir=str(tmp_path), loss_type="rloo", num_samples=1)
    with pytest.raises(ValueError, match=r"loss_type='a2c' is not one of"):
        CaptionRLConfig(output_dir=str(tmp_path), loss_type="a2c")


def test_distinct_n():
    assert distinct_n(["a a a"], 1) == pytest.approx(1 / 3)
    assert distinct_n([""], 2) == 0.0
    assert math.isclose(distinct_n(["a b", "a c"], 2), 1.0)


# ---------------------------------------------------------------------------------------------------------------------
# The losses by hand, on a two-token toy.
# ---------------------------------------------------------------------------------------------------------------------


def test_scst_loss_and_gradient_by_hand():
    from hfpref.trainers.caption_rl.caption_rl_trainer import reinforce_loss, sequence_advantages

    # Two clips, one sample each: log-probs of a two-token caption; the second ends after its first token (eos).
    log_probs = torch.tensor([[math.log(0.5), math.log(0.25)], [math.log(0.8), 0.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    advantages = sequence_advantages(torch.tensor([1.0, 0.2]), 1, "greedy", torch.tensor([0.5, 0.5]))
    assert advantages.tolist() == pytest.approx([0.5, -0.3])
    loss = reinforce_loss(log_probs, mask, advantages)
    # -(0.5 * (log .5 + log .25) + (-0.3) * log .8) / 2
    assert loss.item() == pytest.approx(-(0.5 * math.log(0.125) - 0.3 * math.log(0.8)) / 2)
    loss.backward()
    torch.testing.assert_close(log_probs.grad, torch.tensor([[-0.25, -0.25], [0.15, 0.0]]))


def test_rloo_and_no_baseline_advantages_by_hand():
    from hfpref.trainers.caption_rl.caption_rl_trainer import sequence_advantages

    rewards = torch.tensor([1.0, 0.0, 0.2, 0.6])  # two clips, two samples each
    assert sequence_advantages(rewards, 2, "loo").tolist() == pytest.approx([1.0, -1.0, -0.4, 0.4])
    assert sequence_advantages(rewards, 2, "none").tolist() == pytest.approx([1.0, 0.0, 0.2, 0.6])
    three = torch.tensor([3.0, 0.0, 0.0])  # k = 3: each sample against the mean of the other two
    assert sequence_advantages(three, 3, "loo").tolist() == pytest.approx([3.0, -1.5, -1.5])
    with pytest.raises(ValueError, match="greedy captions' rewards"):
        sequence_advantages(rewards, 2, "greedy")
    # GRPO's group advantage: (r - mean) / (std + 1e-4), the unbiased std of the clip's samples. Clip 1: mean 0.5,
    # std sqrt(0.5) = 0.7071; clip 2: mean 0.4, std sqrt(0.08) = 0.2828.
    by_hand = [
        0.5 / (0.7071068 + 1e-4),
        -0.5 / (0.7071068 + 1e-4),
        -0.2 / (0.2828427 + 1e-4),
        0.2 / (0.2828427 + 1e-4),
    ]
    assert sequence_advantages(rewards, 2, "group").tolist() == pytest.approx(by_hand, rel=1e-5)
    # Scale-free: rewards times 10 plus an offset give the same advantages (up to the 1e-4 guard).
    assert sequence_advantages(10 * rewards + 3, 2, "group").tolist() == pytest.approx(by_hand, rel=1e-3)
    with pytest.raises(ValueError, match="at least 2 samples"):
        sequence_advantages(rewards, 1, "group")


def test_ppo_clip_loss_and_k3_kl_by_hand():
    from hfpref.trainers.caption_rl.caption_rl_trainer import k3_kl, ppo_clip_loss

    old = torch.log(torch.tensor([[0.5, 0.5]]))
    new = torch.log(torch.tensor([[0.7, 0.4]])).requires_grad_()  # ratios 1.4 and 0.8
    mask = torch.ones(1, 2)
    loss, clip_fraction = ppo_clip_loss(new, old, mask, torch.tensor([1.0]), cliprange=0.2)
    # A = 1: min(1.4, 1.2) = 1.2 and min(0.8, 0.8) = 0.8 -> -(1.2 + 0.8) / 2
    assert loss.item() == pytest.approx(-1.0) and clip_fraction.item() == pytest.approx(0.5)
    loss.backward()
    # The clipped token gets no gradient; the other gets -ratio * A / tokens = -0.8 / 2.
    torch.testing.assert_close(new.grad, torch.tensor([[0.0, -0.4]]))
    loss, _ = ppo_clip_loss(new.detach(), old, mask, torch.tensor([-1.0]), cliprange=0.2)
    # A = -1: min(-1.4, -1.2) = -1.4 and min(-0.8, -0.8) = -0.8 -> (1.4 + 0.8) / 2
    assert loss.item() == pytest.approx(1.1)
    penalty = torch.tensor([[0.1, 0.3]])
    loss, _ = ppo_clip_loss(new.detach(), old, torch.tensor([[1.0, 0.0]]), torch.tensor([1.0]), 0.2, penalty)
    assert loss.item() == pytest.approx(-1.2 + 0.1)  # the masked token counts for nothing

    kl = k3_kl(torch.log(torch.tensor([0.5, 0.3])), torch.log(torch.tensor([0.25, 0.3])))
    assert kl.tolist() == pytest.approx([0.5 - math.log(0.5) - 1, 0.0])


def test_processed_log_probs_by_hand():
    """Logits / T restricted to the sampler's support, as the sample was drawn; masked positions are 0 (not NaN)."""
    from hfpref.models.captioning import Rollout, processed_log_probs

    logits = torch.tensor([[[2.0, 1.0, 0.0], [0.0, 0.0, 5.0]]])
    rollout = Rollout(
        sequences=torch.tensor([[9, 1, 2]]),  # decoder start 9, then token 1, then eos 2
        prompt_length=1,
        support=torch.tensor([[[True, True, False], [True, True, True]]]),
        temperature=0.5,
    )
    log_probs, mask = processed_log_probs(logits, rollout, eos_ids=2)
    first = 2.0 - math.log(math.exp(4.0) + math.exp(2.0))  # token 1: logit 2 (= 1 / 0.5) over {4, 2}; 0 is masked
    second = 10.0 - math.log(2 + math.exp(10.0))
    torch.testing.assert_close(log_probs, torch.tensor([[first, second]]))
    assert mask.tolist() == [[1.0, 1.0]]
    after_eos = Rollout(torch.tensor([[9, 2, 0]]), 1, support=rollout.support, temperature=0.5)
    log_probs, mask = processed_log_probs(logits, after_eos, eos_ids=2)
    assert mask.tolist() == [[1.0, 0.0]] and log_probs[0, 1].item() == 0.0  # token 0 is outside the support


# ---------------------------------------------------------------------------------------------------------------------
# What the baseline and the normalisation do to the gradient.
# ---------------------------------------------------------------------------------------------------------------------


def _one_step_gradient(model, processor, world, tmp_path, accumulation_steps=1, **kw):
    """The gradient of one training step on the first 8 clips (its rollout seed fixed by the step and index)."""
    trainer = CaptionRLTrainer(
        model, centred_brevity, _args(tmp_path, **kw), train_dataset=world, processing_class=processor
    )
    batch = trainer.data_collator([world[i] for i in range(8)])
    trainer.model.zero_grad()
    trainer.current_gradient_accumulation_steps = accumulation_steps
    trainer.training_step(trainer.model, batch)
    return torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])


def test_greedy_baseline_changes_the_gradient(tmp_path, world, captioner):
    model, processor = captioner
    with_baseline = _one_step_gradient(model, processor, world, tmp_path)
    without = _one_step_gradient(model, processor, world, tmp_path, scst_baseline="none")
    again = _one_step_gradient(model, processor, world, tmp_path)
    torch.testing.assert_close(again, with_baseline)  # same samples (the rollout seed), same gradient
    # Without the baseline a sample is pushed up or down by its raw reward, with it by how much it beats the greedy
    # caption. The relative difference is far above float noise (exactly 0 between the two identical runs).
    assert (without - with_baseline).norm() / with_baseline.norm() > 0.3


def test_gradient_accumulation_divides_the_loss(tmp_path, world, captioner):
    """As transformers' Trainer: with k micro-batches per update, each micro-batch's loss counts 1/k."""
    model, processor = captioner
    one = _one_step_gradient(model, processor, world, tmp_path)
    two = _one_step_gradient(model, processor, world, tmp_path, accumulation_steps=2, gradient_accumulation_steps=2)
    torch.testing.assert_close(two, one / 2)


def centred_brevity(completions, **kwargs):
    """Brevity shifted to [-0.5, 0.5]: long captions are punished, not merely rewarded less."""
    return [0.5 - min(len(c), 40) / 40 for c in completions]


def offset_brevity(completions, **kwargs):
    """Centred brevity plus a constant 5: every caption is rewarded, the signal is in the small differences."""
    return [5.0 + r for r in centred_brevity(completions)]


@pytest.mark.parametrize("baseline", ["greedy", "none"], ids=["scst", "no-baseline-control"])
def test_scst_learns_through_a_reward_offset_that_plain_reinforce_cannot(tmp_path, world, captioner, baseline):
    """
    Every caption gets 5 plus its centred brevity. SCST (4 samples per clip against the greedy caption) removes the
    offset and learns from the differences; the control is the same run with the baseline removed (plain REINFORCE on
    the raw reward, `scst_baseline="none"`, what a baseline forced to 0 does), whose gradient is dominated by
    `5 * grad log p` of whatever was sampled, and which must fail the same bar.

    Measured over 6 runs (captioner seed = training seed = 0..5; 30 steps): gain of the mean sampled reward, last 5
    vs first 5 steps, 0.231..0.297 (mean 0.267, sd 0.028) for SCST and -0.017..0.046 (mean 0.012, sd 0.026) without
    the baseline. The bar 0.14 sits midway, more than 4 sd from either mean. (With 2 samples per clip the two
    overlapped: SCST 0.012..0.232, no baseline -0.023..0.114.)
    """
    model, processor = captioner
    args = _args(tmp_path, max_steps=30, num_samples=4, scst_baseline=baseline, seed=0)
    trainer = CaptionRLTrainer(model, offset_brevity, args, train_dataset=world, processing_class=processor)
    trainer.train()
    rewards = [e["reward"] for e in trainer.state.log_history if "reward" in e]
    assert len(rewards) == 30 and np.mean(rewards[:5]) > 4.5  # the offset dominates every reward
    gain = np.mean(rewards[-5:]) - np.mean(rewards[:5])
    if baseline == "none":
        assert gain < 0.14, gain
    else:
        assert gain > 0.14, gain


# ---------------------------------------------------------------------------------------------------------------------
# The KL estimators, by hand: their values, and which divergence each one's gradient follows.
# ---------------------------------------------------------------------------------------------------------------------


def test_kl_estimators_values_and_gradients_by_hand():
    from hfpref.trainers.caption_rl.caption_rl_trainer import kl_penalty

    pi, ref = [0.5, 0.1, 0.3], [0.25, 0.4, 0.3]
    log_pi = torch.log(torch.tensor(pi)).requires_grad_()
    log_ref = torch.log(torch.tensor(ref))
    d = [math.log(p / r) for p, r in zip(pi, ref)]  # log pi - log ref
    expected = {
        "k1": (d, [1.0, 1.0, 1.0]),  # value d, d/d(log pi) = 1
        "k2": ([x * x / 2 for x in d], d),  # d^2 / 2, gradient d
        "k3": ([math.exp(-x) + x - 1 for x in d], [1 - math.exp(-x) for x in d]),  # exp(-d) + d - 1, 1 - ref / pi
    }
    for estimator, (values, grads) in expected.items():
        log_pi.grad = None
        out = kl_penalty(log_pi, log_ref, estimator)
        out.sum().backward()
        assert out.tolist() == pytest.approx(values), estimator
        assert log_pi.grad.tolist() == pytest.approx(grads), estimator
    with pytest.raises(ValueError, match="not one of"):
        kl_penalty(log_pi, log_ref, "k4")


def test_which_divergence_each_kl_loss_optimises():
    """
    Over a 4-token categorical pi = softmax(theta), the expected gradient of each estimator used as a loss on pi's own
    samples, sum_x pi(x) grad k(x) (pi(x) held fixed: the sampling weight), against the exact divergences: k2's is
    grad KL(pi || ref), k3's is grad KL(ref || pi) (not the KL it estimates); k1's is zero (it belongs in the reward).
    """
    from hfpref.trainers.caption_rl.caption_rl_trainer import kl_penalty

    theta = torch.tensor([0.3, -1.0, 0.8, 0.1], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([0.05, 0.15, 0.2, 0.6], dtype=torch.float64)

    def grad(f):
        (g,) = torch.autograd.grad(f(), theta)
        return g

    def expected_grad(estimator):
        log_pi = torch.log_softmax(theta, -1)
        return (log_pi.exp().detach() * kl_penalty(log_pi, ref.log(), estimator)).sum()

    def kl(p, q):
        return (p * (p / q).log()).sum()

    forward = grad(lambda: kl(torch.softmax(theta, -1), ref))  # KL(pi || ref)
    reverse = grad(lambda: kl(ref, torch.softmax(theta, -1)))  # KL(ref || pi)
    assert (forward - reverse).norm() > 0.05  # the two directions differ here (assert_close's tolerance: 1e-7)
    torch.testing.assert_close(grad(lambda: expected_grad("k2")), forward)
    torch.testing.assert_close(grad(lambda: expected_grad("k3")), reverse)
    torch.testing.assert_close(grad(lambda: expected_grad("k1")), torch.zeros(4, dtype=torch.float64))
    # All three estimate KL(pi || ref) in value.
    pi = torch.softmax(theta, -1).detach()
    for estimator in ("k1", "k3"):
        value = (pi * kl_penalty(pi.log(), ref.log(), estimator)).sum()
        torch.testing.assert_close(value, kl(pi, ref))


def zero_reward(completions, **kwargs):
    return [0.0] * len(completions)


def _perturbed_copy(model, scale=0.05, seed=0):
    """A reference that differs from the policy (at policy == reference k3's gradient is zero: no sign shows)."""
    ref = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))
    return ref


def _recording_step(trainer, world, monkeypatch):
    """One training step on the first 8 clips; returns the prepared batch and the rollout it sampled."""
    seen = {}
    sample = trainer._sample

    def recorded(*a, **kw):
        seen["rollout"] = sample(*a, **kw)
        return seen["rollout"]

    monkeypatch.setattr(trainer, "_sample", recorded)
    batch = trainer._prepare_inputs(trainer.data_collator([world[i] for i in range(8)]))
    trainer.model.zero_grad()
    trainer.training_step(trainer.model, batch)
    return batch, seen["rollout"]


def _grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize(
    "loss_type, estimator", [("scst", "k3"), ("scst", "k2"), ("scst", "k1"), ("ppo", "k3"), ("ppo", "k1")]
)
def test_kl_term_gradient_by_hand_with_policy_away_from_reference(
    tmp_path, world, captioner, monkeypatch, loss_type, estimator
):
    """
    With a zero reward (so a zero advantage against the greedy baseline) the whole update is the KL term's. The
    reference is the policy with its weights perturbed, so that term has a value and a gradient, checked against the
    formulas written out here: k3 `exp(-d) + d - 1` and k2 `d^2 / 2` (`d = log pi - log ref`) added to the loss,
    `kl_coef` times the sum over a caption's tokens averaged over captions (SCST) or the mean over tokens (PPO); k1
    `d` summed per caption and subtracted from the reward, so the loss is `-mean_i A_i sum_t log pi` with
    `A_i = -kl_coef * sum_t d`.
    """
    from hfpref.models.captioning import encode_audio, eos_token_ids, processed_log_probs, rollout_logits

    model, processor = captioner
    ref = _perturbed_copy(model)
    coef = 0.5
    args = _args(
        tmp_path, max_steps=1, loss_type=loss_type, num_samples=2, ppo_epochs=1, kl_coef=coef, kl_estimator=estimator
    )
    trainer = CaptionRLTrainer(
        model, zero_reward, args, train_dataset=world, processing_class=processor, ref_model=ref
    )
    batch, rollout = _recording_step(trainer, world, monkeypatch)
    got = _grads(trainer.model)

    trainer.model.zero_grad()
    log_pi, mask = processed_log_probs(
        rollout_logits(model, encode_audio(model, batch), rollout), rollout, eos_ids=eos_token_ids(model)
    )
    with torch.no_grad():
        log_ref, _ = processed_log_probs(
            rollout_logits(ref, encode_audio(ref, batch), rollout), rollout, eos_ids=eos_token_ids(model)
        )
    d = log_pi - log_ref
    per_token = {"k3": torch.exp(-d) + d - 1, "k2": d**2 / 2}
    if estimator == "k1":
        advantages = -coef * (d.detach() * mask).sum(-1)
        loss = -(advantages * (log_pi * mask).sum(-1)).mean()
        if loss_type == "ppo":  # the ratio's gradient at ratio 1 is that of log pi, averaged over tokens
            loss = -(advantages[:, None] * log_pi * mask).sum() / mask.sum()
    elif loss_type == "scst":
        loss = coef * (per_token[estimator] * mask).sum(-1).mean()
    else:
        loss = coef * (per_token[estimator] * mask).sum() / mask.sum()
    loss.backward()
    expected = _grads(model)
    assert expected.norm() > 1e-3  # the policy is away from the reference: the KL term pulls
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    # The logged KL is the k3 estimate of KL(pi || ref) per caption, whatever the estimator optimised.
    total, weight = trainer._metric_totals["kl"]
    k3 = (torch.exp(-d) + d - 1).detach()
    assert total / weight == pytest.approx(((k3 * mask).sum(-1)).mean().item(), rel=1e-4)


# ---------------------------------------------------------------------------------------------------------------------
# Dropout, PPO's fixed old log-probs and clipping, and the weighted rewards reaching the advantage.
# ---------------------------------------------------------------------------------------------------------------------


def _with_dropout(model, p=0.3):
    """The same captioner with dropout `p` everywhere (residual, attention, activation)."""
    from transformers import WhisperForConditionalGeneration

    config = copy.deepcopy(model.config)
    config.dropout = config.attention_dropout = config.activation_dropout = p
    out = WhisperForConditionalGeneration(config)
    out.load_state_dict(model.state_dict())
    out.generation_config = copy.deepcopy(model.generation_config)
    return out


def _recording(monkeypatch, name):
    """Replace a loss function of the trainer's module by one that records its arguments and results."""
    import hfpref.trainers.caption_rl.caption_rl_trainer as module

    calls, real = [], getattr(module, name)

    def recorded(*a, **kw):
        out = real(*a, **kw)
        calls.append((a, kw, out))
        return out

    monkeypatch.setattr(module, name, recorded)
    return calls


@pytest.mark.parametrize("disable", [True, False], ids=["default", "dropout-kept-control"])
def test_samples_are_scored_without_dropout(tmp_path, world, captioner, monkeypatch, disable):
    """
    A captioner with dropout 0.3 samples its captions with dropout off. By default (`disable_dropout=True`) the loss
    pass scores them under that same distribution: its log-probs equal those `generate` sampled with, and the logged
    KL to the reference (a frozen copy: the policy equals it at step 0) is 0. The control keeps dropout in the
    policy: the scored log-probs are those of a thinned network and the step-0 KL is > 0.
    """
    model, processor = captioner
    args = _args(tmp_path, max_steps=1, kl_coef=0.1, **({} if disable else {"disable_dropout": False}))
    assert args.disable_dropout is disable  # on by default
    trainer = CaptionRLTrainer(_with_dropout(model), brevity, args, train_dataset=world, processing_class=processor)
    calls = _recording(monkeypatch, "reinforce_loss")
    _, rollout = _recording_step(trainer, world, monkeypatch)
    (log_probs, mask, _), _, _ = calls[0]
    gap = ((log_probs.detach() - rollout.sampling_log_probs).abs() * mask).max().item()
    total, weight = trainer._metric_totals["kl"]
    if disable:
        assert gap < 1e-4 and total / weight == pytest.approx(0.0, abs=1e-5)
    else:
        assert gap > 1e-2 and total / weight > 1e-3


def test_ppo_keeps_the_sampling_log_probs_over_epochs_and_clips(tmp_path, world, captioner, monkeypatch):
    """
    Four PPO epochs over one rollout: every epoch's ratio is taken against the log-probs the captions were sampled
    with (recorded by `generate`), not recomputed, so the ratio starts at exactly 1 and moves away; by the last epoch
    some tokens are outside `1 +- cliprange`, and those whose objective the clip caps get no gradient, the others
    `-A * ratio / tokens`.
    """
    from hfpref.trainers.caption_rl.caption_rl_trainer import ppo_clip_loss

    model, processor = captioner
    args = _args(tmp_path, max_steps=1, loss_type="ppo", num_samples=2, ppo_epochs=4, cliprange=0.1)
    trainer = CaptionRLTrainer(model, centred_brevity, args, train_dataset=world, processing_class=processor)
    trainer.create_optimizer()  # PPO steps it between its epochs
    calls = _recording(monkeypatch, "ppo_clip_loss")
    _, rollout = _recording_step(trainer, world, monkeypatch)
    assert len(calls) == 4
    (_, old, mask, advantages, cliprange, _), _, _ = calls[0]
    assert cliprange == 0.1
    gap = ((old - rollout.sampling_log_probs).abs() * mask).max().item()
    assert gap < 1e-4  # the old log-probs are the sampler's
    fractions = [out[1].item() for _, _, out in calls]
    assert fractions[0] == 0.0 and fractions[-1] > 0.05, fractions
    for (_, later_old, *_), _, _ in calls[1:]:
        assert torch.equal(later_old, old)

    (log_probs, _, mask, advantages, _, _), _, _ = calls[-1]
    log_probs = log_probs.detach().requires_grad_()
    loss, _ = ppo_clip_loss(log_probs, old, mask, advantages, 0.1)
    loss.backward()
    ratio = torch.exp(log_probs.detach() - old)
    a = advantages[:, None].expand_as(ratio)
    capped = ((a > 0) & (ratio > 1.1)) | ((a < 0) & (ratio < 0.9))
    assert (capped & mask.bool()).any()
    expected = torch.where(capped, torch.zeros_like(ratio), -a * ratio) * mask / mask.sum()
    torch.testing.assert_close(log_probs.grad, expected)


def word_count(completions, **kwargs):
    return [float(len(c.split())) for c in completions]


def _recorded_reward(reward):
    calls = []

    def wrapped(completions, **kwargs):
        calls.append(list(completions))
        return reward(completions, **kwargs)

    wrapped.__name__, wrapped.calls = reward.__name__, calls
    return wrapped


@pytest.mark.parametrize(
    "loss_type, extra",
    [("scst", {}), ("rloo", {"num_samples": 4}), ("ppo", {"num_samples": 2, "ppo_baseline": "loo", "ppo_epochs": 1})],
)
def test_weighted_rewards_reach_the_advantage(tmp_path, world, captioner, monkeypatch, loss_type, extra):
    """
    Two rewards weighted 2 and -0.5: the advantage the loss receives is, per sampled caption, the weighted sum of
    the two rewards of its text minus the baseline, written out here: the greedy caption's weighted reward (SCST), or
    the mean weighted reward of the clip's other samples (RLOO, PPO's `"loo"`).
    """
    model, processor = captioner
    rewards = [_recorded_reward(brevity), _recorded_reward(word_count)]
    args = _args(tmp_path, max_steps=1, loss_type=loss_type, reward_weights=[2.0, -0.5], **extra)
    trainer = CaptionRLTrainer(model, rewards, args, train_dataset=world, processing_class=processor)
    calls = _recording(monkeypatch, "ppo_clip_loss" if loss_type == "ppo" else "reinforce_loss")
    _recording_step(trainer, world, monkeypatch)
    got = calls[0][0][3 if loss_type == "ppo" else 2]

    def weighted(texts):
        return [2.0 * (1.0 - min(len(t), 40) / 40) - 0.5 * len(t.split()) for t in texts]

    samples = weighted(rewards[0].calls[0])
    assert rewards[1].calls[0] == rewards[0].calls[0]
    k = args.num_samples
    if loss_type == "scst":
        greedy = weighted(rewards[0].calls[1])
        expected = [s - greedy[i // k] for i, s in enumerate(samples)]
    else:
        groups = [samples[i : i + k] for i in range(0, len(samples), k)]
        expected = [r - (sum(g) - r) / (k - 1) for g in groups for r in g]
    assert got.tolist() == pytest.approx(expected, abs=1e-5)
    assert len(set(round(e, 4) for e in expected)) > 2  # not a degenerate batch
