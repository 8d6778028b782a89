"""
Audibility accuracy: the share of captions an audibility classifier calls audible (the "Aud" column of the
audibility-guidance paper's Table II), and the classifier wrapper that guided decoding also scores with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


class AudibilityClassifier:
    r"""
    A sequence classifier that says whether a sentence describes something audible (label 1).

    Scores a list of sentences in one batched forward pass (or in chunks of `batch_size`), which is how guided
    decoding scores its top-k candidate continuations.

    Args:
        model (`PreTrainedModel`):
            A two-label `AutoModelForSequenceClassification` (label 1 = audible).
        tokenizer (`PreTrainedTokenizerBase`):
            Its tokenizer.
        max_length (`int`, *optional*, defaults to `64`):
            Sentences are truncated to this many tokens.
        batch_size (`int`, *optional*):
            Sentences per forward pass; `None` scores everything in one pass.
    """

    def __init__(self, model, tokenizer, *, max_length: int = 64, batch_size: int | None = None):
        if model.config.num_labels != 2:
            raise ValueError(
                f"an audibility classifier has 2 labels (0 non-audible, 1 audible), not {model.config.num_labels}"
            )
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs) -> AudibilityClassifier:
        """Load a classifier saved by `hfpref/scripts/audibility_classifier.py` (safetensors, no remote code)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from ..utils.distributed import zero3_init_disabled
        from ..utils.safe_loading import load_pretrained

        with zero3_init_disabled():  # a frozen judge: whole on every process, also in a ZeRO-3 launch
            model = load_pretrained(AutoModelForSequenceClassification, name_or_path)
        return cls(model, load_pretrained(AutoTokenizer, name_or_path), **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def audible_log_odds(self, sentences: Sequence[str]) -> torch.Tensor:
        """`logit(audible) - logit(non-audible)` of each sentence, shape `(len(sentences),)`, float32."""
        step = self.batch_size or max(len(sentences), 1)
        out = []
        for i in range(0, len(sentences), step):
            batch = self.tokenizer(
                list(sentences[i : i + step]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            logits = self.model(**batch).logits.float()
            out.append(logits[:, 1] - logits[:, 0])
        return torch.cat(out) if out else torch.zeros(0)

    def audible_probability(self, sentences: Sequence[str]) -> list[float]:
        """P(audible) of each sentence."""
        return torch.sigmoid(self.audible_log_odds(sentences)).tolist()

    def __call__(self, sentences: Sequence[str]) -> list[float]:
        return self.audible_probability(sentences)


def audibility_accuracy(
    captions: Sequence[str], classifier: Callable[[Sequence[str]], Sequence[float]], threshold: float = 0.5
) -> float:
    r"""
    Audibility accuracy: the share of `captions` whose audible probability exceeds `threshold`.

    Args:
        captions (`Sequence[str]`):
            Generated captions.
        classifier (`Callable`):
            Maps a list of captions to P(audible) per caption, e.g. an [`AudibilityClassifier`].
        threshold (`float`, *optional*, defaults to `0.5`):
            A caption counts as audible when its probability is strictly above this.

    Returns:
        `float` in [0, 1].

    Example:

    ```python
    >>> fake_classifier = lambda captions: [0.9 if "bark" in c else 0.2 for c in captions]
    >>> audibility_accuracy(["A dog barks", "A red car", "Dogs bark twice", "A tall tree"], fake_classifier)
    0.5

    ```
    """
    if not captions:
        raise ValueError("audibility_accuracy needs at least one caption")
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold={threshold} must lie in [0, 1)")
    probabilities = list(classifier(list(captions)))
    if len(probabilities) != len(captions):
        raise ValueError(f"the classifier returned {len(probabilities)} scores for {len(captions)} captions")
    return sum(p > threshold for p in probabilities) / len(captions)
