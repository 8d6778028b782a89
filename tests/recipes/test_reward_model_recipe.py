import functools
import sys
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard
from recipe_helpers import load_recipe
from transformers import AutoModel
from trl import TrlParser

from hfpref.rewards import CLAPRewardModel
from hfpref.scripts.utils import RewardHeadArguments, RewardScriptArguments
from hfpref.trainers import RewardModelConfig


RECIPES = Path(__file__).resolve().parents[2] / "recipes"

_recipe = functools.partial(load_recipe, "reward_model")


def _parse(argv):
    return TrlParser((RewardScriptArguments, RewardModelConfig, RewardHeadArguments)).parse_args_and_config(argv)


@pytest.mark.parametrize(
    "config",
    [
        "reward_model/config_fense_bt.yaml",
        "reward_model/config_fense_features.yaml",
        "reward_model/config_binary_bce.yaml",
    ],
)
def test_shipped_configs_parse(config):
    script_args, training_args, head_args = _parse(["--config", str(RECIPES / config)])
    assert training_args.loss_type in ("bt", "bce")
    assert head_args.hidden_sizes == [512, 128]


def test_fense_config_has_the_paper_settings():
    path = RECIPES / "reward_model/config_fense_bt.yaml"
    _, training_args, _ = _parse(["--config", str(path)])
    assert (training_args.num_train_epochs, training_args.per_device_train_batch_size) == (70, 64)
    assert (training_args.l2_coef, training_args.bt_scale) == (0.1, 10.0)
    # The Trainer's hidden defaults are written out in the file, not inherited silently.
    written = yaml.safe_load(path.read_text())
    hidden = {"optim", "weight_decay", "lr_scheduler_type", "warmup_steps", "max_grad_norm", "adam_beta1"}
    assert hidden <= set(written)
    assert (training_args.lr_scheduler_type, training_args.max_grad_norm, training_args.weight_decay) == (
        "linear",
        1.0,
        0.0,
    )


def test_features_config_trains_on_one_set_and_evaluates_on_another():
    script_args, _, _ = _parse(["--config", str(RECIPES / "reward_model/config_fense_features.yaml")])
    assert script_args.embedding_dim == 384 and script_args.named_eval_datasets() == {
        "clotho": "data/fense-features/clotho_eval"
    }


