"""AlignCap KD-regularization: eq. 5 by hand, response alignment, one copy of the weights, and held-out learning."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hfpref.data.audio import decode_audio
from hfpref.data.speech_world import make_speech_world
from hfpref.encoders.speech_tokens import (
    SpeechTokenEncoder,
    build_speech_tokenizer,
    build_tiny_speech_llm,
    fit_speech_codebook,
)
from hfpref.trainers.kd_align_config import KDAlignConfig
from hfpref.trainers.kd_align_trainer import KDAlignCollator, KDAlignTrainer, kd_alignment_dataset, response_logits


CPU = dict(save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True, seed=0)


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Tiny models, many small matmuls."""


@pytest.fixture(scope="module")
def speech_data():
    world = make_speech_world(64, seed=0, backend="procedural", clip_seconds=1.5)
    waveforms = [decode_audio(a, 16000) for a in world["audio"]]
    encoder = SpeechTokenEncoder(fit_speech_codebook(build_speech_tokenizer(), waveforms[:48], seed=0))
    ds = kd_alignment_dataset(world, encoder)
    texts = [c for refs in world["references"] for c in refs] + list(ds["text_prompt"])
    return ds.select(range(48)), ds.select(range(48, 64)), texts, encoder.codebook_size


def _model(speech_data, seed=0):
    _, _, texts, codebook_size = speech_data
    return build_tiny_speech_llm(texts, codebook_size, seed=seed)


def _args(tmp_path, **kw):
    return KDAlignConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=8, per_device_eval_batch_size=16, **{**CPU, **kw}
    )


def test_dataset_has_the_student_and_teacher_prompts(speech_data):
    train, _, _, _ = speech_data
    row = train[0]
    assert row["prompt"].startswith("<st_") and row["prompt"].endswith(" Describe the speaker's emotion.")
    assert row["prompt"].count("<st_") == 75  # 1.5 s at 50 codes per second
    assert row["text_prompt"].startswith("Feeling ") and row["caption"] in row["text_prompt"]


