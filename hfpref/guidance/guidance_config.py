from dataclasses import dataclass


@dataclass
class GuidanceConfig:
    r"""
    Settings of [`~hfpref.guidance.guided_generate`], audibility-classifier guidance of a captioner's decoding
    ([Classifier-Guided Captioning Across Modalities](https://huggingface.co/papers/2501.03183), section III, built
    on ZeroCap's context-cache optimization, [arXiv:2111.14447](https://huggingface.co/papers/2111.14447)).

    Parameters:
        top_k (`int`, *optional*, defaults to `512`):
            Candidate next tokens per step (the LM's top-k), each scored as a continuation by the classifier.
        num_optimization_steps (`int`, *optional*, defaults to `5`):
            Gradient steps `n` on the key/value cache per generated token; `0` decodes greedily without guidance.
        lambda_ce (`float`, *optional*, defaults to `0.2`):
            Weight of the fluency term, the divergence of the guided next-token distribution `p(. | C)` from the
            unguided `p(. | C_0)`.
        lambda_cls (`float`, *optional*, defaults to `0.6`):
            Weight of the classifier term, the cross-entropy from the classifier-derived target over the candidates
            to the LM's distribution over the same candidates.
        step_size (`float`, *optional*, defaults to `0.3`):
            L2 length of each gradient step on a layer's key (or value) perturbation, per sequence (gradients are
            normalized, as in ZeroCap and PPLM, so the step does not depend on the loss scale).
        classifier_temperature (`float`, *optional*, defaults to `1.0`):
            The target over candidates is `softmax(log_odds / classifier_temperature)`, where `log_odds` is the
            classifier's audible-vs-non-audible logit difference of each candidate continuation. Lower is greedier.
        max_new_tokens (`int`, *optional*, defaults to `30`):
            Tokens to generate (the paper's target length is 30).
        classify_prompt (`bool`, *optional*, defaults to `True`):
            Prepend the (decoded, special tokens skipped) prompt to each candidate continuation the classifier reads,
            as ZeroCap does with its text prompt; `False` scores the generated caption alone.
    """

    top_k: int = 512
    num_optimization_steps: int = 5
    lambda_ce: float = 0.2
    lambda_cls: float = 0.6
    step_size: float = 0.3
    classifier_temperature: float = 1.0
    max_new_tokens: int = 30
    classify_prompt: bool = True

    def __post_init__(self):
        if self.top_k < 1:
            raise ValueError(f"top_k={self.top_k} must be >= 1")
        if self.num_optimization_steps < 0:
            raise ValueError(f"num_optimization_steps={self.num_optimization_steps} must be >= 0 (0 = plain greedy)")
        if self.lambda_ce < 0 or self.lambda_cls < 0:
            raise ValueError(f"lambda_ce={self.lambda_ce} and lambda_cls={self.lambda_cls} must both be >= 0")
        if self.step_size <= 0:
            raise ValueError(f"step_size={self.step_size} must be > 0")
        if self.classifier_temperature <= 0:
            raise ValueError(f"classifier_temperature={self.classifier_temperature} must be > 0")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} must be >= 1")

    @property
    def guided(self) -> bool:
        """Whether decoding optimizes the cache at all."""
        return self.num_optimization_steps > 0 and self.lambda_cls > 0
