from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import ClusterConfig


RECIPES = Path(__file__).resolve().parents[1] / "recipes"
ACCELERATE_CONFIGS = sorted((RECIPES / "accelerate_configs").glob("*.yaml"))


def test_the_accelerate_configs_the_style_guide_names_exist():
    assert {p.stem for p in ACCELERATE_CONFIGS} >= {"cpu", "ddp", "zero2", "zero3", "fsdp"}


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_loads(path):
    config = ClusterConfig.from_yaml_file(str(path))
    assert config.num_processes >= 1
    assert isinstance(yaml.safe_load(path.read_text()), dict)
