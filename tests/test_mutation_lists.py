"""The mutation lists of `make mutation` stay in step with the code: each mutant applies once, compiles, and names tests that exist."""

import importlib.util
import re
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]


def _runner():
    spec = importlib.util.spec_from_file_location("mutation_run", ROOT / "mutation" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RUNNER = _runner()
MUTANTS = RUNNER.load_mutants(sorted(RUNNER.MUTANTS_DIR.glob("*.toml")))


def test_at_least_forty_mutants_over_trainers_rewards_and_metrics():
    assert len(MUTANTS) >= 40
    areas = {m.file.split("/")[1] for m in MUTANTS}
    assert {"trainers", "rewards", "metrics"} <= areas


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_mutant_applies_once_compiles_and_names_existing_tests(mutant):
    mutated = RUNNER.check_mutant(mutant)  # raises SystemExit when `find` is not exactly once or it does not compile
    assert mutated != (ROOT / mutant.file).read_text()
    for test in mutant.tests:
        path, _, node = test.partition("::")
        if path.startswith("hfpref/"):  # a doctest: hfpref/x.py::hfpref.x.function
            assert node.rsplit(".", 1)[-1] in (ROOT / path).read_text(), test
            continue
        function = re.sub(r"\[.*\]$", "", node.split("::")[-1])
        assert re.search(rf"def {re.escape(function)}\(", (ROOT / path).read_text()), f"{test}: no such test function"


@pytest.mark.parametrize(
    "find, replace, error",
    [
        ("this text is not in the file", "x", "occurs 0 times"),
        ("def l2_penalty(", "def l2_penalty((", "does not compile"),
    ],
    ids=["drifted", "syntax-error"],
)
def test_a_broken_mutant_is_an_error_not_a_survivor(find, replace, error):
    mutant = RUNNER.Mutant(
        name="broken",
        file="hfpref/rewards/losses.py",
        find=find,
        replace=replace,
        why="broken",
        tests=["tests/rewards/test_losses.py"],
        source="test",
    )
    with pytest.raises(SystemExit, match=error):
        RUNNER.check_mutant(mutant)
