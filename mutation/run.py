"""
`make mutation`: plant realistic one-line bugs in the core lines of hfpref's trainers, rewards and metrics, one at a
time, and check that the tests covering each mutated line fail.

Each mutant is a table in `mutation/mutants/*.toml`:

```toml
[[mutant]]
name = "reward_model.bt_scale_ignored"                       # unique
file = "hfpref/trainers/reward_model/reward_model_trainer.py"
find = "scale=self.args.bt_scale"                            # must occur exactly once in `file`
replace = "scale=10.0"
why = "the trainer ignores the configured Bradley-Terry scale"
tests = ["tests/trainers/test_reward_model_trainer.py::test_bt_scale_reaches_the_loss"]
```

The runner copies the working tree into `.mutation/run-<pid>/worker-<i>` (one copy per worker, so mutants never touch the
checkout), runs the union of the listed tests there once unmutated (they must pass), then for each mutant writes the
mutated file, runs only its tests and restores the file. A mutant is killed when its tests fail (or time out).
`find` must occur exactly once and the mutated file must still compile: a list that drifts from the code is an error,
not a survivor or a kill. It ends with `RATIO mutation_score=<killed / total>` and exits 1 below `--fail-under`.
"""

import argparse
import atexit
import concurrent.futures
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import tomllib


ROOT = Path(__file__).resolve().parents[1]
MUTANTS_DIR = ROOT / "mutation" / "mutants"
WORK_DIR = ROOT / ".mutation"


@dataclass
class Mutant:
    name: str
    file: str
    find: str
    replace: str
    why: str
    tests: list[str]
    source: str  # the toml file that lists it
    killed: bool | None = None
    seconds: float = 0.0
    detail: str = ""
    failed_tests: list[str] = field(default_factory=list)


def load_mutants(paths: list[Path]) -> list[Mutant]:
    mutants, names = [], set()
    for path in paths:
        with open(path, "rb") as f:
            tables = tomllib.load(f).get("mutant", [])
        for i, table in enumerate(tables):
            where = f"{path.relative_to(ROOT)} mutant #{i + 1}"
            missing = {"name", "file", "find", "replace", "why", "tests"} - set(table)
            if missing:
                raise SystemExit(f"{where}: missing {sorted(missing)}")
            unknown = set(table) - {"name", "file", "find", "replace", "why", "tests"}
            if unknown:
                raise SystemExit(f"{where}: unknown keys {sorted(unknown)}")
            if table["name"] in names:
                raise SystemExit(f"{where}: duplicate name {table['name']!r}")
            names.add(table["name"])
            if not table["tests"]:
                raise SystemExit(f"{where} ({table['name']}): no tests listed")
            mutants.append(Mutant(**table, source=str(path.relative_to(ROOT))))
    return mutants


def check_mutant(mutant: Mutant) -> str:
    """The mutated text of `mutant.file`; raises SystemExit when the list has drifted from the code."""
    path = ROOT / mutant.file
    if not path.is_file():
        raise SystemExit(f"{mutant.source} ({mutant.name}): {mutant.file} does not exist")
    text = path.read_text()
    count = text.count(mutant.find)
    if count != 1:
        raise SystemExit(
            f"{mutant.source} ({mutant.name}): `find` occurs {count} times in {mutant.file} (must be exactly once): "
            f"{mutant.find!r}"
        )
    if mutant.find == mutant.replace:
        raise SystemExit(f"{mutant.source} ({mutant.name}): `replace` equals `find`")
    mutated = text.replace(mutant.find, mutant.replace)
    if path.suffix == ".py":
        try:
            compile(mutated, str(path), "exec")
        except SyntaxError as error:
            raise SystemExit(
                f"{mutant.source} ({mutant.name}): the mutated {mutant.file} does not compile: {error}"
            ) from None
    for test in mutant.tests:
        test_file = test.split("::")[0]
        if not (ROOT / test_file).exists():
            raise SystemExit(f"{mutant.source} ({mutant.name}): test path {test_file} does not exist")
    return mutated


