"""Every method's trainer and config stand on the shared bases: one name, one paper, one card writer, one preset API."""

import importlib
import math
import re

import pytest
import torch
from datasets import Dataset
from transformers import TrainingArguments

from hfpref.hub.cards import METHODS, CardConfigMixin
from hfpref.trainers.base_config import AudioConfigMixin, HfprefConfigMixin
from hfpref.trainers.base_trainer import BaseTrainer
from hfpref.utils.checks import NonFiniteModelError


TRAINERS = {
    "reward_model": "RewardModelTrainer",
    "clap_contrastive": "ClapContrastiveTrainer",
    "caption_sft": "CaptionSFTTrainer",
    "caption_rl": "CaptionRLTrainer",
    "aligncap_kd": "AlignCapKDTrainer",
    "reward_weighted_diffusion": "RewardWeightedDiffusionTrainer",
    "audibility_classifier": "AudibilityClassifierTrainer",
}
CONFIGS = {
    "reward_model": ("RewardModelConfig", False),
    "clap_contrastive": ("ClapContrastiveConfig", True),
    "caption_sft": ("CaptionSFTConfig", True),
    "caption_rl": ("CaptionRLConfig", True),
    "aligncap_kd": ("AlignCapKDConfig", False),
    "reward_weighted_diffusion": ("RewardWeightedDiffusionConfig", True),
    "audibility_classifier": ("AudibilityClassifierConfig", False),
}


@pytest.mark.parametrize("method", sorted(TRAINERS))
def test_trainer_is_named_after_its_method(method):
    module = importlib.import_module(f"hfpref.trainers.{method}.{method}_trainer")
    trainer = getattr(module, TRAINERS[method])
    assert issubclass(trainer, BaseTrainer) and trainer._name == method and method in METHODS
    assert "create_model_card" not in vars(trainer)  # one card writer, BaseTrainer's
    assert "hfpref" in trainer._tag_names


@pytest.mark.parametrize("method", sorted(CONFIGS))
def test_config_uses_the_shared_base(method, tmp_path):
    name, reads_audio = CONFIGS[method]
    config = getattr(importlib.import_module(f"hfpref.trainers.{method}.{method}_config"), name)
    assert issubclass(config, HfprefConfigMixin) and issubclass(config, AudioConfigMixin) == reads_audio
    assert "presets" not in {f.name for f in config.__dataclass_fields__.values()}
    if reads_audio:
        assert config(output_dir=str(tmp_path), report_to="none").audio_column == "audio"
    # Every method's config takes the card's --license (BaseTrainer.create_model_card reads it).
    assert issubclass(config, CardConfigMixin) and config(output_dir=str(tmp_path), license="mit").license == "mit"
    with pytest.raises(ValueError, match=re.escape(f"preset='nope' is not one of {sorted(config.presets)}")):
        config.from_preset("nope", output_dir=str(tmp_path))


def test_paper_follows_the_variant():
    from hfpref.trainers.caption_rl.caption_rl_trainer import CaptionRLTrainer

    trainer = CaptionRLTrainer.__new__(CaptionRLTrainer)
    trainer.args = type("Args", (), {"loss_type": "rloo"})()
    assert trainer._paper == {"title": METHODS["caption_rl"].variants["rloo"].paper_title, "id": "2402.14740"}
    trainer.args.loss_type = "scst"
    assert trainer._paper["id"] == "2509.14659"


@pytest.mark.parametrize("processes", [1, 2, 3])
def test_micro_batch_index_is_the_place_of_the_batch_accelerate_deals(processes):
    """Process p's k-th micro-batch holds per-device batch `k * processes + p` of the sampler, as accelerate shards."""
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler, SequentialSampler

    from hfpref.trainers.base_trainer import micro_batch_index

    def sampler():
        return BatchSampler(SequentialSampler(range(24)), batch_size=2, drop_last=True)

    batches = list(sampler())
    for process in range(processes):
        shard = list(BatchSamplerShard(sampler(), num_processes=processes, process_index=process))
        assert len(shard) == len(batches) // processes
        for micro_step, batch in enumerate(shard):
            assert batch == batches[micro_batch_index(micro_step, process, processes)]


# The end of training and the resume: a toy regression on BaseTrainer (a 4 -> 1 linear layer, plain SGD, 12 steps).


class _Regression(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)
        self.forward_calls = 0

    def forward(self, x, y):
        self.forward_calls += 1
        return {"loss": ((self.linear(x).squeeze(-1) - y) ** 2).mean()}


class _ToyTrainer(BaseTrainer):
    _name = "reward_model"


def _regression_data(n=64):
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
    return Dataset.from_dict({"x": x.tolist(), "y": (x @ torch.tensor([1.0, -2.0, 0.5, 3.0])).tolist()})


def _toy_trainer(tmp_path, learning_rate=0.05, max_steps=12, **extra):
    torch.manual_seed(0)
    args = TrainingArguments(
        str(tmp_path),
        max_steps=max_steps,
        per_device_train_batch_size=8,
        learning_rate=learning_rate,
        optim="sgd",
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        **{"save_strategy": "no", "logging_steps": 2, **extra},
    )
    return _ToyTrainer(model=_Regression(), args=args, train_dataset=_regression_data())


def test_a_diverged_run_fails_at_the_end_of_training(tmp_path):
    from hfpref.utils.checks import DivergedTrainingError

    # lr 2 on this least-squares problem multiplies the error at each step (its Hessian's largest eigenvalue is ~2):
    # the logged loss goes 67 -> 1.0e14 over 12 steps (the first step: 9.66), finite throughout.
    trainer = _toy_trainer(tmp_path, learning_rate=2.0)
    with pytest.raises(DivergedTrainingError, match=r"diverged: the last logged loss is 1.036e\+14 at step 12"):
        trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert all(math.isfinite(v) for v in losses) and losses[-1] > 100 * losses[0]
    # Control, the same run at lr 0.05: the loss falls (18 -> 1.4), noisy on the way (2.1 -> 4.0), and ends normally.
    trainer = _toy_trainer(tmp_path / "ok", learning_rate=0.05)
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert losses[-1] < losses[0]


