"""Captioning metrics, agreement with human judgments, win rates and preference statistics."""

from .._lazy import lazy_exports


# Imported on first use (PEP 562), so that `hfpref --help` does not load torch and transformers.
_SOURCES = {
    "CAPTION_METRICS": ".captioning",
    "CiderD": ".cider",
    "MetricUnavailableError": ".tokenization",
    "TEXT_METRICS": ".captioning",
    "agreement_by_category": ".agreement",
    "category_counts": ".preference",
    "evaluate_captions": ".captioning",
    "evaluate_sentences": ".captioning",
    "fense_candidate_scores": ".agreement",
    "fleiss_kappa": ".preference",
    "load_sbert_model": ".captioning",
    "pad_references": ".agreement",
    "pairwise_agreement": ".agreement",
    "tokenize_captions": ".tokenization",
    "weighted_deviation": ".preference",
    "win_rate": ".preference",
}
__all__ = sorted(_SOURCES)

__getattr__, __dir__ = lazy_exports(__name__, _SOURCES, globals())
