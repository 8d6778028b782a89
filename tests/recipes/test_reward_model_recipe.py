import importlib.util
import sys
from pathlib import Path

import pytest
import yaml
from transformers import AutoModel
from trl import TrlParser

from hfpref.rewards import CLAPRewardModel
from hfpref.trainers import RewardModelConfig
from hfpref.trainers.reward_model_config import RewardHeadArguments, RewardScriptArguments


RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def _recipe():
    spec = importlib.util.spec_from_file_location("reward_model_recipe", RECIPES / "reward_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _parse(argv):
    return TrlParser((RewardScriptArguments, RewardModelConfig, RewardHeadArguments)).parse_args_and_config(argv)


@pytest.mark.parametrize(
    "config", ["captioning/reward/config_fense_bt.yaml", "text_to_audio/reward/config_binary_bce.yaml"]
)
def test_shipped_configs_parse(config):
    script_args, training_args, head_args = _parse(["--config", str(RECIPES / config)])
    assert training_args.loss_type in ("bt", "bce")
    assert head_args.hidden_sizes == [512, 128]


def test_fense_config_has_the_paper_settings():
    _, training_args, _ = _parse(["--config", str(RECIPES / "captioning/reward/config_fense_bt.yaml")])
    assert (training_args.num_train_epochs, training_args.per_device_train_batch_size) == (70, 64)
    assert (training_args.l2_coef, training_args.bt_scale) == (0.1, 10.0)


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
    assert any(p.suffix == ".npy" for p in (out / "embedding-cache").rglob("*"))  # embeddings went through the cache
    model = AutoModel.from_pretrained(out)
    assert isinstance(model, CLAPRewardModel)
    assert model.config.clap_checkpoint == str(tiny_clap_dir) and model.config.clap_fingerprint


def test_unknown_yaml_key_is_fatal(tmp_path, tiny_clap_dir):
    path = _fixture_yaml(tmp_path, tiny_clap_dir, bt_scael=5.0)
    with pytest.raises(ValueError, match="bt_scael"):
        _parse(["--config", str(path)])
