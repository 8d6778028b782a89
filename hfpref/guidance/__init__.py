"""Inference-time classifier guidance: audibility-guided decoding of captioners and causal LMs."""

from .._lazy import lazy_exports


# Imported on first use (PEP 562), so that `hfpref --help` does not load torch and transformers.
_SOURCES = {
    "GuidanceConfig": ".guidance_config",
    "GuidedDecodingOutput": ".guided_decoding",
    "guided_captions": ".guided_decoding",
    "guided_generate": ".guided_decoding",
}
__all__ = sorted(_SOURCES)

__getattr__, __dir__ = lazy_exports(__name__, _SOURCES, globals())
