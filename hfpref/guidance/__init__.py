"""Inference-time classifier guidance: audibility-guided decoding of captioners and causal LMs."""

import importlib


# Imported on first use (PEP 562), so that `hfpref --help` does not load torch and transformers.
_SOURCES = {
    "GuidanceConfig": ".guidance_config",
    "GuidedDecodingOutput": ".guided_decoding",
    "guided_captions": ".guided_decoding",
    "guided_generate": ".guided_decoding",
}
__all__ = sorted(_SOURCES)


def __getattr__(name: str):
    if name in _SOURCES:
        return getattr(importlib.import_module(_SOURCES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SOURCES))
