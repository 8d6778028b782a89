import subprocess
import sys
import zipfile
from importlib.resources import files
from pathlib import Path

import pytest
import tomllib


ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {"hfpref.hub_cards"} | {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "hfpref").rglob("__init__.py")
    }
    assert listed == on_disk


def test_installed_package_reads_its_card_templates():
    names = {p.name for p in files("hfpref.hub_cards").iterdir()}
    assert {"dataset_card.md", "model_card.md", "reward_model_card.md"} <= names
    text = (files("hfpref.hub_cards") / "dataset_card.md").read_text()
    assert "{{" in text  # a Jinja template, not a rendered card


def test_top_level_layout():
    for name in ["pyproject.toml", "hfpref", "recipes", "tests", "hub_cards", "README.md", "Makefile", "bench"]:
        assert (ROOT / name).exists(), name
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make quickstart" in readme and "make test" in readme


def test_wheel_ships_hub_cards(tmp_path):
    pytest.importorskip("setuptools")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("hfpref-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for template in ["dataset_card.md", "model_card.md", "reward_model_card.md"]:
        assert f"hfpref/hub_cards/{template}" in names
    assert not any(name.startswith(("tests/", "recipes/", "bench/")) for name in names)
