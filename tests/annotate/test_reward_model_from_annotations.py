"""The loop the app closes: annotate -> export -> `recipes/reward_model.py`, unchanged, trains on the export."""

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import yaml
from datasets import load_from_disk
from transformers import AutoModel
from trl import TrlParser

from hfpref.annotate.app import AnnotationApp
from hfpref.annotate.export import export_annotations
from hfpref.annotate.items import load_items
from hfpref.annotate.storage import Session
from hfpref.data.audio import decode_audio
from hfpref.data.reward_data import load_reward_splits
from hfpref.data.synthetic.audio_world import make_world
from hfpref.data.tta_feedback import write_feedback_skeleton
from hfpref.judges.oracle import make_oracle_preferences, oracle_prefers, oracle_score
from hfpref.rewards import CLAPRewardModel
from hfpref.scripts.utils import RewardHeadArguments, RewardScriptArguments
from hfpref.trainers import RewardModelConfig


RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "reward_model.py"
ANNOTATORS = ("ann_a", "ann_b", "ann_c")
FLIP = 0.15  # each simulated annotator answers against the oracle this often


def _recipe_main():
    spec = importlib.util.spec_from_file_location("reward_model_recipe", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _session(folder, items_path, task):
    items, counts = load_items(items_path, task)
    return Session.create(folder, {"task": task, "items": str(items_path), "seed": 0, **counts}, items)


def _pairwise_answers(app, world, rng):
    """Oracle annotators with noise: they prefer the caption the oracle scores higher, and correct both-fail pairs."""
    events = dict(zip(world["clip_id"], world["events"]))
    truth = dict(zip(world["clip_id"], world["caption"]))
    for annotator in ANNOTATORS:
        for item in app.items:
            clip = item["clip_id"]
            scores = [oracle_score(item[f"caption_{k}"], events[clip]) for k in (1, 2)]
            if max(scores) < 0.8 and rng.random() < 0.5:
                choice, correction = "both_wrong", truth[clip]
            else:
                preference = oracle_prefers(item["caption_1"], item["caption_2"], events[clip])
                if rng.random() < FLIP:
                    preference = -preference or 1
                shown = app.shown_order(annotator, item["item_id"])
                choice = "tie" if preference == 0 else "AB"[shown.index("1" if preference > 0 else "2")]
                correction = None
            app.answer(
                {
                    "annotator": annotator,
                    "item_id": item["item_id"],
                    "choice": choice,
                    "correction": correction,
                    "answer_id": f"{annotator}-{item['item_id']}",
                }
            )


def _run_recipe(tmp_path, tiny_clap_dir, monkeypatch, **config):
    config = {
        "clap_model_name_or_path": str(tiny_clap_dir),
        "num_train_epochs": 3,
        "per_device_train_batch_size": 16,
        "hidden_sizes": [32, 8],
        "logging_steps": 1,
        "output_dir": str(tmp_path / "reward-model"),
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        **config,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setattr(sys, "argv", ["reward_model.py", "--config", str(path)])
    parser = TrlParser((RewardScriptArguments, RewardModelConfig, RewardHeadArguments))
    trainer, metrics = _recipe_main()(*parser.parse_args_and_config(sys.argv[1:]))
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses and all(math.isfinite(loss) for loss in losses)
    model = AutoModel.from_pretrained(tmp_path / "reward-model")
    assert isinstance(model, CLAPRewardModel) and model.config.clap_checkpoint == str(tiny_clap_dir)
    return metrics


def test_pairwise_annotations_train_a_bradley_terry_reward_model(tmp_path, tiny_clap_dir, monkeypatch):
    world = make_world(16, seed=5, clip_seconds=1.0)
    make_oracle_preferences(world, seed=0, pairs_per_clip=2).save_to_disk(str(tmp_path / "pairs"))
    session = _session(tmp_path / "session", tmp_path / "pairs", "pairwise")
    _pairwise_answers(AnnotationApp(session), world, np.random.default_rng(0))
    dataset, stats = export_annotations(session.output_dir)
    assert stats["human"] > 0 and stats["answers"] == 3 * len(session.items)

    metrics = _run_recipe(
        tmp_path, tiny_clap_dir, monkeypatch, dataset_name=str(session.output_dir / "dataset"), loss_type="bt"
    )
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0
    assert len(load_from_disk(str(session.output_dir / "dataset"))) == len(dataset)


def test_binary_annotations_train_a_bce_reward_model(tmp_path, tiny_clap_dir, monkeypatch):
    world = make_world(16, seed=6, clip_seconds=1.0)
    rng = np.random.default_rng(1)
    captions = list(world["caption"])
    # BATON-style items: each clip with its true caption and with another clip's, as tta-generate lays them out
    prompts = [text for i, c in enumerate(captions) for text in (c, captions[(i + 1) % len(captions)])]
    clips = [[decode_audio(world[i // 2]["audio"], 16000)] for i in range(len(prompts))]
    write_feedback_skeleton(prompts, clips, tmp_path / "tta", sampling_rate=16000)
    session = _session(tmp_path / "session", tmp_path / "tta", "binary")
    app = AnnotationApp(session)
    for annotator in ANNOTATORS:
        for row, item in enumerate(app.items):
            matches = row % 2 == 0  # even rows hold the clip's own caption
            choice = "match" if matches != (rng.random() < FLIP) else "mismatch"
            payload = {"annotator": annotator, "item_id": item["item_id"], "choice": choice}
            app.answer({**payload, "answer_id": f"{annotator}-row-{row:04d}"})
    dataset, stats = export_annotations(session.output_dir)
    assert set(dataset["label"]) == {0, 1} and stats["human"] == len(dataset)

    metrics = _run_recipe(
        tmp_path,
        tiny_clap_dir,
        monkeypatch,
        dataset_name=str(session.output_dir / "dataset"),
        loss_type="bce",
        text_column="prompt",
        l2_coef=0.0,
    )
    assert math.isfinite(metrics["eval_loss"])


def test_the_export_splits_by_clip_as_the_recipe_reads_it(tmp_path):
    world = make_world(4, seed=7, clip_seconds=1.0)
    make_oracle_preferences(world, seed=0, pairs_per_clip=1).save_to_disk(str(tmp_path / "pairs"))
    session = _session(tmp_path / "session", tmp_path / "pairs", "pairwise")
    _pairwise_answers(AnnotationApp(session), world, np.random.default_rng(2))
    export_annotations(session.output_dir)
    args = RewardScriptArguments(dataset_name=str(session.output_dir / "dataset"))
    splits = load_reward_splits(args, pairwise=True)
    clips = [set(splits[name]["clip_id"]) for name in ("train", "test")]
    assert clips[0] and clips[1] and not clips[0] & clips[1]  # split by clip
