import importlib.util
import math
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from huggingface_hub import ModelCard
from transformers import ClapModel, ClapProcessor

from hfpref.data.synthetic.audio_world import make_world, parse_events
from hfpref.encoders.clap import ClapEmbedder, build_tiny_clap
from hfpref.scripts.utils import ClapContrastiveScriptArguments, ClapModelArguments
from hfpref.trainers import ClapContrastiveCollator, ClapContrastiveConfig, ClapContrastiveTrainer, retrieval_metrics
from hfpref.trainers.clap_contrastive.clap_contrastive_trainer import HARD_NEGATIVE_MASK, clap_contrastive_loss


RECIPES = Path(__file__).resolve().parents[2] / "recipes"
RECIPE = RECIPES / "clap_contrastive.py"
CLAP_CONFIGS = sorted((RECIPES / "clap_contrastive").glob("*.yaml"))


def load_recipe():
    spec = importlib.util.spec_from_file_location("clap_contrastive_recipe", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def texts_of(world) -> list[str]:
    return [text for references in world["references"] for text in references]


def config(tmp_path, **overrides) -> ClapContrastiveConfig:
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        max_steps=3,
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
    """A tiny CLAP gains nothing from a second thread, and spinning threads crawl when other processes share the cores."""


@pytest.fixture(scope="module")
def world():
    """16 one-second clips; build_tiny_clap's feature extractor repeat-pads them to its 5 s window."""
    return make_world(16, seed=0, clip_seconds=1.0)


@pytest.fixture(scope="module")
def held_out():
    return make_world(8, seed=1, clip_seconds=1.0)


@pytest.fixture
def tiny(world):
    return build_tiny_clap(texts_of(world), seed=0)


def test_retrieval_metrics_by_hand():
    audio = np.eye(3)
    text = np.array([[1.0, 0.2, 0.1], [0.3, 0.5, 1.0], [0.2, 1.0, 0.4]])
    # Cosine similarities, clips as rows and captions as columns (caption j divided by its norm):
    #   clip 0: 0.976 0.259 0.183    -> its caption first
    #   clip 1: 0.195 0.432 0.913    -> caption 2 beats its caption: rank 1
    #   clip 2: 0.098 0.864 0.365    -> caption 1 beats its caption: rank 1
    # Read down the columns for text->audio: caption 1 prefers clip 2, caption 2 prefers clip 1.
    metrics = retrieval_metrics(audio, text, recall_at=(1, 2))
    assert metrics == pytest.approx(
        {"audio_to_text_r1": 1 / 3, "audio_to_text_r2": 1.0, "text_to_audio_r1": 1 / 3, "text_to_audio_r2": 1.0}
    )
    # Clips 1 and 2 sound alike: retrieving either one's caption is a hit.
    grouped = retrieval_metrics(audio, text, groups=["dog", "cat", "cat"], recall_at=(1,))
    assert grouped == {"audio_to_text_r1": 1.0, "text_to_audio_r1": 1.0}
    # Lists are compared by value, as the `events` column of the synthetic world needs.
    assert (
        retrieval_metrics(audio, text, groups=[["bell"], ["hum", "rain"], ["hum", "rain"]], recall_at=(1,)) == grouped
    )


def test_retrieval_metrics_counts_ties_as_misses_and_checks_shapes():
    collapsed = np.ones((4, 3))
    assert retrieval_metrics(collapsed, collapsed, recall_at=(1, 3)) == {
        "audio_to_text_r1": 0.0,
        "audio_to_text_r3": 0.0,
        "text_to_audio_r1": 0.0,
        "text_to_audio_r3": 0.0,
    }
    # Unnormalised torch inputs give the same answer as normalised numpy ones.
    rng = np.random.default_rng(0)
    audio, text = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    assert retrieval_metrics(torch.tensor(audio * 3), torch.tensor(text)) == retrieval_metrics(audio, text * 7)
    with pytest.raises(ValueError, match="same shape"):
        retrieval_metrics(audio, text[:4])
    with pytest.raises(ValueError, match="groups has 2 labels for 5 pairs"):
        retrieval_metrics(audio, text, groups=[0, 1])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"loss_type": "infonce"}, r"loss_type='infonce' is not one of \['symmetric', 'model'\]"),
        ({"text_column": "audio"}, "must differ"),
        ({"max_audio_seconds": 0.0}, "max_audio_seconds=0.0 must be positive"),
        ({"audio_column": ""}, "audio_column='' must be a non-empty column name"),
        ({"num_train_epochs": -1, "max_steps": -1}, "num_train_epochs=-1 trains nothing"),
        ({"learning_rate": float("inf")}, "learning_rate=inf must be a finite number"),
    ],
)
def test_config_rejects_bad_values(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        config(tmp_path, **overrides)


def test_script_and_model_arguments_need_exactly_one_source():
    with pytest.raises(ValueError, match="exactly one data source"):
        ClapContrastiveScriptArguments()
    with pytest.raises(ValueError, match="exactly one data source"):
        ClapContrastiveScriptArguments(dataset_name="user/data", synthetic_clips=8)
    with pytest.raises(ValueError, match="exactly one model"):
        ClapModelArguments()
    with pytest.raises(ValueError, match="exactly one model"):
        ClapModelArguments(model_name_or_path="laion/clap-htsat-unfused", tiny=True)


def test_trainer_smoke_every_parameter_changes_and_metrics_are_logged(tmp_path, world, held_out, tiny):
    model, processor = tiny
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    args = config(tmp_path, eval_strategy="steps", eval_steps=3, retrieval_group_column="events")
    trainer = ClapContrastiveTrainer(
        model=model, args=args, train_dataset=world, eval_dataset=held_out, processing_class=processor
    )
    trainer.train()

    logs = trainer.state.log_history
    losses = [entry["loss"] for entry in logs if "loss" in entry]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
    assert all(
        "logit_scale_audio" in entry and "batch_audio_to_text_accuracy" in entry for entry in logs if "loss" in entry
    )
    evaluation = next(entry for entry in logs if "eval_loss" in entry)
    for direction in ("audio_to_text", "text_to_audio"):
        for k in (1, 5, 10):
            assert 0.0 <= evaluation[f"eval_{direction}_r{k}"] <= 1.0
    unchanged = [
        name for name, param in model.named_parameters() if param.requires_grad and torch.equal(param, before[name])
    ]
    assert unchanged == []


def test_frozen_text_encoder_stays_put(tmp_path, world, tiny):
    model, processor = tiny
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    trainer = ClapContrastiveTrainer(
        model=model,
        args=config(tmp_path, max_steps=2, freeze_text_encoder=True),
        train_dataset=world,
        processing_class=processor,
    )
    trainer.train()
    for name, param in model.named_parameters():
        changed = not torch.equal(param, before[name])
        assert changed == (not name.startswith("text_model.")), name


def test_bad_datasets_are_refused_with_the_columns_named(tmp_path, world, tiny):
    model, processor = tiny
    args = config(tmp_path)
    with pytest.raises(ValueError, match=r"lacks the columns 'caption' \(text_column\).*it has \['clip_id', 'audio'"):
        ClapContrastiveTrainer(
            model=model, args=args, train_dataset=world.remove_columns("caption"), processing_class=processor
        )
    with pytest.raises(ValueError, match="eval_dataset is empty"):
        ClapContrastiveTrainer(
            model=model, args=args, train_dataset=world, eval_dataset=world.select([]), processing_class=processor
        )
    with pytest.raises(ValueError, match=r"'events' \(retrieval_group_column\)"):
        ClapContrastiveTrainer(
            model=model,
            args=config(tmp_path, retrieval_group_column="events"),
            eval_dataset=world.remove_columns("events"),
            processing_class=processor,
        )
    with pytest.raises(ValueError, match="processing_class"):
        ClapContrastiveTrainer(model=model, args=args, train_dataset=world)


def test_collator_draws_references_in_training_and_uses_the_caption_in_evaluation(world, tiny):
    _, processor = tiny
    rows = [dict(row) for row in world.select(range(4))]
    collator = ClapContrastiveCollator(processor, references_column="references")
    torch.manual_seed(0)
    drawn = [processor.tokenizer.batch_decode(collator(rows)["input_ids"], skip_special_tokens=True) for _ in range(8)]
    for index, row in enumerate(rows):
        captions = {batch[index] for batch in drawn}
        assert captions <= set(row["references"])
        assert len(captions) > 1  # 8 draws from 5 distinct references
    batch = ClapContrastiveCollator(processor, references_column="references", training=False)(rows)
    assert processor.tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True) == [
        r["caption"] for r in rows
    ]
    assert batch["input_features"].shape[0] == 4 and batch["is_longer"].shape == (4, 1)