def _fixture_yaml(tmp_path, tiny_clap_dir, **overrides):
    config = {
        "synthetic_clips": 24,
        "synthetic_negatives": True,
        "clap_model_name_or_path": str(tiny_clap_dir),
        "loss_type": "bt",
        "num_train_epochs": 2,
        "per_device_train_batch_size": 16,
        "hidden_sizes": [32, 8],
        "output_dir": str(tmp_path / "out"),
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        **overrides,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("loss_type", ["bt", "bce"])
def test_recipe_main_runs_from_yaml(tmp_path, tiny_clap_dir, monkeypatch, loss_type):
    path = _fixture_yaml(tmp_path, tiny_clap_dir, loss_type=loss_type, l2_coef=0.1 if loss_type == "bt" else 0.0)
    monkeypatch.setattr(sys, "argv", ["reward_model.py", "--config", str(path)])
    trainer, metrics = _recipe().main(*_parse(sys.argv[1:]))
    out = tmp_path / "out"
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0
    assert any(p.suffix == ".vec" for p in (out / "embedding-cache").rglob("*"))  # embeddings went through the cache
    model = AutoModel.from_pretrained(out)
    assert isinstance(model, CLAPRewardModel)
    assert model.config.clap_checkpoint == str(tiny_clap_dir) and model.config.clap_fingerprint
    card = ModelCard.load(out / "README.md", ignore_metadata_errors=False)
    assert "base_model" not in card.data.to_dict() and "huggingface.co//" not in card.text
    assert str(tiny_clap_dir) not in card.content  # the card names the CLAP as the config does: relative
    assert {r.metric_type: r.metric_value for r in card.data.eval_results}["accuracy"] == round(
        metrics["eval_accuracy"], 4
    )


def test_saved_reward_model_and_card_work_in_a_fresh_process(tmp_path, tiny_clap_dir):
    """What a user gets: `import hfpref` then AutoModel loads it; huggingface_hub alone parses its card."""
    import os
    import shutil
    import subprocess

    run = tmp_path / "run"
    shutil.copytree(tiny_clap_dir, run / "clap")
    path = _fixture_yaml(tmp_path, run / "clap", num_train_epochs=1, output_dir=str(run / "out"))
    _recipe().main(*_parse(["--config", str(path)]))
    # Move the reward model and its CLAP together: the relative reference still finds the CLAP.
    moved = tmp_path / "moved"
    shutil.move(run, moved)
    code = f"""
import hfpref, numpy as np
from huggingface_hub import ModelCard
from transformers import AutoModel
card = ModelCard.load({str(moved / "out" / "README.md")!r}, ignore_metadata_errors=False)
assert card.data.eval_results and not card.data.base_model, card.data
model = AutoModel.from_pretrained({str(moved / "out")!r})
print(type(model).__name__, model.config.clap_checkpoint)
print(len(model.score([np.zeros(16000, dtype=np.float32)], ["a dog barks"])))
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["CLAPRewardModel", str(moved / "clap"), "1"]


def test_unknown_yaml_key_is_fatal(tmp_path, tiny_clap_dir):
    path = _fixture_yaml(tmp_path, tiny_clap_dir, bt_scael=5.0)
    with pytest.raises(ValueError, match="bt_scael"):
        _parse(["--config", str(path)])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"bt_scale": float("inf")}, "bt_scale=inf must be a finite positive number"),
        ({"bt_scale": float("nan")}, "bt_scale=nan must be a finite positive number"),
        ({"l2_coef": float("inf")}, "l2_coef=inf must be a finite number"),
        ({"num_train_epochs": -1}, "num_train_epochs=-1 trains nothing"),
        ({"num_train_epochs": 0}, "num_train_epochs=0 trains nothing"),
        ({"learning_rate": float("nan")}, "learning_rate=nan must be a finite number"),
        ({"learning_rate": 0.0}, "learning_rate=0.0 must be positive"),
        ({"hidden_sizes": 512}, "hidden_sizes=512 must be a list"),
        ({"hidden_sizes": [64, 0]}, "must list positive widths"),
        ({"hidden_sizes": [64.5]}, "64.5 is not an integer"),
        ({"dropout": 1.0}, "dropout=1.0 must lie in"),
        ({"reward_clamp": [0.9, 0.1]}, "reward_clamp"),
    ],
)
def test_broken_configs_stop_at_parse_time(tmp_path, tiny_clap_dir, override, message):
    path = _fixture_yaml(tmp_path, tiny_clap_dir, **override)
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        _parse(["--config", str(path)])


def test_list_options_written_as_strings_and_resume_words_are_understood(tmp_path, tiny_clap_dir):
    head_args = RewardHeadArguments(hidden_sizes="32, 8", reward_clamp="[0.05, 0.95]")
    assert head_args.hidden_sizes == [32, 8] and head_args.reward_clamp == [0.05, 0.95]
    with pytest.raises(ValueError, match="hidden_sizes='512,x' is not a list of numbers"):
        RewardHeadArguments(hidden_sizes="512,x")
    path = _fixture_yaml(tmp_path, tiny_clap_dir)
    _, training_args, _ = _parse(["--config", str(path), "--resume_from_checkpoint", "true"])
    assert training_args.resume_from_checkpoint is True
    _, training_args, _ = _parse(["--config", str(path), "--resume_from_checkpoint", "false"])
    assert training_args.resume_from_checkpoint is None
    _, training_args, _ = _parse(["--config", str(path), "--resume_from_checkpoint", str(tmp_path / "checkpoint-4")])
    assert training_args.resume_from_checkpoint == str(tmp_path / "checkpoint-4")


def test_a_diverged_run_is_not_saved(tmp_path, tiny_clap_dir):
    from hfpref.utils.checks import NonFiniteModelError

    # A finite but absurd learning rate drives the head to inf, then NaN, within a few steps.
    path = _fixture_yaml(tmp_path, tiny_clap_dir, learning_rate=1e30, max_grad_norm=0.0, l2_coef=0.0)
    with pytest.raises(NonFiniteModelError, match="not saving it"):
        _recipe().main(*_parse(["--config", str(path)]))
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_init_from_a_reward_model_of_another_clap_is_refused(tmp_path, tiny_clap_dir):
    from hfpref.rewards import ClapMismatchError, CLAPRewardConfig

    other = CLAPRewardModel(CLAPRewardConfig(embedding_dim=32, hidden_sizes=[8], clap_fingerprint="0" * 32))
    other.save_pretrained(tmp_path / "old-rm")
    path = _fixture_yaml(tmp_path, tiny_clap_dir, init_from=str(tmp_path / "old-rm"), synthetic_clips=8)
    with pytest.raises(ClapMismatchError, match="0" * 32):
        _recipe().main(*_parse(["--config", str(path)]))


def test_a_stage_config_run_alone_names_the_stage_to_run_first(tmp_path, tiny_clap_dir):
    """A quickstart stage config run before its upstream stages: the error says which stage writes what is missing."""
    out = tmp_path / "quickstart"  # nothing has run yet
    path = _fixture_yaml(tmp_path, tiny_clap_dir, clap_model_name_or_path=str(out / "clap"))
    with pytest.raises(
        FileNotFoundError, match=r"quickstart/clap does not exist.*stage 'clap' \(2 of 8\).*config_small"
    ):
        _recipe().main(*_parse(["--config", str(path)]))

    path = _fixture_yaml(tmp_path, tiny_clap_dir, synthetic_clips=None, dataset_name=str(out / "preferences"))
    with pytest.raises(FileNotFoundError, match=r"stage 'preferences' \(4 of 8\).*hfpref quickstart --output-dir"):
        _recipe().main(*_parse(["--config", str(path)]))

    (out / "stages").mkdir(parents=True)  # a quickstart output folder whose reward stage has not run
    with pytest.raises(FileNotFoundError, match=r"the reward model .*reward-model does not exist.*stage 'reward'"):
        CLAPRewardModel.from_pretrained(str(out / "reward-model"))
    with pytest.raises(FileNotFoundError, match=r"the reward model .*elsewhere/rm does not exist \(a local path"):
        CLAPRewardModel.from_pretrained(str(tmp_path / "elsewhere" / "rm"))

    # After a multi-seed quickstart (`--seeds 0 1`) each seed's outputs are under seed-<k>/: the error names them.
    multi = tmp_path / "multi"
    for seed in (0, 1):
        (multi / f"seed-{seed}" / "clap").mkdir(parents=True)
    path = _fixture_yaml(tmp_path, tiny_clap_dir, clap_model_name_or_path=str(multi / "clap"))
    with pytest.raises(FileNotFoundError, match=r"multi-seed quickstart.*seed-0/clap, .*seed-1/clap"):
        _recipe().main(*_parse(["--config", str(path)]))


def _feature_pairs(path, n, dim, seed):
    """Pairs of precomputed 24-d features of a non-CLAP encoder: chosen lies near the audio vector."""
    import numpy as np
    from datasets import Dataset

    rng = np.random.default_rng(seed)
    audio = rng.normal(size=(n, dim)).astype("float32")
    Dataset.from_dict(
        {
            "clip_id": [f"clip-{seed}-{i // 2}" for i in range(n)],
            "audio_embedding": audio.tolist(),
            "chosen_embedding": (audio + 0.3 * rng.normal(size=(n, dim))).astype("float32").tolist(),
            "rejected_embedding": rng.normal(size=(n, dim)).astype("float32").tolist(),
        }
    ).save_to_disk(str(path))
    return str(path)


def test_precomputed_features_train_without_a_clap_and_named_eval_sets(tmp_path, monkeypatch):
    import hfpref.scripts.reward_model as script

    monkeypatch.setattr(script.ClapEmbedder, "from_pretrained", None)  # any embedding attempt would fail loudly
    train = _feature_pairs(tmp_path / "audiocaps", 160, 24, seed=0)
    clotho, other = _feature_pairs(tmp_path / "clotho", 40, 24, seed=1), _feature_pairs(tmp_path / "o", 20, 24, seed=2)
    path = _fixture_yaml(
        tmp_path,
        "laion/clap-htsat-unfused",  # never loaded: the data carries its features
        synthetic_clips=None,
        synthetic_negatives=False,
        dataset_name=train,
        embedding_dim=24,
        embeddings_from=None,
        eval_datasets=[f"clotho={clotho}", f"other={other}"],
        num_train_epochs=20,
        learning_rate=1e-2,
        eval_strategy="epoch",
    )
    trainer, metrics = _recipe().main(*_parse(["--config", str(path)]))
    assert len(trainer.train_dataset) == 160  # the whole training source, no held-out split
    assert {"eval_clotho_accuracy", "eval_other_accuracy"} <= set(metrics)
    assert metrics["eval_clotho_accuracy"] >= 0.8  # the planted preference is learnt and carries over
    model = CLAPRewardModel.from_pretrained(tmp_path / "out")
    assert model.config.embedding_dim == 24 and model.config.clap_checkpoint is None
    card = ModelCard.load(tmp_path / "out" / "README.md", ignore_metadata_errors=False)
    # Each named set's results under its own data (not under the training data), named without the set's prefix.
    by_set = {(r.dataset_name, r.metric_type) for r in card.data.eval_results}
    assert {(Path(clotho).name, "accuracy"), (Path(other).name, "accuracy")} <= by_set
    assert not any(name.startswith(("clotho_", "other_")) for _, name in by_set)

    wrong = _fixture_yaml(
        tmp_path, "laion/clap-htsat-unfused", synthetic_clips=None, dataset_name=train, embedding_dim=32
    )
    with pytest.raises(ValueError, match=r"synthetic_negatives embeds other clips' captions"):
        _recipe().main(*_parse(["--config", str(wrong)]))
    wrong = _fixture_yaml(
        tmp_path,
        "laion/clap-htsat-unfused",
        synthetic_clips=None,
        synthetic_negatives=False,
        dataset_name=train,
        embedding_dim=32,
    )
    with pytest.raises(ValueError, match=r"embedding_dim=32, but the precomputed audio_embedding is 24-d"):
        _recipe().main(*_parse(["--config", str(wrong)]))


def test_eval_datasets_entries_are_checked():
    with pytest.raises(ValueError, match=r"'clotho' is not name=source"):
        RewardScriptArguments(synthetic_clips=4, eval_datasets=["clotho"])
    with pytest.raises(ValueError, match="names 'a' twice"):
        RewardScriptArguments(synthetic_clips=4, eval_datasets=["a=x", "a=y"])
    assert RewardScriptArguments(synthetic_clips=4, eval_datasets=["c=d/e"]).named_eval_datasets() == {"c": "d/e"}
