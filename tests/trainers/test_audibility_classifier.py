import math

import pytest
import torch

from hfpref.guidance.audibility_data import load_seed_set
from hfpref.models.audibility_classifier import build_tiny_audibility_classifier
from hfpref.scripts.utils import AudibilityModelArguments, load_audibility_classifier
from hfpref.trainers.audibility_classifier.audibility_classifier_config import AudibilityClassifierConfig
from hfpref.trainers.audibility_classifier.audibility_classifier_trainer import (
    AudibilityClassifierTrainer,
    tokenize_audibility,
)


def test_config_validation_says_what_is_valid(tmp_path):
    with pytest.raises(ValueError, match="lr_decay_every_epochs=0 must be >= 1 or None"):
        AudibilityClassifierConfig(output_dir=str(tmp_path), lr_decay_every_epochs=0)
    with pytest.raises(ValueError, match=r"lr_decay_factor=1.5 must lie in \(0, 1\]"):
        AudibilityClassifierConfig(output_dir=str(tmp_path), lr_decay_factor=1.5)
    with pytest.raises(ValueError, match="preset='nope' is not one of"):
        AudibilityClassifierConfig.from_preset("nope", output_dir=str(tmp_path))


def test_real_checkpoint_path_refuses_an_empty_tokenizer(tmp_path):
    model, tokenizer = build_tiny_audibility_classifier(["a dog barks"])
    with pytest.raises((ValueError, OSError)):
        load_audibility_classifier(AudibilityModelArguments(model_name_or_path=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match="needs the training sentences"):
        load_audibility_classifier(AudibilityModelArguments(tiny_classifier=True))


def test_trainer_steps_lr_every_epochs_and_updates_every_parameter(tmp_path, one_thread):
    data = load_seed_set().shuffle(seed=0).select(range(64))
    model, tokenizer = build_tiny_audibility_classifier(data["sentence"], seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = AudibilityClassifierConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=16,
        num_train_epochs=4,
        learning_rate=1e-3,
        lr_decay_every_epochs=2,
        lr_decay_factor=0.1,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )
    train = tokenize_audibility(data, tokenizer, 24)
    trainer = AudibilityClassifierTrainer(
        model, args, processing_class=tokenizer, train_dataset=train, eval_dataset=train
    )
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert all(math.isfinite(log["loss"]) for log in logs)
    # 4 steps per epoch: steps 1-8 at 1e-3 (logged after the step, so the 8th already shows the decay)...
    rates = [log["learning_rate"] for log in logs]
    assert rates[:7] == pytest.approx([1e-3] * 7) and rates[8:15] == pytest.approx([1e-4] * 7)
    for name, param in model.named_parameters():
        assert not torch.equal(before[name], param.detach()), name
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0 and "eval_predicted_audible" in metrics
