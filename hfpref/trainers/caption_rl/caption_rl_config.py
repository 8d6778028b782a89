import math
from dataclasses import dataclass, field

from transformers import TrainingArguments

from ...hub.cards import CardConfigMixin
from ..base_config import AudioConfigMixin


LOSS_TYPES = ["scst", "rloo", "ppo"]
PPO_BASELINES = ["greedy", "loo", "group"]
SCST_BASELINES = ["greedy", "none"]
KL_ESTIMATORS = ["k3", "k2", "k1"]

PRESETS: dict[str, dict] = {
    # "Aligning Audio Captions with Human Preferences" (https://huggingface.co/papers/2509.14659), section 4.2:
    # 100 epochs, Adam, batch 128, two-epoch linear warm-up, then x0.1 every 10 epochs. The learning rate and
    # weight decay were lost from the text; set them yourself.
    "paper_scst": {
        "loss_type": "scst",
        "num_train_epochs": 100,
        "per_device_train_batch_size": 128,
        "optim": "adamw_torch",
        "warmup_epochs": 2.0,
        "step_decay_every_epochs": 10,
        "step_decay_gamma": 0.1,
    },
}


@dataclass
class CaptionRLConfig(CardConfigMixin, AudioConfigMixin, TrainingArguments):
    r"""
    Configuration of the [`CaptionRLTrainer`]: REINFORCE-style fine-tuning of seq2seq audio captioners.
    Only the parameters specific to it are listed; see [`~transformers.TrainingArguments`] for the rest.

    Parameters:
        loss_type (`str`, *optional*, defaults to `"scst"`):
            `"scst"`: self-critical, one sample against the greedy decode as baseline;
            `"rloo"`: `num_samples` samples per clip with a leave-one-out baseline;
            `"ppo"`: clipped-ratio objective over `ppo_epochs` optimisation passes on each sampled batch.
        num_samples (`int`, *optional*, defaults to `1`):
            Sampled captions per clip (at least 2 for `"rloo"` and for `"ppo"` with the `"loo"` baseline).
        ppo_epochs (`int`, *optional*, defaults to `4`): optimisation passes per sampled batch (`"ppo"`).
        cliprange (`float`, *optional*, defaults to `0.2`): PPO ratio clip range.
        ppo_baseline (`str`, *optional*, defaults to `"greedy"`): `"greedy"`, `"loo"` or `"group"` sequence-level
            baseline. `"group"` standardises each clip's `num_samples` rewards by their mean and standard deviation:
            with `ppo_epochs=1` and the `k3` KL in the loss, GRPO (DeepSeekMath, https://huggingface.co/papers/2402.03300)
            for captioners TRL's GRPOTrainer cannot feed (audio LLMs, seq2seq).
        scst_baseline (`str`, *optional*, defaults to `"greedy"`):
            `"greedy"` (self-critical: the greedy caption's reward) or `"none"` (plain REINFORCE on the raw reward, an
            ablation that shows what the baseline does).
        kl_coef (`float`, *optional*, defaults to `0.0`):
            Coefficient of a per-token KL penalty to the frozen reference (a frozen copy of the model, or the
            adapter-disabled base under peft); 0 disables it and the reference.
        kl_estimator (`str`, *optional*, defaults to `"k3"`):
            How the penalty enters the update, with `d = log pi - log ref` per sampled token (see
            [`~hfpref.trainers.caption_rl.caption_rl_trainer.kl_penalty`]). All three estimate the same value,
            `KL(pi || ref)`, and the logged `kl` is always the k3 estimate `exp(-d) + d - 1`, but they optimise
            different divergences:
            `"k3"`: `exp(-d) + d - 1` added to the loss (as TRL's GRPO); its gradient on the policy's own samples is
            that of `KL(ref || pi)`, the mass-covering direction, not of the logged `KL(pi || ref)`;
            `"k2"`: `d^2 / 2` added to the loss; its gradient on the policy's own samples is that of `KL(pi || ref)`;
            `"k1"`: `d`, summed over the caption and detached, subtracted from each sampled caption's reward (as
            TRL's PPO and RLOO) before the baseline (the leave-one-out mean is over the penalised rewards; the greedy
            baseline stays the greedy caption's reward), so the policy gradient optimises
            `E[reward] - kl_coef * KL(pi || ref)`.
        kl_target (`float`, *optional*):
            Adaptive KL (Ziegler et al. 2019, https://huggingface.co/papers/1909.08593, section 2.2): `kl_coef` is
            the starting coefficient, and after every optimizer step it is multiplied by
            `1 + clip(KL / kl_target - 1, -0.2, 0.2) * n / kl_horizon`, where `KL` is the step's mean sampled-caption
            KL to the reference (the logged `kl`, over every process) and `n` the captions sampled in the step; the
            coefficient is logged as `kl_coef` (its mean over the logged steps) and kept in checkpoints. `None`: the coefficient stays fixed.
        kl_horizon (`int`, *optional*, defaults to `10000`):
            Sampled captions over which the adaptive coefficient moves by about `e^{0.2}` when the KL stays off target.
        disable_dropout (`bool`, *optional*, defaults to `True`):
            Turn off every dropout (and layer drop) of the policy and the reference at initialisation, as TRL's
            `disable_dropout`. Captions are sampled with dropout off; with dropout on in the loss pass the
            log-probabilities, the PPO ratio and the KL would be those of another, randomly thinned, network (a
            policy equal to its reference would show a KL > 0).
        max_new_tokens (`int`, *optional*, defaults to `32`): longest generated caption, in tokens.
        temperature (`float`, *optional*, defaults to `1.0`):
            Sampling temperature. The policy optimised is the sampler's: the captioner's logits divided by
            `temperature`, restricted to `top_k` and to what the model's generation config allows (suppressed and
            forced tokens). Every log-probability (policy gradient, PPO ratio, KL) is taken under that distribution,
            as TRL's GRPO divides logits by the temperature.
        top_k (`int` or `None`, *optional*, defaults to `None`): restrict sampling to the top-k tokens.
        reward_weights (`list[float]` or `None`, *optional*, defaults to `None`): one weight per reward function.
        warmup_epochs (`float`, *optional*, defaults to `0.0`): linear warm-up length, in epochs.
        step_decay_every_epochs (`int` or `None`, *optional*, defaults to `None`):
            Multiply the learning rate by `step_decay_gamma` every this many epochs (the paper: 10).
        step_decay_gamma (`float`, *optional*, defaults to `0.1`): step-decay factor.

    The audio is read from `audio_column` ([`~hfpref.trainers.base_config.AudioConfigMixin`]).

    Presets: `CaptionRLConfig.from_preset("paper_scst", output_dir=...)`.
    """

    presets = PRESETS

    loss_type: str = field(default="scst", metadata={"help": f"One of {LOSS_TYPES}."})
    num_samples: int = field(default=1, metadata={"help": "Sampled captions per clip."})
    ppo_epochs: int = field(default=4, metadata={"help": "Optimisation passes per sampled batch (ppo)."})
    cliprange: float = field(default=0.2, metadata={"help": "PPO ratio clip range."})
    ppo_baseline: str = field(default="greedy", metadata={"help": f"One of {PPO_BASELINES}."})
    scst_baseline: str = field(default="greedy", metadata={"help": f"One of {SCST_BASELINES}."})
    kl_coef: float = field(default=0.0, metadata={"help": "Per-token KL penalty to the reference model."})
    kl_estimator: str = field(default="k3", metadata={"help": f"One of {KL_ESTIMATORS}: how the KL enters."})
    kl_target: float | None = field(default=None, metadata={"help": "Target KL of the adaptive coefficient."})
    kl_horizon: int = field(default=10000, metadata={"help": "Horizon (sampled captions) of the adaptive KL."})
    disable_dropout: bool = field(default=True, metadata={"help": "Turn off dropout in the policy and reference."})
    max_new_tokens: int = field(default=32, metadata={"help": "Longest generated caption, in tokens."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    top_k: int | None = field(default=None, metadata={"help": "Sample from the top-k tokens only."})
    reward_weights: list[float] | None = field(default=None, metadata={"help": "One weight per reward."})
    warmup_epochs: float = field(default=0.0, metadata={"help": "Linear warm-up, in epochs."})
    step_decay_every_epochs: int | None = field(default=None, metadata={"help": "Step decay period, in epochs."})
    step_decay_gamma: float = field(default=0.1, metadata={"help": "Step decay factor."})

    learning_rate: float = field(default=1e-5, metadata={"help": "Initial learning rate."})
    logging_steps: float = field(default=1, metadata={"help": "Log every X update steps."})
    optim: str = field(default="adamw_torch", metadata={"help": "The optimizer to use."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Dataset columns reach the reward functions as keyword arguments."}
    )

    def __post_init__(self):
        from ...utils.checks import check_training_arguments

        check_training_arguments(self)  # a bad YAML stops here, before any data or reward work
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type={self.loss_type!r} is not one of {LOSS_TYPES}")
        if self.scst_baseline not in SCST_BASELINES:
            raise ValueError(f"scst_baseline={self.scst_baseline!r} is not one of {SCST_BASELINES}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator={self.kl_estimator!r} is not one of {KL_ESTIMATORS}")
        if self.ppo_baseline not in PPO_BASELINES:
            raise ValueError(f"ppo_baseline={self.ppo_baseline!r} is not one of {PPO_BASELINES}")
        needs_group = self.loss_type == "rloo" or (self.loss_type == "ppo" and self.ppo_baseline in ("loo", "group"))
        if needs_group and self.num_samples < 2:
            raise ValueError(f"loss_type={self.loss_type!r} with a leave-one-out baseline needs num_samples >= 2")
        if self.num_samples < 1 or self.ppo_epochs < 1 or self.max_new_tokens < 1:
            raise ValueError("num_samples, ppo_epochs and max_new_tokens must be >= 1")
        if not all(math.isfinite(v) for v in (self.cliprange, self.temperature, self.kl_coef)):
            raise ValueError("cliprange, temperature and kl_coef must be finite numbers")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k={self.top_k} must be >= 1 (or null for no top-k)")
        if self.cliprange <= 0 or self.temperature <= 0 or self.kl_coef < 0:
            raise ValueError("cliprange and temperature must be > 0 and kl_coef >= 0")
        if self.kl_target is not None:
            if not (math.isfinite(self.kl_target) and self.kl_target > 0) or self.kl_horizon < 1:
                raise ValueError(f"kl_target={self.kl_target} must be > 0 and kl_horizon={self.kl_horizon} >= 1")
            if self.kl_coef <= 0:
                raise ValueError("kl_target adapts kl_coef from its starting value: set kl_coef > 0 (e.g. 0.05)")
        if self.loss_type == "ppo" and self.gradient_accumulation_steps != 1:
            raise ValueError(
                "loss_type='ppo' steps the optimizer inside each batch: use gradient_accumulation_steps=1"
            )
        super().__post_init__()
