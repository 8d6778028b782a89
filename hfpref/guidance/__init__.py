"""Inference-time classifier guidance: audibility-guided decoding of captioners and causal LMs."""