def test_evaluation_embeddings_are_the_embedders(tmp_path, held_out, tiny):
    model, processor = tiny
    trainer = ClapContrastiveTrainer(model=model, args=config(tmp_path), processing_class=processor)
    audio, text = trainer.predict(held_out).predictions
    embedder = ClapEmbedder(model, processor, show_progress=False)
    from hfpref.data.audio import decode_audio_column

    waveforms, _ = decode_audio_column(held_out, sampling_rate=embedder.sampling_rate)
    np.testing.assert_allclose(audio, embedder.embed_audio(waveforms, sampling_rate=embedder.sampling_rate), atol=1e-5)
    np.testing.assert_allclose(text, embedder.embed_text(list(held_out["caption"])), atol=1e-5)


def test_model_loss_in_transformers_ranks_audio_for_captions_only(tiny, world):
    # Why loss_type="symmetric" is the default: ClapModel's own loss averages two text-to-audio terms. If this
    # starts failing, transformers fixed it; update ClapContrastiveConfig's docstring.
    model, processor = tiny
    batch = ClapContrastiveCollator(processor, training=False)([dict(row) for row in world.select(range(6))])
    with torch.no_grad():
        outputs = model(**batch, return_loss=True)
    labels = torch.arange(6)
    cross_entropy = torch.nn.functional.cross_entropy
    text_to_audio = (
        cross_entropy(outputs.logits_per_text, labels) + cross_entropy(outputs.logits_per_audio.t(), labels)
    ) / 2
    symmetric = (cross_entropy(outputs.logits_per_text, labels) + cross_entropy(outputs.logits_per_audio, labels)) / 2
    assert torch.allclose(outputs.loss, text_to_audio)
    assert not torch.allclose(outputs.loss, symmetric)


