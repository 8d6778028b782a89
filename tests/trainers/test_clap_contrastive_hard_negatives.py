import math

import pytest
import torch
import torch.nn.functional as F

from hfpref.data.synthetic.audio_world import make_world, parse_events
from hfpref.encoders.clap import build_tiny_clap
from hfpref.trainers import ClapContrastiveCollator, ClapContrastiveConfig, ClapContrastiveTrainer
from hfpref.trainers.clap_contrastive.clap_contrastive_trainer import HARD_NEGATIVE_MASK, clap_contrastive_loss


def config(tmp_path, **overrides) -> ClapContrastiveConfig:
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        max_steps=2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        dataloader_pin_memory=False,
        disable_tqdm=True,
        seed=0,
    )
    return ClapContrastiveConfig(**{**defaults, **overrides})


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """A tiny CLAP gains nothing from a second thread on a busy 2-core machine."""


@pytest.fixture(scope="module")
def world():
    return make_world(12, seed=0, clip_seconds=1.0)


@pytest.fixture
def tiny(world):
    texts = [text for references in world["references"] for text in references]
    return build_tiny_clap(texts, seed=0)


def cross_entropy_by_hand(logits: list[float], target: int) -> float:
    return -logits[target] + math.log(sum(math.exp(value) for value in logits))


def test_hard_negative_loss_by_hand():
    # 3 clips; clip 0 has 2 hard negatives, clip 1 none, clip 2 one. Columns 0-2 of logits_per_audio are the batch's
    # captions, columns 3-4 clip 0's negatives, column 5 clip 2's.
    logits_per_audio = torch.tensor(
        [
            [3.0, 1.0, 0.5, 2.5, -1.0, 9.0],
            [0.2, 2.0, 0.1, 7.0, 8.0, 6.0],
            [0.3, -0.4, 1.5, 5.0, 4.0, 1.0],
        ]
    )
    logits_per_text = torch.tensor(
        [[2.0, 0.1, 0.2], [0.3, 1.0, -0.5], [0.0, 0.4, 1.2], [9.0, 9.0, 9.0], [9.0, 9.0, 9.0], [9.0, 9.0, 9.0]]
    )
    mask = torch.tensor([[True, True], [False, False], [True, False]])

    # Each clip sees the 3 captions and its own negatives only; other clips' negatives (e.g. the 7, 8, 6 of clip 1,
    # the 9 of clip 0) stay out. The negatives are no text-to-audio queries (their rows of 9s stay out).
    audio_to_text = (
        cross_entropy_by_hand([3.0, 1.0, 0.5, 2.5, -1.0], 0)
        + cross_entropy_by_hand([0.2, 2.0, 0.1], 1)
        + cross_entropy_by_hand([0.3, -0.4, 1.5, 1.0], 2)
    ) / 3
    text_to_audio = (
        cross_entropy_by_hand([2.0, 0.1, 0.2], 0)
        + cross_entropy_by_hand([0.3, 1.0, -0.5], 1)
        + cross_entropy_by_hand([0.0, 0.4, 1.2], 2)
    ) / 3
    expected = (audio_to_text + text_to_audio) / 2
    assert clap_contrastive_loss(logits_per_audio, logits_per_text, mask).item() == pytest.approx(expected, rel=1e-6)

    # Gradients reach each clip's own negatives only.
    logits = logits_per_audio.clone().requires_grad_(True)
    clap_contrastive_loss(logits, logits_per_text, mask).backward()
    assert (logits.grad[0, 3:5] > 0).all() and logits.grad[2, 5] > 0
    assert logits.grad[0, 5] == 0 and (logits.grad[1, 3:] == 0).all() and (logits.grad[2, 3:5] == 0).all()

    with pytest.raises(ValueError, match=r"must be \(3, 6\)"):
        clap_contrastive_loss(logits_per_audio[:, :5], logits_per_text, mask)


def test_no_hard_negatives_is_the_in_batch_loss_bit_for_bit():
    generator = torch.Generator().manual_seed(0)
    logits_per_audio = torch.randn(5, 5, generator=generator) * 10
    logits_per_text = torch.randn(5, 5, generator=generator) * 10
    labels = torch.arange(5)
    before = (F.cross_entropy(logits_per_audio, labels) + F.cross_entropy(logits_per_text, labels)) / 2
    assert torch.equal(clap_contrastive_loss(logits_per_audio, logits_per_text), before)
    # Every clip with an empty set of negatives gives the same loss too.
    empty = torch.zeros(5, 0, dtype=torch.bool)
    assert clap_contrastive_loss(logits_per_audio, logits_per_text, empty).item() == pytest.approx(before.item())


