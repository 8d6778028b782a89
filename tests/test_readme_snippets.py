"""The README's Python snippets run as written, each in a fresh process from the repository root.

A snippet is skipped only for a reason named here: it loads a model from the Hub (tests are offline), or it reads
the outputs of an earlier training run (`outputs/...`). Every other snippet must run.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
HUB_ID = re.compile(r"""from_pretrained\(\s*["'](?![./~])[\w.-]+/[\w.-]+["']""")
RUN_OUTPUTS = re.compile(r"""["']outputs/""")


def readme_snippets() -> list[tuple[int, str]]:
    text = (ROOT / "README.md").read_text()
    return [(text[: m.start()].count("\n") + 1, m.group(1)) for m in re.finditer(r"```python\n(.*?)```", text, re.S)]


def why_skipped(code: str) -> str | None:
    if RUN_OUTPUTS.search(code):
        return "reads the outputs of an earlier run"
    if HUB_ID.search(code):
        return "loads a model from the Hub"
    return None


SNIPPETS = readme_snippets()


def test_the_readme_has_snippets_that_run_here():
    runnable = [line for line, code in SNIPPETS if why_skipped(code) is None]
    assert len(SNIPPETS) >= 5 and runnable, SNIPPETS


@pytest.mark.parametrize("line, code", SNIPPETS, ids=[f"README.md:{line}" for line, _ in SNIPPETS])
def test_readme_snippet_runs(line, code, tmp_path, request):
    reason = why_skipped(code)
    if reason:
        pytest.skip(f"README.md:{line} {reason}")
    if "shared/data/fense" in code:
        request.getfixturevalue("fense_dir")  # skips without ../shared
    # Run where the README's relative paths hold (../shared beside the repository), but write into a scratch
    # folder, not the checkout.
    cwd = tmp_path / "checkout"
    cwd.mkdir()
    (tmp_path / "shared").symlink_to(ROOT.parent / "shared")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    script = tmp_path / "snippet.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, str(script)], cwd=cwd, capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, f"README.md:{line}\n{code}\n{result.stderr[-3000:]}"
