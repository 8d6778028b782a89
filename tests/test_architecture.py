"""
The layout keeps data flowing one way: every import of an hfpref module (at the top of a file or inside a function)
points down the layers below, and no chain of imports comes back to where it started.
"""

import ast
from pathlib import Path

import pytest


PACKAGE = Path(__file__).resolve().parents[1] / "hfpref"

# Lowest first. A module may import modules of its own layer or of a lower one, never of a higher one.
LAYERS = [
    {"_lazy", "_version", "utils"},
    {"data"},
    {"encoders", "prompts"},
    {"models"},
    {"metrics"},
    {"rewards"},
    {"judges", "guidance"},
    {"hub"},
    {"trainers"},
    {"scripts"},
    {"quickstart", "annotate", "loop", "cli"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """The hfpref modules `path` imports, wherever the import statement is (absolute names)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target]
            # `from hfpref.x import y` may import the submodule hfpref.x.y.
            candidates += [f"{target}.{alias.name}" for alias in node.names]
            found.update(c for c in candidates if c.split(".")[0] == "hfpref" and _exists(c))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "hfpref" and _exists(a.name))
    return found - {name}


def _exists(module: str) -> bool:
    path = PACKAGE.parent.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def import_graph() -> dict[str, set[str]]:
    return {module_name(p): imported_modules(p) for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_subpackage_has_a_layer():
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")} | {
        p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"
    }
    assert subpackages - set(RANK) == set(), "give each new hfpref subpackage a place in LAYERS"


def test_no_upward_imports():
    upward = []
    for module, targets in import_graph().items():
        source = layer(module)
        if source is None:  # hfpref/__init__.py registers the reward model with the Auto classes
            continue
        for target in targets:
            if layer(target) is None:
                upward.append(f"{module} imports the hfpref package itself")
            elif RANK[layer(target)] > RANK[source]:
                upward.append(f"{module} ({source}) imports {target} ({layer(target)})")
    assert upward == [], "imports against the layer order:\n" + "\n".join(sorted(upward))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_a_loop_and_only_a_loop():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles():
    graph = import_graph()
    # A package's __init__ re-exporting its own submodules is not a loop unless a submodule imports the package back.
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize(
    "method", sorted(p.name for p in (PACKAGE / "trainers").iterdir() if (p / "__init__.py").is_file())
)
def test_each_method_has_one_name_everywhere(method):
    """`hfpref/trainers/<method>/`, `hfpref/scripts/<method>.py`, `recipes/<method>.py` and `recipes/<method>/`."""
    root = PACKAGE.parent
    folder = PACKAGE / "trainers" / method
    assert (folder / f"{method}_config.py").is_file(), f"{folder} has no {method}_config.py"
    assert (PACKAGE / "scripts" / f"{method}.py").is_file()
    if (root / "recipes").is_dir():  # the recipes ship with the repository, not the wheel
        assert (root / "recipes" / f"{method}.py").is_file()
        assert sorted((root / "recipes" / method).glob("config_*.yaml")), f"recipes/{method}/ has no config_*.yaml"
