"""
caption_sft and audibility_classifier train on the cross-entropy mean of the global batch, whatever its split over
gradient-accumulation steps and processes: the logged loss, `eval_loss` and one SGD step equal a bare reference, one
plain forward (and backward) of a copy of the model over the whole global batch.

transformers' Trainer passes `num_items_in_batch` (the labelled positions of the global batch) to any model whose
`forward` takes `**kwargs`, and then neither divides the loss by the accumulation steps nor leaves it unmultiplied by
the number of processes; Whisper and DistilBERT ignore the count and return their micro-batch mean, so their loss and
gradient came out multiplied by both. The references here are token-weighted (captions of different lengths), so a
mean of micro-batch means would fail them too.
"""

import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from transformers import DataCollatorWithPadding

from hfpref.data.synthetic.audio_world import make_world
from hfpref.guidance.audibility_data import load_seed_set
from hfpref.models.audibility_classifier import build_tiny_audibility_classifier
from hfpref.models.captioning import CaptionCollator, build_tiny_whisper_captioner
from hfpref.trainers.audibility_classifier import AudibilityClassifierConfig, AudibilityClassifierTrainer
from hfpref.trainers.audibility_classifier.audibility_classifier_trainer import tokenize_audibility
from hfpref.trainers.caption_sft import CaptionSFTConfig, CaptionSFTTrainer


