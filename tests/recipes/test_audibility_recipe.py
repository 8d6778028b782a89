import functools
import sys
from pathlib import Path

import pytest
import yaml
from recipe_helpers import load_recipe
from trl import TrlParser

from hfpref.metrics.audibility import AudibilityClassifier
from hfpref.scripts.utils import AudibilityModelArguments, AudibilityScriptArguments
from hfpref.trainers.audibility_classifier.audibility_classifier_config import AudibilityClassifierConfig


RECIPES = Path(__file__).resolve().parents[2] / "recipes"

_recipe = functools.partial(load_recipe, "audibility_classifier")


def _parse(argv):
    parser = TrlParser((AudibilityScriptArguments, AudibilityClassifierConfig, AudibilityModelArguments))
    return parser.parse_args_and_config(argv)


def test_distilbert_config_has_the_paper_settings():
    _, args, model_args = _parse(["--config", str(RECIPES / "audibility_classifier/config_distilbert.yaml")])
    assert (args.optim, args.per_device_train_batch_size, args.learning_rate) == ("adamw_torch", 64, 3e-4)
    assert (args.num_train_epochs, args.lr_decay_every_epochs, args.lr_decay_factor) == (40, 10, 0.1)
    assert model_args.model_name_or_path == "distilbert-base-uncased" and not model_args.tiny_classifier


def test_tiny_config_parses():
    script_args, _, model_args = _parse(["--config", str(RECIPES / "audibility_classifier/config_tiny.yaml")])
    assert model_args.tiny_classifier and script_args.dataset_name is None


def _fixture_yaml(tmp_path, **overrides):
    config = {
        "tiny_classifier": True,
        "max_length": 24,
        "per_device_train_batch_size": 32,
        "learning_rate": 3e-3,
        "num_train_epochs": 6,
        "lr_decay_every_epochs": 4,
        "output_dir": str(tmp_path / "out"),
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        **overrides,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_recipe_trains_on_the_seed_set_and_beats_chance(tmp_path, monkeypatch, one_thread):
    path = _fixture_yaml(tmp_path)
    monkeypatch.setattr(sys, "argv", ["audibility_classifier.py", "--config", str(path)])
    trainer, metrics = _recipe().main(*_parse(sys.argv[1:]))
    out = tmp_path / "out"
    assert (out / "model.safetensors").is_file()
    card = (out / "README.md").read_text()
    assert "audibility" in card and "eval_accuracy" in card and "2501.03183" in card
    # 60 balanced held-out sentences: 0.65 is more than 2 standard errors (0.065) above chance.
    assert metrics["eval_accuracy"] >= 0.65, metrics
    learning_rates = [log["learning_rate"] for log in trainer.state.log_history if "learning_rate" in log]
    assert max(learning_rates) == pytest.approx(3e-3) and min(learning_rates) == pytest.approx(3e-4)
    classifier = AudibilityClassifier.from_pretrained(str(out))
    assert len(classifier(["A dog barks loudly.", "The wall is green."])) == 2


def test_recipe_reads_a_data_file(tmp_path, monkeypatch, one_thread):
    data = tmp_path / "aud.csv"
    rows = [f"A bell rings {i} times.,audible" for i in range(10)] + [
        f"The box weighs {i} kilos.,0" for i in range(10)
    ]
    data.write_text("sentence,label\n" + "\n".join(rows) + "\n")
    path = _fixture_yaml(tmp_path, dataset_name=str(data), num_train_epochs=1, test_size=0.5)
    _, metrics = _recipe().main(*_parse(["--config", str(path)]))
    assert metrics["eval_runtime"] >= 0 and 0.0 <= metrics["eval_accuracy"] <= 1.0


def test_unknown_yaml_key_is_fatal(tmp_path):
    path = _fixture_yaml(tmp_path, lr_decay_evry_epochs=5)
    with pytest.raises(ValueError, match="lr_decay_evry_epochs"):
        _parse(["--config", str(path)])
