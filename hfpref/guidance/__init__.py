"""Inference-time classifier guidance: audibility-guided decoding of captioners and causal LMs."""

from .guidance_config import GuidanceConfig
from .guided_decoding import GuidedDecodingOutput, guided_captions, guided_generate


__all__ = ["GuidanceConfig", "GuidedDecodingOutput", "guided_captions", "guided_generate"]
