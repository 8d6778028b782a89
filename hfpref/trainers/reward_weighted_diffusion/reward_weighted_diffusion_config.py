from dataclasses import dataclass, field

from transformers import TrainingArguments

from ...hub.cards import CardConfigMixin
from ..base_config import AudioConfigMixin


PREDICTION_TYPES = ["epsilon", "v_prediction"]

# BATON (https://huggingface.co/papers/2402.00744), section 4.1: 10 epochs, lr 1e-5, batch 6, AdamW, beta 0.5.
PRESETS: dict[str, dict] = {
    "paper": {
        "beta": 0.5,
        "num_train_epochs": 10,
        "learning_rate": 1e-5,
        "per_device_train_batch_size": 6,
        "optim": "adamw_torch",
    },
}


@dataclass
class RewardWeightedDiffusionConfig(CardConfigMixin, AudioConfigMixin, TrainingArguments):
    r"""
    Configuration of the [`RewardWeightedDiffusionTrainer`], BATON's reward-weighted fine-tuning of a text-to-audio
    diffusion UNet. Only the parameters specific to the method are listed; see [`~transformers.TrainingArguments`]
    for the rest. The defaults are the paper's (10 epochs, lr 1e-5, batch 6, AdamW, beta 0.5).

    Parameters:
        license (`str`, *optional*):
            Hub license id of the model card; by default the base model's card license when that card is local or
            cached, else none (see [`~hfpref.hub.cards.CardConfigMixin`]).
        beta (`float`, *optional*, defaults to `0.5`):
            Weight of the plain denoising loss on batches of the original training data (the paper's pretrain loss).
            `0` drops those batches.
        pretrain_batch_size (`int`, *optional*):
            Batch size of the original-data batches; defaults to `per_device_train_batch_size`.
        reward_column (`str`, *optional*, defaults to `"reward"`):
            Column of the preference data holding the precomputed reward r(c, x) of each (prompt, audio) pair.
        text_column (`str`, *optional*, defaults to `"prompt"`):
            Prompt column of the preference data.
        pretrain_text_column (`str`, *optional*, defaults to `"caption"`):
            Caption column of the original training data.
        sample_latents (`bool`, *optional*, defaults to `True`):
            Draw latents from the VAE posterior at each step (as AudioLDM trains); `False` uses its mean.
        prediction_type (`str`, *optional*):
            `"epsilon"` or `"v_prediction"`; defaults to the pipeline scheduler's.
        use_lora (`bool`, *optional*, defaults to `False`):
            Train LoRA adapters (peft) on the UNet instead of all its weights.
        lora_r (`int`, *optional*, defaults to `8`), lora_alpha (`int`, *optional*, defaults to `8`):
            LoRA rank and scale.
        lora_target_modules (`list[str]`, *optional*, defaults to `["to_q", "to_k", "to_v", "to_out.0"]`):
            UNet modules that get adapters (AudioLDM's attention projections; tiny UNets without attention use
            `["conv1", "conv2"]`).

    The audio of both datasets is read from `audio_column` ([`~hfpref.trainers.base_config.AudioConfigMixin`]).
    Presets: `RewardWeightedDiffusionConfig.from_preset("paper", output_dir=...)`.
    """

    presets = PRESETS

    beta: float = field(default=0.5, metadata={"help": "Weight of the denoising loss on original training data."})
    pretrain_batch_size: int | None = field(default=None, metadata={"help": "Batch size of original-data batches."})
    reward_column: str = field(default="reward", metadata={"help": "Column of precomputed rewards."})
    text_column: str = field(default="prompt", metadata={"help": "Prompt column of the preference data."})
    pretrain_text_column: str = field(default="caption", metadata={"help": "Caption column of the original data."})
    sample_latents: bool = field(default=True, metadata={"help": "Sample latents from the VAE posterior."})
    prediction_type: str | None = field(default=None, metadata={"help": f"One of {PREDICTION_TYPES}."})
    use_lora: bool = field(default=False, metadata={"help": "Train LoRA adapters on the UNet."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=8, metadata={"help": "LoRA alpha."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"], metadata={"help": "UNet modules with LoRA."}
    )

    # TrainingArguments defaults set to the paper's schedule.
    learning_rate: float = field(default=1e-5, metadata={"help": "Initial learning rate."})
    num_train_epochs: float = field(default=10, metadata={"help": "Epochs over the preference data."})
    per_device_train_batch_size: int = field(default=6, metadata={"help": "Preference batch size per device."})
    optim: str = field(default="adamw_torch", metadata={"help": "The optimizer to use."})
    logging_steps: float = field(default=10, metadata={"help": "Log every X updates steps."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "The trainer selects its own columns."})

    def __post_init__(self):
        if self.beta < 0:
            raise ValueError(f"beta={self.beta} must be >= 0")
        if self.pretrain_batch_size is not None and self.pretrain_batch_size < 1:
            raise ValueError(f"pretrain_batch_size={self.pretrain_batch_size} must be a positive integer")
        if self.prediction_type is not None and self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type={self.prediction_type!r} is not one of {PREDICTION_TYPES}")
        if self.lora_r < 1 or self.lora_alpha < 1:
            raise ValueError(f"lora_r={self.lora_r} and lora_alpha={self.lora_alpha} must be positive integers")
        if self.use_lora and not self.lora_target_modules:
            raise ValueError("use_lora=True needs lora_target_modules, e.g. ['to_q', 'to_k', 'to_v', 'to_out.0']")
        super().__post_init__()