def test_trainer_loss_lines_the_negatives_up_with_their_clips(tmp_path, world, tiny):
    model, processor = tiny
    rows = world.select(range(3))
    negatives = [["a dog barks"], [], ["rain falls, then a bell rings", "a siren wails"]]
    dataset = rows.add_column("negatives", negatives)
    args = config(tmp_path, hard_negatives_column="negatives", references_column=None)
    trainer = ClapContrastiveTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor)
    batch = trainer.data_collator([dict(row) for row in trainer.train_dataset])
    assert batch[HARD_NEGATIVE_MASK].tolist() == [[True, False], [False, False], [True, True]]
    decoded = processor.tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
    assert decoded[3:] == ["a dog barks", "rain falls, then a bell rings", "a siren wails"]

    model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch)
        audio = model.get_audio_features(input_features=batch["input_features"], is_longer=batch["is_longer"])
        audio = F.normalize(audio.pooler_output if hasattr(audio, "pooler_output") else audio, dim=-1)
        text = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        text = F.normalize(text.pooler_output if hasattr(text, "pooler_output") else text, dim=-1)
        scale_audio, scale_text = model.logit_scale_a.exp().item(), model.logit_scale_t.exp().item()
    similarity = (audio @ text.T).tolist()
    audio_to_text = (
        cross_entropy_by_hand([scale_audio * s for s in similarity[0][:3] + similarity[0][3:4]], 0)
        + cross_entropy_by_hand([scale_audio * s for s in similarity[1][:3]], 1)
        + cross_entropy_by_hand([scale_audio * s for s in similarity[2][:3] + similarity[2][4:6]], 2)
    ) / 3
    text_to_audio = (
        sum(
            cross_entropy_by_hand([scale_text * similarity[clip][caption] for clip in range(3)], caption)
            for caption in range(3)
        )
        / 3
    )
    assert loss.item() == pytest.approx((audio_to_text + text_to_audio) / 2, rel=1e-4)


def test_collator_draws_synthetic_hard_negatives_of_distinct_kinds_afresh(world, tiny):
    _, processor = tiny
    rows = [dict(row) for row in world.select(range(6))]
    collator = ClapContrastiveCollator(processor, synthetic_hard_negatives=2)
    torch.manual_seed(0)
    draws = [collator(rows) for _ in range(4)]
    for batch in draws:
        mask = batch[HARD_NEGATIVE_MASK]
        # Every clip admits at least 2 kinds (hallucination, substitution), so each row holds exactly 2.
        assert mask.shape == (6, 2) and mask.all()
        decoded = processor.tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
        negatives = decoded[6:]
        for index, row in enumerate(rows):
            pair = negatives[2 * index : 2 * index + 2]
            assert all(parse_events(caption) != list(row["events"]) for caption in pair), (row["events"], pair)
            assert pair[0] != pair[1]
    assert len({tuple(processor.tokenizer.batch_decode(b["input_ids"][6:])) for b in draws}) > 1
    evaluation = ClapContrastiveCollator(processor, synthetic_hard_negatives=2, training=False)(rows)
    assert HARD_NEGATIVE_MASK not in evaluation and evaluation["input_ids"].shape[0] == 6


def test_training_with_synthetic_hard_negatives_logs_their_accuracy(tmp_path, world, tiny):
    model, processor = tiny
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    args = config(tmp_path, synthetic_hard_negatives=4)
    trainer = ClapContrastiveTrainer(model=model, args=args, train_dataset=world, processing_class=processor)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2 and all(math.isfinite(entry["loss"]) for entry in logs)
    assert all(0.0 <= entry["batch_hard_negative_accuracy"] <= 1.0 for entry in logs)
    unchanged = [name for name, param in model.named_parameters() if torch.equal(param, before[name])]
    assert unchanged == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"synthetic_hard_negatives": -1}, "synthetic_hard_negatives=-1 must be 0 .off. or positive"),
        (
            {"synthetic_hard_negatives": 2, "hard_negatives_column": "wrong"},
            "set it to 0 to use hard_negatives_column",
        ),
        ({"hard_negatives_column": "negatives", "loss_type": "model"}, "Hard negatives need loss_type='symmetric'"),
        ({"hard_negatives_column": "caption"}, "must differ"),
        ({"hard_negatives_column": ""}, "hard_negatives_column='' must be a non-empty column name or None"),
    ],
)
def test_config_rejects_bad_hard_negative_settings(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        config(tmp_path, **overrides)


def test_missing_hard_negative_columns_are_named(tmp_path, world, tiny):
    model, processor = tiny
    with pytest.raises(ValueError, match=r"synthetic_hard_negatives=2 draws hard negatives from the column 'events'"):
        ClapContrastiveTrainer(
            model=model,
            args=config(tmp_path, synthetic_hard_negatives=2),
            train_dataset=world.remove_columns("events"),
            processing_class=processor,
        )
    with pytest.raises(ValueError, match=r"lacks the column 'negatives' \(hard_negatives_column\)"):
        ClapContrastiveTrainer(
            model=model,
            args=config(tmp_path, hard_negatives_column="negatives"),
            train_dataset=world,
            processing_class=processor,
        )
    with pytest.raises(ValueError, match=r"'negatives' \(hard_negatives_column\) must hold lists of strings"):
        ClapContrastiveTrainer(
            model=model,
            args=config(tmp_path, hard_negatives_column="negatives"),
            train_dataset=world.add_column("negatives", ["not a list"] * len(world)),
            processing_class=processor,
        )
