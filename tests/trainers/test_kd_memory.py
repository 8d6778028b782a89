"""AlignCap KD memory: the teacher keeps nothing for backward, and `bench/kd_memory.py` runs."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset

from hfpref.encoders.audio_tokens import render_speech_tokens
from hfpref.encoders.speech_tokens import build_tiny_speech_llm
from hfpref.prompts.emotion_clues import teacher_prompt
from hfpref.trainers.aligncap_kd.aligncap_kd_config import AlignCapKDConfig
from hfpref.trainers.aligncap_kd.aligncap_kd_trainer import AlignCapKDTrainer, response_logits


CODEBOOK_SIZE = 64
INSTRUCTION = "Describe the speaker's emotion."
CAPTIONS = ["A sad, low voice.", "She sounds happy and loud.", "An angry man speaks fast.", "A calm whisper."]


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Tiny models."""


def _data():
    rng = np.random.default_rng(0)
    return Dataset.from_dict(
        {
            "prompt": [
                f"{render_speech_tokens(rng.integers(CODEBOOK_SIZE, size=20 + 5 * i))} {INSTRUCTION}"
                for i in range(len(CAPTIONS))
            ],
            "text_prompt": [teacher_prompt(c, INSTRUCTION) for c in CAPTIONS],
            "caption": CAPTIONS,
        }
    )


def _saved_bytes(fn, models) -> int:
    """Bytes autograd keeps for backward while `fn` runs, the weights of `models` left out, each storage once."""
    weights = {p.untyped_storage().data_ptr() for model in models for p in model.parameters()}
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return sum(storages.values())


@pytest.mark.parametrize("separate", [False, True], ids=["shared", "separate"])
def test_the_teacher_keeps_nothing_for_backward(tmp_path, separate):
    """
    What a KD step keeps for backward is the student's forward plus the two `(batch, response, vocab)` tensors the
    loss needs (the student's log-probabilities and the teacher's probabilities): nothing of the teacher's forward,
    whether it is the adapter-disabled student or a separate model.
    """
    data = _data()
    texts = list(data["text_prompt"]) + CAPTIONS
    model, tokenizer = build_tiny_speech_llm(texts, CODEBOOK_SIZE, seed=0)
    teacher = build_tiny_speech_llm(texts, CODEBOOK_SIZE, seed=0)[0] if separate else None
    args = AlignCapKDConfig(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, save_strategy="no", disable_tqdm=True
    )
    trainer = AlignCapKDTrainer(model, args, train_dataset=data, processing_class=tokenizer, teacher_model=teacher)
    inputs = trainer._prepare_inputs(trainer.data_collator([data[i] for i in range(len(data))]))

    def student_forward():
        student = (inputs["student_input_ids"], inputs["student_attention_mask"], inputs["student_positions"])
        return response_logits(trainer.model, *student)

    models = [trainer.model] + ([teacher] if separate else [])
    student_bytes = _saved_bytes(student_forward, models)
    step_bytes = _saved_bytes(lambda: trainer.compute_loss(trainer.model, inputs), models)
    batch, length = inputs["response_ids"].shape
    loss_tensor = batch * length * len(tokenizer) * 4  # one fp32 (batch, response, vocab) tensor
    assert student_bytes > 20 * loss_tensor  # the student's activations dwarf one loss tensor
    assert step_bytes - student_bytes <= 2 * loss_tensor + 4096  # + the (batch, response) mask products


@pytest.mark.slow
def test_the_benchmark_runs_both_sides_and_prints_its_ratio():
    """`bench/kd_memory.py` at a tiny size: both sides run in their own processes, give the same loss, and the
    separate copy costs memory."""
    script = Path(__file__).parents[2] / "bench" / "kd_memory.py"
    run = subprocess.run(
        [sys.executable, str(script), "--hidden-size", "64", "--layers", "2", "--batch-size", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    shared, separate = (line for line in lines if "parameters, peak RSS" in line)
    assert shared.lstrip().startswith("shared:") and separate.lstrip().startswith("separate:")
    assert shared.split("loss ")[1] == separate.split("loss ")[1]
    assert lines[-1].startswith("RATIO kd_memory_saving=") and float(lines[-1].split("=")[1]) > 1.0
