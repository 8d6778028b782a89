import functools
import logging
import math
import os

import numpy as np
import torch
from datasets import Dataset
from diffusers import AudioLDMPipeline, DDPMScheduler

from ...data.audio import decode_audio_column
from ...models.tta_pipeline import GriffinLimVocoder, encode_prompts, sampling_rate_of, waveform_to_log_mel
from ...utils.distributed import whole_copy
from ..base_trainer import BaseTrainer
from .reward_weighted_diffusion_config import RewardWeightedDiffusionConfig


logger = logging.getLogger(__name__)

LATENT_COLUMNS = ["latent_mean", "latent_std", "text_embedding"]


def reward_weighted_denoising_loss(
    noise_pred: torch.Tensor,
    target: torch.Tensor,
    rewards: torch.Tensor,
    pretrain_noise_pred: torch.Tensor | None = None,
    pretrain_target: torch.Tensor | None = None,
    beta: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """
    BATON's loss (https://huggingface.co/papers/2402.00744, equation 7):
    `mean_i(r_i * ||eps_i - eps_theta_i||^2) + beta * mean_j(||eps_j - eps_theta_j||^2)`, where `i` runs over the
    preference batch and `j` over a batch of the original training data. `||.||^2` is the mean over a sample's
    elements (the scale diffusers' training scripts use), so `beta` weighs the two terms as the paper's equation does.

    Args:
        noise_pred (`torch.Tensor` of shape `(batch, ...)`): the UNet's prediction on the preference batch.
        target (`torch.Tensor`): its target (the noise, or the velocity for v-prediction).
        rewards (`torch.Tensor` of shape `(batch,)`): r(c, x) of each pair.
        pretrain_noise_pred (`torch.Tensor`, *optional*), pretrain_target (`torch.Tensor`, *optional*):
            The same on the original-data batch; the second term is 0 without them.
        beta (`float`, *optional*, defaults to `0.5`): weight of the second term.

    Returns:
        `tuple[torch.Tensor, torch.Tensor, torch.Tensor]`: the loss, the reward-weighted term, the pretrain term.

    Example:

    ```python
    >>> pred, target = torch.zeros(2, 1, 2, 1), torch.tensor([1.0, 1.0, 2.0, 0.0]).view(2, 1, 2, 1)
    >>> loss, weighted, pretrain = reward_weighted_denoising_loss(pred, target, torch.tensor([1.0, 0.5]))
    >>> weighted.item()  # (1 * 1.0 + 0.5 * 2.0) / 2
    1.0

    ```
    """
    if rewards.ndim != 1 or rewards.shape[0] != noise_pred.shape[0]:
        raise ValueError(f"rewards has shape {tuple(rewards.shape)}; expected ({noise_pred.shape[0]},)")
    per_sample = (noise_pred.float() - target.float()).pow(2).flatten(1).mean(1)
    weighted = (rewards.float() * per_sample).mean()
    if pretrain_noise_pred is None:
        pretrain = torch.zeros((), device=weighted.device)
    else:
        pretrain = (pretrain_noise_pred.float() - pretrain_target.float()).pow(2).flatten(1).mean(1).mean()
    return weighted + beta * pretrain, weighted, pretrain


def whole_clip_frames(lengths: list[int], pipeline: AudioLDMPipeline) -> int:
    """
    Mel frames that hold the longest of clips of `lengths` samples whole: `ceil(max / hop)` rounded up to a multiple
    of the VAE downsampling. Logs how many clips are shorter (they are zero-padded) and how many are cut (none).
    """
    if not lengths:
        raise ValueError("no clips to encode")
    hop = int(np.prod(pipeline.vocoder.config.upsample_rates))
    factor = pipeline.vae_scale_factor
    frames = int(np.ceil(max(lengths) / hop / factor)) * factor
    shorter = sum(length < max(lengths) for length in lengths)
    if shorter:
        logger.info(
            "encoding %d clips whole as %d mel frames (%.2f s): %d shorter clips zero-padded",
            len(lengths), frames, frames * hop / sampling_rate_of(pipeline), shorter,
        )  # fmt: skip
    return frames


@torch.no_grad()
def encode_audio_text(
    pipeline: AudioLDMPipeline,
    dataset: Dataset,
    *,
    audio_column: str = "audio",
    text_column: str = "prompt",
    batch_size: int = 32,
    n_frames: int | None = None,
) -> Dataset:
    """
    Add what the denoising loss reads, computed once: the VAE posterior of each clip's log-mel spectrogram
    (`latent_mean`, `latent_std`, unscaled) and the normalised CLAP text embedding of its text (`text_embedding`).

    Args:
        pipeline (`AudioLDMPipeline`): its VAE, vocoder (for the mel settings) and text encoder are used.
        dataset (`datasets.Dataset`): with `audio_column` (decoded with [`~hfpref.data.audio.decode_audio`]) and
            `text_column`.
        audio_column (`str`, *optional*, defaults to `"audio"`), text_column (`str`, *optional*, defaults to
            `"prompt"`): the columns.
        batch_size (`int`, *optional*, defaults to `32`): clips per VAE call.
        n_frames (`int`, *optional*): mel frames per clip. Defaults to the whole of the longest clip, rounded up to a
            multiple of the VAE downsampling, so that the latents cover the audio the reward scored (a 10 s clip is
            not cut to AudioLDM's default 5.12 s); shorter clips are zero-padded, and their count is logged.
    """
    for column in (audio_column, text_column):
        if column not in dataset.column_names:
            raise ValueError(f"the dataset has no column {column!r}; it has {dataset.column_names}")
    factor = pipeline.vae_scale_factor
    clips, _ = decode_audio_column(dataset, audio_column, sampling_rate_of(pipeline))
    if n_frames is None:
        n_frames = whole_clip_frames([len(c) for c in clips], pipeline)
    if n_frames % factor:
        raise ValueError(f"n_frames={n_frames} must be a multiple of the VAE downsampling {factor}")
    vae = pipeline.vae
    means, stds = [], []
    for start in range(0, len(clips), batch_size):
        mel = waveform_to_log_mel(clips[start : start + batch_size], pipeline.vocoder, n_frames)
        posterior = vae.encode(mel.to(vae.device, vae.dtype)).latent_dist
        means.append(posterior.mean.float().cpu())
        stds.append(posterior.std.float().cpu())
    texts = list(dataset[text_column])
    text_embedding = encode_prompts(pipeline, texts).float().cpu()
    out = dataset
    for name, values in (
        ("latent_mean", torch.cat(means)),
        ("latent_std", torch.cat(stds)),
        ("text_embedding", text_embedding),
    ):
        if name in out.column_names:
            out = out.remove_columns(name)
        out = out.add_column(name, values.numpy().tolist())
    return out


@functools.lru_cache(maxsize=2)
def _epoch_order(num_rows: int, seed: int) -> tuple[int, ...]:
    return tuple(torch.randperm(num_rows, generator=torch.Generator().manual_seed(seed)).tolist())


def pretrain_rows(num_rows: int, batch_size: int, seed: int, micro_batch: int) -> list[int]:
    """
    Rows of the original training data that the `micro_batch`-th micro-batch of the run reads, counting the
    micro-batches of every process in global-batch order (`optimizer step * micro-batches per step + index in the
    step`, see [`~hfpref.trainers.base_trainer.micro_batch_index`]). Epoch `e` reads the data in a random order drawn
    from `seed + e`, `batch_size` rows at a time (its last batch may be shorter). So the rows depend only on the seed
    and the place in the run: the processes of a step read disjoint rows, together the ones one process reads over
    the same global batch by accumulation, and a resumed run reads what the uninterrupted one read.

    Example:

    ```python
    >>> [pretrain_rows(5, 2, seed=0, micro_batch=i) for i in range(4)]  # an epoch of 5 rows, then the next one
    [[4, 0], [1, 3], [2], [0, 4]]

    ```
    """
    epoch, position = divmod(micro_batch, math.ceil(num_rows / batch_size))
    order = _epoch_order(num_rows, seed + epoch)
    return list(order[position * batch_size : (position + 1) * batch_size])


class _LatentCollator:
    def __init__(self, reward_column: str | None):
        self.reward_column = reward_column

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = {
            name: torch.tensor(np.asarray([f[name] for f in features]), dtype=torch.float32) for name in LATENT_COLUMNS
        }
        if self.reward_column is not None:
            batch["reward"] = torch.tensor([float(f[self.reward_column]) for f in features], dtype=torch.float32)
        return batch


class RewardWeightedDiffusionTrainer(BaseTrainer):
    """
    BATON's reward-weighted fine-tuning of a text-to-audio diffusion UNet (https://huggingface.co/papers/2402.00744,
    section 3.3), thin on [`~transformers.Trainer`]:
    `L = mean(r(c, x) * ||eps - eps_theta(x_t, c, t)||^2)` on preference data `+ beta * mean(||eps - eps_theta||^2)`
    on batches of the original training data (each process reads its own share of a step's batch, [`pretrain_rows`]).
    The reward r is a column of the preference data, precomputed (e.g. by
    [`~hfpref.data.tta_feedback.add_rewards`] with the binary reward model); the noise schedule is the pipeline's.
    Only the UNet trains (all its weights, or LoRA adapters with `use_lora`); the VAE and text encoder stay frozen,
    and their outputs are computed once ([`encode_audio_text`]).

    Logs `reward_weighted_loss`, `pretrain_loss` and `mean_reward` next to `loss`.

    Args:
        pipeline (`diffusers.AudioLDMPipeline`):
            The pipeline whose UNet is fine-tuned.
        args ([`RewardWeightedDiffusionConfig`]):
            Training configuration.
        train_dataset (`datasets.Dataset`):
            Preference data: `audio_column`, `text_column` and `reward_column`, or already encoded
            (`latent_mean`, `latent_std`, `text_embedding`).
        pretrain_dataset (`datasets.Dataset`, *optional*):
            Original training data: `audio_column` and `pretrain_text_column`, or already encoded. Required when
            `beta > 0`.
    """

    _name = "reward_weighted_diffusion"
    _tag_names = ["hfpref", "text-to-audio", "baton"]

    def __init__(
        self,
        pipeline: AudioLDMPipeline,
        args: RewardWeightedDiffusionConfig,
        train_dataset: Dataset,
        pretrain_dataset: Dataset | None = None,
        callbacks: list | None = None,
        optimizers=(None, None),
    ):
        if not isinstance(args, RewardWeightedDiffusionConfig):
            raise TypeError(f"args must be a RewardWeightedDiffusionConfig, got {type(args).__name__}")
        if args.beta > 0 and pretrain_dataset is None:
            raise ValueError(
                f"beta={args.beta} weighs a denoising loss on the original training data: pass pretrain_dataset, "
                "or set beta=0"
            )
        self.pipeline = pipeline
        for module in (pipeline.vae, pipeline.text_encoder):
            module.requires_grad_(False).eval()
        unet = pipeline.unet
        if args.use_lora:
            from peft import LoraConfig

            unet.requires_grad_(False)
            unet.add_adapter(
                LoraConfig(
                    r=args.lora_r,
                    lora_alpha=args.lora_alpha,
                    init_lora_weights="gaussian",
                    target_modules=list(args.lora_target_modules),
                )
            )
        self.noise_scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)
        self.prediction_type = args.prediction_type or self.noise_scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type={self.prediction_type!r} is not one of ['epsilon', 'v_prediction']")
        if args.reward_column not in train_dataset.column_names:
            raise ValueError(
                f"train_dataset has no reward column {args.reward_column!r}; it has {train_dataset.column_names}. "
                "Score the pairs with the reward model first (hfpref.data.tta_feedback.add_rewards)."
            )
        rewards = np.asarray(train_dataset[args.reward_column], dtype=np.float64)
        if not np.isfinite(rewards).all():
            raise ValueError(f"train_dataset column {args.reward_column!r} has NaN or inf rewards")
        if (rewards < 0).any():
            # Appendix B: the ELBO argument needs r >= 0, which a sigmoid reward model guarantees.
            raise ValueError(f"train_dataset column {args.reward_column!r} has negative rewards; r must be >= 0")
        train_dataset = self._encoded(train_dataset, args.audio_column, args.text_column, "train_dataset")
        self.pretrain_dataset = (
            self._encoded(pretrain_dataset, args.audio_column, args.pretrain_text_column, "pretrain_dataset")
            if pretrain_dataset is not None
            else None
        )
        super().__init__(
            model=unet,
            args=args,
            data_collator=_LatentCollator(args.reward_column),
            train_dataset=train_dataset,
            callbacks=callbacks,
            optimizers=optimizers,
        )

    def _encoded(self, dataset: Dataset, audio_column: str, text_column: str, name: str) -> Dataset:
        if len(dataset) == 0:
            raise ValueError(f"{name} is empty")
        if all(c in dataset.column_names for c in LATENT_COLUMNS):
            return dataset
        if audio_column not in dataset.column_names or text_column not in dataset.column_names:
            raise ValueError(
                f"{name} needs {audio_column!r} and {text_column!r} (or encoded columns {LATENT_COLUMNS}); "
                f"it has {dataset.column_names}"
            )
        return encode_audio_text(self.pipeline, dataset, audio_column=audio_column, text_column=text_column)

    def _pretrain_rows(self, training: bool = True, micro: tuple[int, int] | None = None) -> list[int]:
        """
        This micro-batch's rows of the original data ([`pretrain_rows`]); call it once per training micro-batch, or
        give its `(step, index)` (`micro`).
        """
        # Outside training (evaluation), the rows of the next step's first micro-batch, without advancing the count.
        if micro is None:
            micro = self._micro_batch() if training else (self.state.global_step, 0)
        step, index = micro
        per_step = self.args.gradient_accumulation_steps * self.accelerator.num_processes
        size = self.args.pretrain_batch_size or self.args.per_device_train_batch_size
        return pretrain_rows(len(self.pretrain_dataset), size, self.args.seed, step * per_step + index)

    def _next_pretrain_batch(self, device, training: bool = True, micro=None) -> dict[str, torch.Tensor]:
        batch = _LatentCollator(None)([self.pretrain_dataset[i] for i in self._pretrain_rows(training, micro)])
        return {k: v.to(device) for k, v in batch.items()}

    def _denoising_prediction(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        mean, std = batch["latent_mean"], batch["latent_std"]
        latents = mean + std * torch.randn_like(std) if self.args.sample_latents else mean
        latents = latents * self.pipeline.vae.config.scaling_factor
        noise = torch.randn_like(latents)
        steps = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, steps, (latents.shape[0],), device=latents.device).long()
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        if self.prediction_type == "epsilon":
            target = noise
        else:
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        prediction = model(
            noisy, timesteps, encoder_hidden_states=None, class_labels=batch["text_embedding"].to(latents.dtype)
        ).sample
        return prediction, target

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        device = inputs["reward"].device
        micro = self._micro_batch() if model.training else (self.state.global_step, 0)
        # Noise, timesteps, latent samples and dropout are drawn from a seed of (seed, step, place of the micro-batch
        # in the step's global batch) only: they do not depend on how the global batch is split over processes and
        # accumulation steps, and a resumed run draws what the uninterrupted one drew.
        seed = int(np.random.SeedSequence([self.args.seed, *micro]).generate_state(1)[0])
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            prediction, target = self._denoising_prediction(model, inputs)
            pretrain_prediction = pretrain_target = pretrain_batch = None
            if self.args.beta > 0:
                pretrain_batch = self._next_pretrain_batch(device, training=model.training, micro=micro)
                pretrain_prediction, pretrain_target = self._denoising_prediction(model, pretrain_batch)
        loss, weighted, pretrain = reward_weighted_denoising_loss(
            prediction, target, inputs["reward"], pretrain_prediction, pretrain_target, beta=self.args.beta
        )
        if model.training:
            rows = len(inputs["reward"])
            self._record_metric("reward_weighted_loss", weighted.item(), rows)
            pretrain_size = len(pretrain_batch["latent_mean"]) if pretrain_batch is not None else 1
            self._record_metric("pretrain_loss", pretrain.item(), pretrain_size)
            self._record_metric("mean_reward", inputs["reward"].mean().item(), rows)
        return (loss, {"prediction": prediction}) if return_outputs else loss

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """
        Save the UNet to `output_dir` (a checkpoint's only that). The final save (not a checkpoint's) also writes the
        whole pipeline with the trained UNet beside it (`model_index.json`, `unet/`, `vae/`, ...), so that the folder
        loads as a pipeline, as its card shows; the UNet at the top stays for `UNet2DConditionModel.from_pretrained`
        and `load_tta_pipeline(base, unet_name_or_path=...)`.
        """
        self._save_pipeline = not _internal_call
        try:
            super().save_model(output_dir, _internal_call)
        finally:
            self._save_pipeline = False

    def _save(self, output_dir: str | None = None, state_dict=None):
        if not self.args.should_save:  # DeepSpeed and FSDP call it on every process; the main one writes
            return
        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        unet = self.accelerator.unwrap_model(self.model)
        if state_dict is not None and (self.is_deepspeed_enabled or self.is_fsdp_enabled):
            # The module is partitioned (ZeRO-3) or sharded (FSDP2); `state_dict` is the engine's whole copy.
            unet = whole_copy(unet, state_dict)
        if self.args.use_lora:
            unet.save_lora_adapter(output_dir, safe_serialization=True)
        else:
            unet.save_pretrained(output_dir, safe_serialization=True)
            if getattr(self, "_save_pipeline", False):
                components = {**self.pipeline.components, "unet": unet}
                type(self.pipeline)(**components).save_pretrained(output_dir, safe_serialization=True)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _render_card(self, **fields):
        """The card; its quick start loads the saved pipeline the way it loads (see [`save_model`])."""
        repo_id = fields["repo_id"]
        prompt = 'pipe("A dog barks while a car passes by", num_inference_steps=10, audio_length_in_s=1.0)'
        if self.args.use_lora:
            base = self.pipeline.name_or_path or "<the base pipeline>"
            fields["usage"] = (
                "from hfpref.models.tta_pipeline import load_tta_pipeline\n\n"
                "# The repository holds the UNet's LoRA adapter (pytorch_lora_weights.safetensors): load the base "
                "pipeline, then the adapter.\n"
                f'pipe = load_tta_pipeline("{base}")\n'
                "# weight_name names the safetensors file: without it diffusers guesses a .bin (training_args.bin).\n"
                f'pipe.unet.load_lora_adapter("{repo_id}", weight_name="pytorch_lora_weights.safetensors", prefix=None)\n'
                f"audio = {prompt}.audios[0]"
            )
        elif isinstance(self.pipeline.vocoder, GriffinLimVocoder):
            fields["usage"] = (
                "from hfpref.models.tta_pipeline import load_tta_pipeline\n\n"
                "# Its vocoder is hfpref's GriffinLimVocoder (a parameter-free mel inversion), which diffusers' "
                "AudioLDMPipeline.from_pretrained\n# does not know: load_tta_pipeline loads the pipeline with it.\n"
                f'pipe = load_tta_pipeline("{repo_id}")\n'
                f"audio = {prompt}.audios[0]"
            )
        return super()._render_card(**fields)

    def _card_base_model(self) -> str | None:
        return self.pipeline.name_or_path or None

    def _card_training_args(self) -> dict:
        return {
            "beta": self.args.beta,
            **super()._card_training_args(),
            "optim": getattr(self.args.optim, "value", self.args.optim),
            "use_lora": self.args.use_lora,
            "prediction_type": self.prediction_type,
        }