def copy_tree(destination: Path) -> None:
    """The working tree as git sees it (tracked and untracked, not ignored), into `destination`."""
    if destination.exists():
        shutil.rmtree(destination)
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source = ROOT / name
        if not source.is_file():  # deleted but still tracked
            continue
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def run_tests(tree: Path, tests: list[str], timeout: float) -> tuple[int | None, str]:
    """Run `tests` with pytest inside `tree` (its hfpref shadows the installed one); (returncode or None on timeout, output)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    env["HFPREF_SHARED_DIR"] = str(ROOT.parent / "shared")
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "no:xdist", *tests]
    try:
        done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        output = (error.stdout or b"").decode() if isinstance(error.stdout, bytes) else (error.stdout or "")
        return None, output
    return done.returncode, done.stdout + done.stderr


def failed_tests(output: str) -> list[str]:
    return [line.split(" ", 2)[1] for line in output.splitlines() if line.startswith(("FAILED ", "ERROR "))]


def verify_tree_imports_from_copy(tree: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(tree))
    where = subprocess.run(
        [sys.executable, "-c", "import hfpref, sys; sys.stdout.write(hfpref.__file__)"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if not Path(where).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"the mutation copy {tree} imports hfpref from {where}, not from the copy")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--only", nargs="*", default=None, help="mutant list names (e.g. caption_rl) or mutant names")
    parser.add_argument("--workers", type=int, default=2, help="mutants run at once, each in its own copy (default 2)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per mutant's tests; past it, killed")
    parser.add_argument("--fail-under", type=float, default=0.95, help="exit 1 when the score is below (default 0.95)")
    parser.add_argument("--skip-baseline", action="store_true", help="do not first check the tests pass unmutated")
    parser.add_argument("--list", action="store_true", help="print the mutants and exit")
    args = parser.parse_args(argv)

    mutants = load_mutants(sorted(MUTANTS_DIR.glob("*.toml")))
    if args.only:
        chosen = set(args.only)
        mutants = [m for m in mutants if m.name in chosen or Path(m.source).stem in chosen]
        if not mutants:
            raise SystemExit(f"no mutant matches --only {args.only}")
    mutated = {m.name: check_mutant(m) for m in mutants}
    if args.list:
        for m in mutants:
            print(f"{m.name:45s} {m.file}: {m.why}")
        print(f"{len(mutants)} mutants")
        return 0

    start = time.monotonic()
    workers = max(1, min(args.workers, len(mutants)))
    # One folder per run: two runs at once (e.g. `--only` lists checked side by side) never share a copy.
    run_dir = WORK_DIR / f"run-{os.getpid()}"
    trees = [run_dir / f"worker-{i}" for i in range(workers)]
    atexit.register(shutil.rmtree, run_dir, ignore_errors=True)
    for tree in trees:
        copy_tree(tree)
    verify_tree_imports_from_copy(trees[0])

    if not args.skip_baseline:
        union = sorted({t for m in mutants for t in m.tests})
        halves = [union[i::workers] for i in range(workers)]
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(lambda job: run_tests(job[0], job[1], 20 * args.timeout), zip(trees, halves)))
        for (code, output), tests in zip(results, halves):
            if tests and code != 0:
                print(output[-6000:])
                raise SystemExit(
                    f"the tests fail (or time out) without any mutation: {failed_tests(output) or tests}; fix them first"
                )
        print(f"baseline: {len(union)} tests pass unmutated ({time.monotonic() - start:.0f}s)", flush=True)

    free = list(trees)
    import threading

    lock = threading.Lock()

    def run(mutant: Mutant) -> Mutant:
        with lock:
            tree = free.pop()
        target = tree / mutant.file
        original = target.read_text()
        began = time.monotonic()
        try:
            target.write_text(mutated[mutant.name])
            code, output = run_tests(tree, mutant.tests, args.timeout)
        finally:
            target.write_text(original)
            with lock:
                free.append(tree)
        mutant.seconds = time.monotonic() - began
        if code == 5:
            raise SystemExit(f"{mutant.source} ({mutant.name}): pytest collected no tests from {mutant.tests}")
        mutant.killed = code != 0
        mutant.failed_tests = failed_tests(output)
        mutant.detail = "timeout" if code is None else ("killed" if code else "SURVIVED")
        print(
            f"{mutant.detail:8s} {mutant.seconds:5.0f}s  {mutant.name}"
            + (f"  <- {', '.join(mutant.failed_tests[:2])}" if mutant.failed_tests else ""),
            flush=True,
        )
        return mutant

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        done = list(pool.map(run, mutants))

    killed = sum(bool(m.killed) for m in done)
    survivors = [m for m in done if not m.killed]
    print(f"\n{killed}/{len(done)} mutants killed in {time.monotonic() - start:.0f}s over {workers} workers")
    for m in survivors:
        print(f"  survived: {m.name} ({m.file}): {m.why}")
    score = killed / len(done)
    print(f"RATIO mutation_score={score:.3f}")
    return 0 if score >= args.fail_under else 1


if __name__ == "__main__":
    sys.exit(main())
