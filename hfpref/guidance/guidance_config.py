from dataclasses import dataclass


@dataclass
class GuidanceConfig:
    r"""
    Settings of [`~hfpref.guidance.guided_generate`], audibility-classifier guidance of a captioner's decoding
    ([Classifier-Guided Captioning Across Modalities](https://huggingface.co/papers/2501.03183), section III, built
    on ZeroCap's context-cache optimization, [arXiv:2111.14447](https://huggingface.co/papers/2111.14447)).

    Two modes run the same objective. `"reference"` is the paper's procedure: the LM's top `top_k` = 512 candidates
    scored by the classifier and `n = num_optimization_steps` = 5 gradient steps on the cache per token, about 60x
    the cost of greedy decoding on a CPU. `"fast"` (the default) scores the LM's top `fast_top_k` candidates only and
    takes `fast_num_optimization_steps` steps, the first on the gradient of the unguided forward itself (at
    `delta = 0` the perturbed cache is `C_0`, so that forward is both `p(. | C_0)` and the first step's forward):
    within 10x of greedy, with the same audibility decisions as the reference on the project's held-out check (see
    the README's "Audibility-guided decoding").

    Parameters:
        mode (`str`, *optional*, defaults to `"fast"`):
            `"fast"` or `"reference"` (the paper's exact procedure).
        top_k (`int`, *optional*, defaults to `512`):
            Reference mode: candidate next tokens per step (the LM's top-k), each scored as a continuation by the
            classifier.
        num_optimization_steps (`int`, *optional*, defaults to `5`):
            Reference mode: gradient steps `n` on the key/value cache per generated token. `0` decodes greedily
            without guidance, in either mode.
        fast_top_k (`int`, *optional*, defaults to `8`):
            Fast mode: candidates the classifier scores, the LM's top `fast_top_k`. Each costs a classifier pass over
            the whole sequence; the guided pick is the argmax of the LM's own perturbed logits, so it comes from the
            tokens the LM already ranks high.
        fast_num_optimization_steps (`int`, *optional*, defaults to `2`):
            Fast mode: gradient steps on the cache per token, each `num_optimization_steps / fast_num_optimization_steps`
            times `step_size` long (the reference's path length in fewer steps).
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

    mode: str = "fast"
    top_k: int = 512
    num_optimization_steps: int = 5
    fast_top_k: int = 8
    fast_num_optimization_steps: int = 2
    lambda_ce: float = 0.2
    lambda_cls: float = 0.6
    step_size: float = 0.3
    classifier_temperature: float = 1.0
    max_new_tokens: int = 30
    classify_prompt: bool = True

    def __post_init__(self):
        if self.mode not in ("fast", "reference"):
            raise ValueError(f"mode={self.mode!r} is not one of ['fast', 'reference']")
        if self.top_k < 1:
            raise ValueError(f"top_k={self.top_k} must be >= 1")
        if self.fast_top_k < 1:
            raise ValueError(f"fast_top_k={self.fast_top_k} must be >= 1")
        if self.fast_num_optimization_steps < 1:
            raise ValueError(
                f"fast_num_optimization_steps={self.fast_num_optimization_steps} must be >= 1 "
                "(num_optimization_steps=0 decodes greedily)"
            )
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
    def candidates(self) -> int:
        """Candidates the classifier scores per step in this mode."""
        return self.top_k if self.mode == "reference" else self.fast_top_k

    @property
    def optimization_steps(self) -> int:
        """Gradient steps on the cache per token in this mode."""
        return self.num_optimization_steps if self.mode == "reference" else self.fast_num_optimization_steps

    @property
    def optimization_step_size(self) -> float:
        """
        L2 length of each step in this mode: the fast mode's fewer steps are proportionally longer, so that its path
        on the cache is as long as the reference's `num_optimization_steps * step_size`.
        """
        if self.mode == "reference":
            return self.step_size
        return self.step_size * self.num_optimization_steps / self.fast_num_optimization_steps

    @property
    def guided(self) -> bool:
        """Whether decoding optimizes the cache at all."""
        return self.num_optimization_steps > 0 and self.lambda_cls > 0
