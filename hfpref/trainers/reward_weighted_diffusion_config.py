from dataclasses import dataclass, field

from transformers import TrainingArguments


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
class RewardWeightedDiffusionConfig(TrainingArguments):
    r"""
    Configuration of the [`RewardWeightedDiffusionTrainer`], BATON's reward-weighted fine-tuning of a text-to-audio
    diffusion UNet. Only the parameters specific to the method are listed; see [`~transformers.TrainingArguments`]
    for the rest. The defaults are the paper's (10 epochs, lr 1e-5, batch 6, AdamW, beta 0.5).

    Parameters:
        beta (`float`, *optional*, defaults to `0.5`):
            Weight of the plain denoising loss on batches of the original training data (the paper's pretrain loss).
            `0` drops those batches.
        pretrain_batch_size (`int`, *optional*):
            Batch size of the original-data batches; defaults to `per_device_train_batch_size`.
        reward_column (`str`, *optional*, defaults to `"reward"`):
            Column of the preference data holding the precomputed reward r(c, x) of each (prompt, audio) pair.
        audio_column (`str`, *optional*, defaults to `"audio"`):
            Audio column of both datasets.
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
    """

    beta: float = field(default=0.5, metadata={"help": "Weight of the denoising loss on original training data."})
    pretrain_batch_size: int | None = field(default=None, metadata={"help": "Batch size of original-data batches."})
    reward_column: str = field(default="reward", metadata={"help": "Column of precomputed rewards."})
    audio_column: str = field(default="audio", metadata={"help": "Audio column."})
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

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> "RewardWeightedDiffusionConfig":
        """The paper schedule `preset` (one of `PRESETS`), with `overrides` on top."""
        if preset not in PRESETS:
            raise ValueError(f"preset={preset!r} is not one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[preset], **overrides})


HUMAN_REWARDS = ["reward_model", "label"]


@dataclass
class TTARewardWeightedScriptArguments:
    r"""
    Data arguments of `recipes/tta_reward_weighted.py`: human feedback, reward-labelled generated audio, the original
    training data, the reward model and the evaluation prompts.

    Either a feedback file (`feedback_file`: the `feedback.csv` written by `hfpref tta-generate`, its `label` column
    filled with 0/1 for the annotated part and left empty for the rest) or the synthetic world (`synthetic_clips`:
    world clips with their true and a wrong caption, labelled by the oracle, plus `n_prompts` built prompts rendered by
    the starting pipeline as the unlabelled part).

    Parameters:
        feedback_file (`str`, *optional*):
            BATON feedback (`.csv`, `.json` or `.jsonl`): rows labelled 0/1 are the human part, rows with an empty
            label are scored by the reward model, rows labelled `skip` / -1 are dropped and counted.
        synthetic_clips (`int`, *optional*):
            Size of the synthetic world used instead of `feedback_file` (and as `pretrain_dataset` when none is given).
        synthetic_clip_seconds (`float`, *optional*, defaults to `1.0`):
            Clip length of the synthetic world.
        pretrain_dataset (`str`, *optional*):
            The original training data (audio + `pretrain_text_column`): Hub id, `save_to_disk` folder or data file.
            Required with `beta > 0` unless `synthetic_clips` is set.
        pretrain_split (`str`, *optional*, defaults to `"train"`):
            Its split.
        reward_model_name_or_path (`str`):
            The binary reward model ([`~hfpref.rewards.CLAPRewardModel`], e.g. trained with
            `recipes/text_to_audio/reward/config_binary_bce.yaml`).
        clap_model_name_or_path (`str`, *optional*):
            The CLAP the reward model was trained on; defaults to the reward model's `clap_checkpoint`.
        embedding_cache_dir (`str`, *optional*):
            Where CLAP embeddings are cached (default `<output_dir>/embedding-cache`).
        mix_ratio (`float`, *optional*, defaults to `1.0`):
            Reward-labelled rows per human row (the paper: 1:1).
        human_reward (`str`, *optional*, defaults to `"reward_model"`):
            Weight of a human row: its reward-model score (`"reward_model"`) or its 0/1 label (`"label"`).
        label_set (`list[str]`, *optional*):
            Labels the prompt builder draws from (synthetic world: its event kinds by default).
        n_prompts (`int`, *optional*, defaults to `48`):
            Built prompts rendered for the reward-labelled part (synthetic world only).
        clips_per_prompt (`int`, *optional*, defaults to `5`):
            Clips rendered per built prompt (the paper: 5).
        eval_prompts (`int`, *optional*, defaults to `32`):
            Held-out built prompts (half integrity, half temporal) rendered before and after training; 0 skips the
            evaluation.
        eval_clips_per_prompt (`int`, *optional*, defaults to `2`):
            Clips per evaluation prompt.
        num_inference_steps (`int`, *optional*, defaults to `50`):
            Denoising steps of every rendering.
        guidance_scale (`float`, *optional*, defaults to `2.5`):
            Classifier-free guidance of every rendering (AudioLDM's default; 1 disables it).
        audio_length_in_s (`float`, *optional*):
            Length of rendered clips; the pipeline's default when unset.
        generation_seed (`int`, *optional*, defaults to `0`):
            Seed of the rendered clips' initial noise (the same for the before / after evaluation).
    """

    feedback_file: str | None = None
    synthetic_clips: int | None = None
    synthetic_clip_seconds: float = 1.0
    pretrain_dataset: str | None = None
    pretrain_split: str = "train"
    reward_model_name_or_path: str | None = None
    clap_model_name_or_path: str | None = None
    embedding_cache_dir: str | None = None
    mix_ratio: float = 1.0
    human_reward: str = "reward_model"
    label_set: list[str] | None = None
    n_prompts: int = 48
    clips_per_prompt: int = 5
    eval_prompts: int = 32
    eval_clips_per_prompt: int = 2
    num_inference_steps: int = 50
    guidance_scale: float = 2.5
    audio_length_in_s: float | None = None
    generation_seed: int = 0

    def __post_init__(self):
        sources = [name for name in ("feedback_file", "synthetic_clips") if getattr(self, name)]
        if len(sources) != 1:
            raise ValueError(f"give exactly one data source of ['feedback_file', 'synthetic_clips'], got {sources}")
        if not self.reward_model_name_or_path:
            raise ValueError("reward_model_name_or_path is required: the binary reward model that scores the pairs")
        if self.human_reward not in HUMAN_REWARDS:
            raise ValueError(f"human_reward={self.human_reward!r} is not one of {HUMAN_REWARDS}")
        if self.mix_ratio < 0:
            raise ValueError(f"mix_ratio={self.mix_ratio} must be >= 0")
        for name in ("n_prompts", "clips_per_prompt", "eval_clips_per_prompt", "num_inference_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be a positive integer")
        if self.eval_prompts < 0:
            raise ValueError(f"eval_prompts={self.eval_prompts} must be >= 0")


@dataclass
class TTAPipelineArguments:
    r"""
    The text-to-audio pipeline of `recipes/tta_reward_weighted.py`.

    Parameters:
        pipeline_name_or_path (`str`, *optional*, defaults to `"cvssp/audioldm-s-full-v2"`):
            An AudioLDM pipeline: Hub id or `save_pretrained` folder (safetensors only).
        tiny_pipeline (`bool`, *optional*, defaults to `False`):
            Build a tiny pipeline from configs instead (offline smoke runs), on the text tower of
            `clap_model_name_or_path`, with its VAE fitted for `tiny_vae_steps` on the pretrain clips.
        tiny_vae_steps (`int`, *optional*, defaults to `100`):
            VAE fitting steps of the tiny pipeline.
    """

    pipeline_name_or_path: str = field(
        default="cvssp/audioldm-s-full-v2", metadata={"help": "AudioLDM pipeline: Hub id or folder."}
    )
    tiny_pipeline: bool = field(default=False, metadata={"help": "Build a tiny pipeline from configs."})
    tiny_vae_steps: int = field(default=100, metadata={"help": "VAE fitting steps of the tiny pipeline."})