def small_clap(texts: list[str], seed: int = 0) -> tuple[ClapModel, ClapProcessor]:
    """A tiny CLAP for 2 s clips: 32 mel bins folded into a 64 x 64 image, 4x cheaper than build_tiny_clap's default."""
    return build_tiny_clap(texts, seed=seed, clip_seconds=2.0, num_mel_bins=32, spec_size=64, text_dropout=0.0)


def event_set_retrieval(trainer: ClapContrastiveTrainer, world) -> tuple[float, float]:
    """Held-out audio->text R@1 where a caption naming the clip's exact set of events counts, and its chance level."""
    audio, text = trainer.predict(world).predictions
    groups = [frozenset(events) for events in world["events"]]
    recall = retrieval_metrics(audio, text, groups=groups, recall_at=(1,))["audio_to_text_r1"]
    # With scores unrelated to the audio, the top caption is a uniform draw: clip i hits with probability
    # (#clips sharing its event set) / N.
    chance = float(np.mean([sum(other == group for other in groups) / len(groups) for group in groups]))
    return recall, chance


def run_learning(tmp_path, max_steps: int) -> dict:
    train, test = make_world(384, seed=0, clip_seconds=2.0), make_world(64, seed=1, clip_seconds=2.0)
    model, processor = small_clap(texts_of(train), seed=0)
    args = config(
        tmp_path,
        max_steps=max_steps,
        per_device_train_batch_size=64,
        per_device_eval_batch_size=64,
        learning_rate=3e-3,
        warmup_steps=10,
        logging_steps=25,
        cache_audio_features=True,
    )
    trainer = ClapContrastiveTrainer(model=model, args=args, train_dataset=train, processing_class=processor)
    before, chance = event_set_retrieval(trainer, test)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    after, _ = event_set_retrieval(trainer, test)
    print(f"held-out event-set R@1: {before:.3f} -> {after:.3f} (chance {chance:.3f}), {seconds:.0f}s")
    return {"before": before, "after": after, "chance": chance}


# Thresholds: 64 held-out clips, a hit when the top caption names the clip's exact set of events. Without learning
# the hits are a sum of independent Bernoulli(p_i) with mean 64 * chance (about 1.8), so 16 or more hits (R@1 >= 0.25)
# has probability below 1e-9. Measured on one CPU thread: 0.08 before training, 0.39 after 300 steps (30 to 40 s of
# training) and 0.61 after 600. The run is deterministic: the same numbers with one or two threads.


def test_tiny_clap_learns_to_retrieve_held_out_captions(tmp_path):
    result = run_learning(tmp_path, max_steps=300)
    assert result["after"] >= 0.25 and result["after"] >= result["before"] + 0.15, result


@pytest.mark.slow
def test_tiny_clap_learns_to_retrieve_held_out_captions_full(tmp_path):
    result = run_learning(tmp_path, max_steps=600)
    assert result["after"] >= 0.45 and result["after"] >= result["before"] + 0.3, result


RECIPE_YAML = """
synthetic_clips: 12
synthetic_eval_clips: 6
synthetic_seed: 3
tiny: true
tiny_projection_dim: 16
output_dir: {output_dir}
max_steps: 2
per_device_train_batch_size: 6
per_device_eval_batch_size: 6
learning_rate: 1.0e-3
logging_steps: 1
eval_strategy: steps
eval_steps: 2
save_strategy: "no"
report_to: none
dataloader_pin_memory: false
disable_tqdm: true
"""


