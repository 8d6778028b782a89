"""The hfpref version (one place: the package, the cards and the wheel read it from here)."""

__version__ = "0.1.0.dev0"
