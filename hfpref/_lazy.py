"""Packages whose public names are imported on first use (PEP 562), so that `hfpref --help` stays fast."""

import importlib
from collections.abc import Callable, Mapping


def lazy_exports(package: str, sources: Mapping[str, str], namespace: dict) -> tuple[Callable, Callable]:
    """
    The `__getattr__` and `__dir__` of a package whose names in `sources` (`name -> ".module"`) load on first use.

    Example:

    ```python
    >>> getattr_, dir_ = lazy_exports("hfpref.metrics", {"win_rate": ".preference"}, {})
    >>> getattr_("win_rate")([1, -1, 1])
    0.6666666666666666
    >>> "win_rate" in dir_()
    True

    ```
    """

    def __getattr__(name: str):
        if name in sources:
            return getattr(importlib.import_module(sources[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(sources))

    return __getattr__, __dir__