def test_recipe_trains_saves_and_reloads_offline(tmp_path, monkeypatch):
    recipe = load_recipe()
    output_dir = tmp_path / "clap"
    path = tmp_path / "config.yaml"
    path.write_text(RECIPE_YAML.format(output_dir=output_dir))
    monkeypatch.setattr(sys, "argv", ["clap_contrastive.py", "--config", str(path)])
    trainer = recipe.main(*recipe.make_parser().parse_args_and_config())

    assert any("eval_audio_to_text_r1" in entry for entry in trainer.state.log_history)
    model = ClapModel.from_pretrained(str(output_dir))
    processor = ClapProcessor.from_pretrained(str(output_dir))
    assert model.config.projection_dim == 16
    reloaded = {name: param for name, param in model.named_parameters()}
    for name, param in trainer.model.named_parameters():
        torch.testing.assert_close(reloaded[name], param.detach().cpu(), msg=name)
    assert processor.tokenizer.get_vocab() == trainer.processing_class.tokenizer.get_vocab()

    card = ModelCard.load(output_dir / "README.md", ignore_metadata_errors=False)
    assert "More information needed" not in card.text and "2211.06687" in card.text
    assert card.data.pipeline_tag == "zero-shot-audio-classification" and "base_model" not in card.data.to_dict()
    assert {r.metric_type for r in card.data.eval_results} >= {"audio_to_text_r1", "text_to_audio_r1"}
    assert 'ClapModel.from_pretrained("clap")' in card.text

    path.write_text(RECIPE_YAML.format(output_dir=output_dir) + "learning_rat: 0.1\n")
    with pytest.raises(ValueError, match="learning_rat"):
        recipe.make_parser().parse_args_and_config()


def test_the_recipe_configs_exist():
    assert {path.name for path in CLAP_CONFIGS} >= {"config_synthetic.yaml", "config_laion_adapt.yaml"}


@pytest.mark.parametrize("path", CLAP_CONFIGS, ids=lambda path: path.name)
def test_recipe_config_parses(path, tmp_path, monkeypatch):
    assert isinstance(yaml.safe_load(path.read_text()), dict)
    monkeypatch.chdir(tmp_path)
    script_args, training_args, model_args = (
        load_recipe().make_parser().parse_args_and_config(args=["--config", str(path)])
    )
    assert isinstance(training_args, ClapContrastiveConfig)
    assert (script_args.synthetic_clips > 0) == model_args.tiny


# Hard negatives (T-CLAP): each clip's own wrong captions in its audio-to-text softmax.


@pytest.fixture(scope="module")
def world12():
    return make_world(12, seed=0, clip_seconds=1.0)


@pytest.fixture
def tiny12(world12):
    texts = [text for references in world12["references"] for text in references]
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


def test_trainer_loss_lines_the_negatives_up_with_their_clips(tmp_path, world12, tiny12):
    model, processor = tiny12
    rows = world12.select(range(3))
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


def test_collator_draws_synthetic_hard_negatives_of_distinct_kinds_afresh(world12, tiny12):
    _, processor = tiny12
    rows = [dict(row) for row in world12.select(range(6))]
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


def test_training_with_synthetic_hard_negatives_logs_their_accuracy(tmp_path, world12, tiny12):
    model, processor = tiny12
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    args = config(tmp_path, synthetic_hard_negatives=4, max_steps=2)
    trainer = ClapContrastiveTrainer(model=model, args=args, train_dataset=world12, processing_class=processor)
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


def test_missing_hard_negative_columns_are_named(tmp_path, world12, tiny12):
    model, processor = tiny12
    with pytest.raises(ValueError, match=r"synthetic_hard_negatives=2 draws hard negatives from the column 'events'"):
        ClapContrastiveTrainer(
            model=model,
            args=config(tmp_path, synthetic_hard_negatives=2),
            train_dataset=world12.remove_columns("events"),
            processing_class=processor,
        )
    with pytest.raises(ValueError, match=r"lacks the column 'negatives' \(hard_negatives_column\)"):
        ClapContrastiveTrainer(
            model=model,
            args=config(tmp_path, hard_negatives_column="negatives"),
            train_dataset=world12,
            processing_class=processor,
        )
    with pytest.raises(ValueError, match=r"'negatives' \(hard_negatives_column\) must hold lists of strings"):
        ClapContrastiveTrainer(
            model=model,
            args=config(tmp_path, hard_negatives_column="negatives"),
            train_dataset=world12.add_column("negatives", ["not a list"] * len(world12)),
            processing_class=processor,
        )