def test_a_run_that_diverged_within_its_first_logging_window_is_caught(tmp_path):
    from hfpref.utils.checks import DivergedTrainingError, check_not_diverged

    # One logged loss (logging_steps=12): the mean of 12 exploding steps, its own reference. The trainer records the
    # loss of the first step instead (9.66, the toy's initial error on its first batch).
    trainer = _toy_trainer(tmp_path, learning_rate=2.0, logging_steps=12)
    with pytest.raises(DivergedTrainingError, match=r"more than 100x the loss of the first training step 9\.661 "):
        trainer.train()
    # Control: the same log against its first logged loss alone passes the check.
    assert [e["step"] for e in trainer.state.log_history if "loss" in e] == [12]
    check_not_diverged(trainer.state.log_history)
    # The recorded loss is the one transformers logs for step 1 when it logs every step.
    trainer = _toy_trainer(tmp_path / "every-step", learning_rate=2.0, logging_steps=1, max_steps=2)
    trainer.train()
    assert trainer._initial_loss() == pytest.approx(trainer.state.log_history[0]["loss"], rel=1e-6)
    assert trainer._initial_loss() == pytest.approx(9.661, abs=1e-3)


def test_the_divergence_criterion_by_hand():
    from hfpref.utils.checks import DivergedTrainingError, check_not_diverged, check_training_losses

    # Reference: the first logged training loss, at least 1; the last loss and last eval loss may be up to 100x it.
    check_not_diverged([{"loss": 0.5, "step": 1}, {"loss": 99.0, "step": 2}, {"eval_loss": 100.0, "step": 2}])
    with pytest.raises(DivergedTrainingError, match=r"last logged eval_loss is 100\.1 at step 2"):
        check_not_diverged([{"loss": 0.5, "step": 1}, {"eval_loss": 100.1, "step": 2}])
    with pytest.raises(DivergedTrainingError, match=r"eval_clotho_loss is 3e\+10"):
        check_not_diverged([{"loss": 0.69, "step": 1}, {"eval_clotho_loss": 3e10, "eval_clotho_accuracy": 0.0}])
    check_not_diverged([{"loss": 5.0}, {"loss": 499.0}])  # 5 x 100 = 500
    with pytest.raises(DivergedTrainingError):
        check_not_diverged([{"loss": 5.0}, {"loss": -501.0}])  # magnitudes: a policy-gradient loss may be negative
    # Only the last value counts (a spike the run recovered from is not divergence), and never train_loss.
    check_not_diverged([{"loss": 1.0}, {"loss": 1e6}, {"loss": 0.5}, {"train_loss": 1e5}])
    with pytest.raises(NonFiniteModelError, match="the logged loss is nan at step 3"):
        check_training_losses([{"loss": 1.0, "step": 1}, {"loss": float("nan"), "step": 3}])


def _torn_checkpoints(tmp_path):
    """checkpoint-2 and checkpoint-4 of the toy run, then checkpoint-4's weights cut in half, as a kill leaves them."""
    _toy_trainer(tmp_path, max_steps=4, save_strategy="steps", save_steps=2).train()
    weights = tmp_path / "checkpoint-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return tmp_path / "checkpoint-2", tmp_path / "checkpoint-4"


def test_resume_skips_a_torn_newest_checkpoint_naming_it(tmp_path, caplog):
    from hfpref.utils.checks import checkpoint_problem

    complete, torn = _torn_checkpoints(tmp_path)
    assert checkpoint_problem(complete) is None
    assert checkpoint_problem(torn) == f"unreadable safetensors file {torn / 'model.safetensors'}"
    trainer = _toy_trainer(tmp_path, max_steps=6, save_strategy="steps", save_steps=2)
    with caplog.at_level("WARNING", logger="hfpref.utils.checks"):
        trainer.train(resume_from_checkpoint=True)
    assert f"the checkpoint {torn} is torn (unreadable safetensors file" in caplog.text
    assert f"resuming from {complete} instead" in caplog.text
    # Resumed at step 2 (its log holds step 2, then 4 and 6): 4 steps run, not 6.
    assert [e["step"] for e in trainer.state.log_history if "loss" in e] == [2, 4, 6]
    assert trainer.state.global_step == 6 and trainer.model.forward_calls == 4


def test_resume_from_a_torn_checkpoint_by_path_names_it(tmp_path):
    from hfpref.utils.checks import CorruptCheckpointError, checkpoint_problem

    _, torn = _torn_checkpoints(tmp_path)
    trainer = _toy_trainer(tmp_path, max_steps=6)
    with pytest.raises(CorruptCheckpointError, match=f"cannot resume from {re.escape(str(torn))}: unreadable"):
        trainer.train(resume_from_checkpoint=str(torn))
    # A save cut off before transformers wrote trainer_state.json (it writes it last), and a truncated optimizer.
    (torn / "trainer_state.json").unlink()
    assert "no trainer_state.json" in checkpoint_problem(torn)
    optimizer = tmp_path / "checkpoint-2" / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:100])
    assert (
        checkpoint_problem(tmp_path / "checkpoint-2")
        == f"{optimizer} is empty or truncated (not a whole torch.save archive)"
    )
    with pytest.raises(CorruptCheckpointError, match="every checkpoint in .* is torn, none to resume from"):
        trainer.train(resume_from_checkpoint=True)
