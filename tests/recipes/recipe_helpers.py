"""What the recipe tests share: load a recipe script by its path, and write a YAML config for `--config`."""

import importlib.util
from pathlib import Path

import yaml


RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def load_recipe(name: str):
    """`recipes/<name>.py` as a module (recipes are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"{name}_recipe", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def yaml_args(path: Path, **config) -> list[str]:
    """Write `config` to `path` as YAML; returns the `--config` arguments that read it."""
    path.write_text(yaml.safe_dump(config))
    return ["--config", str(path)]