ROOT = Path(__file__).resolve().parents[2]
LEARNING_RATE = 0.5
# SGD, no clipping, no schedule: the weights after one step are the start minus lr times the gradient.
COMMON = dict(
    max_steps=1,
    per_device_train_batch_size=1,
    per_device_eval_batch_size=1,
    learning_rate=LEARNING_RATE,
    optim="sgd",
    lr_scheduler_type="constant",
    max_grad_norm=0.0,
    weight_decay=0.0,
    logging_steps=1,
    save_strategy="no",
    eval_strategy="no",
    report_to="none",
    use_cpu=True,
    disable_tqdm=True,
    seed=0,
)


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Tiny models on a busy 2-core machine."""


@pytest.fixture(scope="module")
def caption_data():
    """Two clips whose captions differ in length, so the token-weighted mean differs from the mean of the two."""
    world = make_world(4, seed=0).select_columns(["audio", "caption"])
    return world.select([0, 2])


def _no_dropout(model):
    """Dropout off in training mode too, so the Trainer's forward equals the reference's (kept when saved)."""
    for name in ("dropout", "attention_dropout", "activation_dropout", "seq_classif_dropout"):
        if hasattr(model.config, name):
            setattr(model.config, name, 0.0)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


@pytest.fixture
def captioner(caption_data):
    model, processor = build_tiny_whisper_captioner(list(caption_data["caption"]), seed=0, d_model=32)
    return _no_dropout(model), processor


@pytest.fixture
def classifier():
    data = load_seed_set().shuffle(seed=0).select(range(2))
    model, tokenizer = build_tiny_audibility_classifier(data["sentence"], seed=0)
    return _no_dropout(model), tokenizer, tokenize_audibility(data, tokenizer, 24)


def _caption_batch(processor, rows: Dataset) -> dict:
    collator = CaptionCollator(processor.feature_extractor, processor.tokenizer)
    batch = collator(list(rows))
    return {"input_features": batch["input_features"], "labels": batch["labels"]}


def _classifier_batch(tokenizer, rows: Dataset) -> dict:
    return DataCollatorWithPadding(tokenizer)(list(rows))


def _reference_step(model, batch: dict) -> tuple[float, torch.nn.Module]:
    """The global batch's mean cross-entropy, by one plain forward of a copy of the model, and that copy after one
    SGD step on it."""
    model = copy.deepcopy(model).train()
    loss = model(**batch).loss
    loss.backward()
    with torch.no_grad():
        for param in model.parameters():
            if param.grad is not None:  # Whisper's encoder positions are frozen
                param -= LEARNING_RATE * param.grad
    return loss.item(), model


def _weights(model) -> dict[str, torch.Tensor]:
    """The trained weights (Whisper's frozen sinusoidal encoder positions are recomputed when a model loads)."""
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


def _token_weighted_mean(model, batch: dict) -> float:
    """By hand: per-token cross-entropy summed over every labelled position, over their count."""
    with torch.no_grad():
        logits = model(**batch).logits.float()
    labels = batch["labels"]
    logits, labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    kept = labels != -100
    log_probs = torch.log_softmax(logits[kept], dim=-1)
    return -log_probs.gather(1, labels[kept][:, None]).sum().item() / kept.sum().item()


def _max_difference(weights: dict, reference: dict) -> float:
    assert reference.keys() <= weights.keys()
    return max((weights[k].float() - reference[k].float()).abs().max().item() for k in reference)


def _check_one_step(trainer, model, start: dict, reference_loss: float, reference_weights: dict):
    trainer.train()
    logged = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert logged == [pytest.approx(reference_loss, rel=1e-5)]
    # The step is large against the tolerance (100x): a loss counted twice moves every weight twice as far.
    assert _max_difference(reference_weights, start) > 1e-4
    assert _max_difference(_weights(model), reference_weights) < 1e-6


def test_caption_sft_loss_and_step_with_accumulation_equal_one_forward_over_the_global_batch(
    tmp_path, caption_data, captioner
):
    model, processor = captioner
    batch = _caption_batch(processor, caption_data)
    tokens = (batch["labels"] != -100).sum(1).tolist()
    assert tokens[0] != tokens[1]  # token-weighted mean != mean of the two clips' means
    reference_loss, reference = _reference_step(model, batch)
    assert reference_loss == pytest.approx(_token_weighted_mean(model, batch), rel=1e-6)
    start, reference_weights = _weights(model), _weights(reference)

    args = CaptionSFTConfig(output_dir=str(tmp_path), gradient_accumulation_steps=2, **COMMON)
    collator = CaptionCollator(processor.feature_extractor, processor.tokenizer)
    trainer = CaptionSFTTrainer(
        model=model, args=args, data_collator=collator, train_dataset=caption_data, processing_class=processor
    )
    _check_one_step(trainer, model, start, reference_loss, reference_weights)


def test_caption_sft_eval_loss_is_the_token_weighted_mean(tmp_path, caption_data, captioner):
    model, processor = captioner
    batch = _caption_batch(processor, caption_data)
    args = CaptionSFTConfig(output_dir=str(tmp_path), **{**COMMON, "per_device_eval_batch_size": 2})
    collator = CaptionCollator(processor.feature_extractor, processor.tokenizer)
    trainer = CaptionSFTTrainer(
        model=model, args=args, data_collator=collator, eval_dataset=caption_data, processing_class=processor
    )
    assert trainer.evaluate()["eval_loss"] == pytest.approx(_token_weighted_mean(model, batch), rel=1e-5)


def test_audibility_classifier_loss_and_step_with_accumulation_equal_one_forward_over_the_global_batch(
    tmp_path, classifier
):
    model, tokenizer, data = classifier
    batch = _classifier_batch(tokenizer, data)
    reference_loss, reference = _reference_step(model, batch)
    assert reference_loss == pytest.approx(_token_weighted_mean(model, batch), rel=1e-6)
    start, reference_weights = _weights(model), _weights(reference)

    args = AudibilityClassifierConfig(output_dir=str(tmp_path), gradient_accumulation_steps=2, **COMMON)
    trainer = AudibilityClassifierTrainer(
        model, args, processing_class=tokenizer, train_dataset=data, eval_dataset=data
    )
    _check_one_step(trainer, model, start, reference_loss, reference_weights)
    metrics = trainer.evaluate()
    assert metrics["eval_loss"] == pytest.approx(_token_weighted_mean(model, batch), rel=1e-5)


def test_audibility_classifier_refuses_a_model_not_trained_by_cross_entropy(tmp_path, classifier):
    model, tokenizer, data = classifier
    model.config.problem_type = "multi_label_classification"
    args = AudibilityClassifierConfig(output_dir=str(tmp_path), **COMMON)
    with pytest.raises(ValueError, match="problem_type='multi_label_classification'"):
        AudibilityClassifierTrainer(model, args, processing_class=tokenizer, train_dataset=data)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_log_and_step_as_one_forward_over_the_global_batch(
    tmp_path, caption_data, captioner, classifier
):
    """
    2 gloo processes of one clip each (one SGD step, then `evaluate`, one clip per process): the logged loss, eval_loss
    and weights equal the bare reference over both clips. The issue's doubled `eval_loss` (6.01 -> 12.02) showed here.
    """
    model, processor = captioner
    batch = _caption_batch(processor, caption_data)
    loss, reference = _reference_step(model, batch)
    caption_reference = (loss, _weights(reference), _token_weighted_mean(reference, batch))  # evaluated after the step
    model.save_pretrained(tmp_path / "caption_sft" / "model")
    processor.save_pretrained(tmp_path / "caption_sft" / "model")
    caption_data.save_to_disk(str(tmp_path / "caption_sft" / "data"))

    model, tokenizer, data = classifier
    batch = _classifier_batch(tokenizer, data)
    loss, reference = _reference_step(model, batch)
    classifier_reference = (loss, _weights(reference), _token_weighted_mean(reference, batch))
    model.save_pretrained(tmp_path / "audibility_classifier" / "model")
    tokenizer.save_pretrained(tmp_path / "audibility_classifier" / "model")
    data.save_to_disk(str(tmp_path / "audibility_classifier" / "data"))
    (tmp_path / "args.json").write_text(json.dumps(COMMON))

    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(ROOT / "recipes" / "accelerate_configs" / "multi_cpu.yaml"),
        "--num_processes", "2", "--main_process_port", str(_free_port()),
        str(ROOT / "tests" / "trainers" / "loss_scaling_runner.py"), str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]

    for method, (loss, weights, eval_loss) in (
        ("caption_sft", caption_reference),
        ("audibility_classifier", classifier_reference),
    ):
        result = json.loads((tmp_path / method / "result.json").read_text())
        assert result["world_size"] == 2, method
        assert result["loss"] == pytest.approx(loss, rel=1e-5), method
        assert result["eval_loss"] == pytest.approx(eval_loss, rel=1e-5), method
        trained = load_file(str(tmp_path / method / "weights.safetensors"))
        assert _max_difference(trained, weights) < 1e-6, method