def test_collator_aligns_response_positions_of_prefixes_of_different_length(speech_data, tmp_path):
    train, _, _, _ = speech_data
    model, tokenizer = _model(speech_data)
    collator = KDAlignCollator(tokenizer, _args(tmp_path, max_response_length=64))
    rows = [train[0], {**train[1], "caption": "A sad voice."}]
    batch = collator(rows)
    for i, row in enumerate(rows):
        response = tokenizer(row["caption"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        n = len(response)
        assert batch["response_ids"][i, :n].tolist() == response and batch["response_mask"][i].sum() == n
        for side, column in (("student", "prompt"), ("teacher", "text_prompt")):
            prompt_length = len(tokenizer(row[column])["input_ids"])
            positions = batch[f"{side}_positions"][i, :n]
            assert positions.tolist() == list(range(prompt_length - 1, prompt_length - 1 + n))
            # The token after each position is the response token it predicts.
            assert batch[f"{side}_input_ids"][i, positions + 1].tolist() == response
    with pytest.raises(ValueError, match="row speech-000000, column 'prompt': .* exceed max_prompt_length=10"):
        KDAlignCollator(tokenizer, _args(tmp_path, max_prompt_length=10))([train[0]])
    with pytest.raises(ValueError, match="column 'caption': empty response"):
        collator([{**train[0], "caption": " "}])


def test_loss_is_eq5_computed_by_hand(speech_data, tmp_path):
    train, _, _, _ = speech_data
    model, tokenizer = _model(speech_data)
    args = _args(tmp_path, temperature=2.0, ce_weight=0.5)
    trainer = KDAlignTrainer(model, args, train_dataset=train, processing_class=tokenizer)
    rows = [train[0], {**train[1], "caption": "A sad voice."}]
    # Make the adapter non-zero so that student and teacher differ.
    torch.manual_seed(0)
    for p in trainer.model.parameters():
        if p.requires_grad:
            p.data.normal_(0, 0.5)
    inputs = trainer._prepare_inputs(KDAlignCollator(tokenizer, args)(rows))
    loss = trainer.compute_loss(trainer.model, inputs)

    total, ce, tokens = 0.0, 0.0, 0
    for row in rows:
        response = tokenizer(row["caption"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        with torch.no_grad():
            student_ids = torch.tensor([tokenizer(row["prompt"])["input_ids"] + response])
            teacher_ids = torch.tensor([tokenizer(row["text_prompt"])["input_ids"] + response])
            student = trainer.model(input_ids=student_ids).logits[0]
            with trainer.model.disable_adapter():
                teacher = trainer.model(input_ids=teacher_ids).logits[0]
        s0, t0 = student_ids.shape[1] - len(response), teacher_ids.shape[1] - len(response)
        for t, token in enumerate(response):
            p_teacher = torch.softmax(teacher[t0 - 1 + t].double() / 2.0, -1)
            log_p_student = torch.log_softmax(student[s0 - 1 + t].double() / 2.0, -1)
            total += -(p_teacher * log_p_student).sum().item()
            ce += -torch.log_softmax(student[s0 - 1 + t].double(), -1)[token].item()
            tokens += 1
    expected = 4.0 * total / tokens + 0.5 * ce / tokens  # temperature**2 * mean cross-entropy + ce_weight * CE
    assert loss.item() == pytest.approx(expected, rel=1e-4)


def test_teacher_is_the_adapter_disabled_base_and_only_the_adapter_trains(speech_data, tmp_path):
    train, test, _, _ = speech_data
    model, tokenizer = _model(speech_data)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = KDAlignTrainer(
        model,
        _args(tmp_path, max_steps=3, learning_rate=1e-2),
        train_dataset=train,
        eval_dataset=test,
        processing_class=tokenizer,
    )
    assert trainer.teacher_model is None
    trainable = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "token_adapter" in n for n in trainable)
    assert sum("token_adapter" in n for n in trainable) == 1  # the speech-token rows
    assert trainer.model.peft_config["default"].r == 8
    trainer.train()
    logged = [e for e in trainer.state.log_history if "kd_loss" in e]
    assert len(logged) == 3 and all(math.isfinite(e["kd_loss"]) and math.isfinite(e["kl"]) for e in logged)
    assert all(not torch.equal(p, trainable[n]) for n, p in trainer.model.named_parameters() if n in trainable)
    frozen = dict(trainer.model.get_base_model().named_parameters())
    for name, value in base.items():  # base weights unchanged: the teacher is the original LLM
        key = name if name in frozen else name.replace(".weight", ".base_layer.weight")
        if key in frozen:
            assert torch.equal(frozen[key], value), name
    assert "eval_kl" in trainer.evaluate()


def test_a_separate_teacher_gives_the_same_loss(speech_data, tmp_path):
    train, _, _, _ = speech_data
    model, tokenizer = _model(speech_data)
    teacher, _ = _model(speech_data)  # same seed: the same weights, a second copy
    shared = KDAlignTrainer(model, _args(tmp_path / "a"), train_dataset=train, processing_class=tokenizer)
    for p in shared.model.parameters():
        if p.requires_grad:
            p.data.normal_(0, 0.1)
    separate = KDAlignTrainer(
        shared.model, _args(tmp_path / "b"), train_dataset=train, processing_class=tokenizer, teacher_model=teacher
    )
    inputs = shared._prepare_inputs(shared.data_collator([train[i] for i in range(4)]))
    torch.testing.assert_close(shared.compute_loss(shared.model, inputs), separate.compute_loss(shared.model, inputs))


def test_config_validation(tmp_path):
    with pytest.raises(ValueError, match="temperature=0"):
        _args(tmp_path, temperature=0)
    with pytest.raises(ValueError, match="must differ"):
        _args(tmp_path, response_column="prompt")
    with pytest.raises(ValueError, match="max_response_length=1"):
        _args(tmp_path, max_response_length=1)


def _warm_up_teacher(model, tokenizer, train, args, steps=150):
    """The teacher must know the text task (the paper's LLaMA does): fine-tune the base on text prompt -> caption."""
    collator = KDAlignCollator(tokenizer, args)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(steps):
        rows = [train[int(i)] for i in np.random.default_rng(step).choice(len(train), 16)]
        batch = collator(rows)
        logits = response_logits(
            model, batch["teacher_input_ids"], batch["teacher_attention_mask"], batch["teacher_positions"]
        )
        token_loss = F.cross_entropy(logits.transpose(1, 2), batch["response_ids"], reduction="none")
        loss = (token_loss * batch["response_mask"]).sum() / batch["response_mask"].sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return loss.item()


def test_kd_lowers_the_student_teacher_kl_on_held_out_clips(speech_data, tmp_path):
    train, test, _, _ = speech_data
    model, tokenizer = _model(speech_data)
    args = _args(tmp_path, max_steps=150, learning_rate=5e-3, logging_steps=10)
    assert _warm_up_teacher(model, tokenizer, train, args) < 0.2  # the text teacher reproduces the caption
    trainer = KDAlignTrainer(model, args, train_dataset=train, eval_dataset=test, processing_class=tokenizer)
    before = trainer.student_teacher_kl(test)["kl"]
    trainer.train()
    after = trainer.student_teacher_kl(test)["kl"]
    # Measured (procedural world, seed 0): held-out KL 2.53 -> 0.33 nats per response token, the training clips'
    # 2.30 -> 0.07. A student that only learnt the captions' shared wording would stop near the KL between the
    # teacher and the caption marginal; asking for a 3x drop leaves room for other numerics without being met by
    # the first few steps (the logged KL is 1.6 after 10).
    assert after < before / 3, (before, after)
