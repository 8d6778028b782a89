from .agreement import (
    agreement_by_category,
    fense_candidate_scores,
    pad_references,
    pairwise_agreement,
)
from .captioning import CAPTION_METRICS, TEXT_METRICS, evaluate_captions, evaluate_sentences, load_sbert_model
from .cider import CiderD
from .preference import category_counts, fleiss_kappa, weighted_deviation, win_rate
from .rewards import get_cider_reward
from .tokenization import MetricUnavailableError, tokenize_captions


__all__ = [
    "CAPTION_METRICS",
    "TEXT_METRICS",
    "CiderD",
    "MetricUnavailableError",
    "agreement_by_category",
    "category_counts",
    "evaluate_captions",
    "evaluate_sentences",
    "fense_candidate_scores",
    "fleiss_kappa",
    "get_cider_reward",
    "load_sbert_model",
    "pad_references",
    "pairwise_agreement",
    "tokenize_captions",
    "weighted_deviation",
    "win_rate",
]
