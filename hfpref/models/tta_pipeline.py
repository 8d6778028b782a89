"""AudioLDM-style text-to-audio pipelines: loading a real one, building a tiny one offline, rendering audio.

An AudioLDM pipeline (diffusers' `AudioLDMPipeline`, https://huggingface.co/papers/2301.12503) is a frozen CLAP text
encoder (`ClapTextModelWithProjection`, its normalised `text_embeds` condition the UNet as `class_labels`), a
`UNet2DConditionModel` denoising VAE latents of a log-mel spectrogram, an `AutoencoderKL` and a vocoder turning the
mel spectrogram into a waveform. BATON fine-tunes the UNet only (https://huggingface.co/papers/2402.00744).

[`load_tta_pipeline`] loads `cvssp/audioldm-s-full-v2` or any saved pipeline (safetensors only, no remote code).
[`build_tiny_tta_pipeline`] builds one from configs for the offline world and the tests: its text encoder is the text
tower of a given CLAP, and its vocoder is [`GriffinLimVocoder`], a parameter-free mel inversion (a HiFi-GAN trained
from scratch on CPU would be noise; a fixed inversion keeps the chain text -> mel -> waveform honest).
[`waveform_to_log_mel`] computes the mel features the VAE encodes as AudioLDM's own data pipeline does
(`audioldm/audio/tools.py`: mean removed, peak scaled to 0.5, zero-padded, reflect-padded STFT, Slaney mel, natural
log), with the STFT settings read off the vocoder's config.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AudioLDMPipeline, AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from transformers import ClapModel, ClapTextConfig, ClapTextModelWithProjection, PreTrainedTokenizerBase
from transformers.audio_utils import mel_filter_bank

from ..utils.safe_loading import check_pretrained_path, load_pretrained


logger = logging.getLogger(__name__)

DEFAULT_TTA_CHECKPOINT = "cvssp/audioldm-s-full-v2"

# AudioLDM's mel front end (16 kHz, 64 bins, hop 160 = prod(vocoder upsample_rates), 1024-point FFT, 0 - 8 kHz,
# natural log clamped at 1e-5); the tiny pipeline keeps the recipe with a larger hop and fewer bins.
AUDIOLDM_STFT = {"n_fft": 1024, "fmin": 0.0, "fmax": 8000.0, "log_floor": 1e-5}


def _mel_settings(vocoder) -> dict:
    config = vocoder.config
    sampling_rate = int(config.sampling_rate)
    hop = int(np.prod(config.upsample_rates))
    n_fft = int(getattr(config, "n_fft", AUDIOLDM_STFT["n_fft"]))
    fmax = float(getattr(config, "fmax", min(AUDIOLDM_STFT["fmax"], sampling_rate / 2)))
    return {
        "sampling_rate": sampling_rate,
        "hop_length": hop,
        "n_fft": n_fft,
        "n_mels": int(config.model_in_dim),
        "fmin": float(getattr(config, "fmin", AUDIOLDM_STFT["fmin"])),
        "fmax": fmax,
    }


def _mel_basis(n_fft: int, n_mels: int, sampling_rate: int, fmin: float, fmax: float) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) Slaney mel filters, as librosa and AudioLDM use."""
    filters = mel_filter_bank(
        num_frequency_bins=n_fft // 2 + 1,
        num_mel_filters=n_mels,
        min_frequency=fmin,
        max_frequency=fmax,
        sampling_rate=sampling_rate,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.from_numpy(np.asarray(filters, dtype=np.float32).T)


def normalize_wav(waveform: torch.Tensor) -> torch.Tensor:
    """
    AudioLDM's waveform normalisation before its mel front end (`audioldm/audio/tools.py`, `normalize_wav`): the mean
    removed, then scaled to a peak of 0.5 (`/ (max|x| + 1e-8) * 0.5`).

    Example:
    ```python
    >>> [round(x, 4) for x in normalize_wav(torch.tensor([0.0, 0.2, 0.4])).tolist()]
    [-0.5, 0.0, 0.5]

    ```
    """
    waveform = waveform - waveform.mean()
    return waveform / (waveform.abs().max() + 1e-8) * 0.5


def waveform_to_log_mel(
    waveforms: torch.Tensor | np.ndarray | Sequence[np.ndarray],
    vocoder,
    n_frames: int | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """
    Log-mel spectrograms as the pipeline's VAE sees them: `(batch, 1, frames, n_mels)`, time first like AudioLDM.

    AudioLDM's preprocessing (`audioldm/audio/tools.py` `wav_to_fbank`, `audioldm/audio/stft.py` `TacotronSTFT`):
    each clip's mean is removed and its peak scaled to 0.5 ([`normalize_wav`]), it is zero-padded or cut to
    `n_frames * hop` samples, reflect-padded by `n_fft // 2` on both sides, and its STFT magnitudes (periodic Hann
    window) go through Slaney mel filters and `log(clamp(x, 1e-5))`; the frames are cut to `n_frames`. Settings come
    from the vocoder: hop = `prod(upsample_rates)`, `model_in_dim` mel bins, its `sampling_rate` (FFT size and band
    edges from the config when it has them, else AudioLDM's 1024 / 0 - 8 kHz).

    Args:
        waveforms (`torch.Tensor`, `np.ndarray` or a sequence of arrays):
            Mono clips at the vocoder's sampling rate, `(batch, samples)` or a list of 1-D arrays.
        vocoder:
            The pipeline's vocoder (anything with `config.sampling_rate`, `config.upsample_rates`, `config.model_in_dim`).
        n_frames (`int`, *optional*):
            Frames to return; clips are zero-padded or cut to `n_frames * hop` samples first. Defaults to the longest
            clip's `ceil(samples / hop)`.
        normalize (`bool`, *optional*, defaults to `True`):
            Apply [`normalize_wav`] to each clip first, as AudioLDM does for its training data; the VAE of a released
            checkpoint has only seen normalised clips.

    Returns:
        `torch.Tensor` of shape `(batch, 1, n_frames, n_mels)`.
    """
    settings = _mel_settings(vocoder)
    hop, n_fft = settings["hop_length"], settings["n_fft"]
    if isinstance(waveforms, torch.Tensor):
        clips = list(waveforms.float().cpu().reshape(waveforms.shape[0], -1))
    else:
        clips = [torch.as_tensor(np.asarray(w, dtype=np.float32)).reshape(-1) for w in waveforms]
    if not clips:
        raise ValueError("waveform_to_log_mel got no clips")
    if normalize:
        clips = [normalize_wav(c) for c in clips]
    if n_frames is None:
        n_frames = max(int(np.ceil(len(c) / hop)) for c in clips)
    length = n_frames * hop
    batch = torch.stack([F.pad(c[:length], (0, max(0, length - len(c[:length])))) for c in clips])
    spec = torch.stft(
        batch,
        n_fft=n_fft,
        hop_length=hop,
        win_length=n_fft,
        window=torch.hann_window(n_fft),
        center=True,
        return_complex=True,
    ).abs()
    basis = _mel_basis(n_fft, settings["n_mels"], settings["sampling_rate"], settings["fmin"], settings["fmax"])
    mel = torch.matmul(basis, spec)[..., :n_frames]  # (batch, n_mels, frames)
    return torch.log(mel.clamp(min=AUDIOLDM_STFT["log_floor"])).transpose(1, 2).unsqueeze(1)


class GriffinLimVocoder(ModelMixin, ConfigMixin):
    """
    A parameter-free vocoder: log-mel -> linear magnitudes (non-negative least squares through the filters'
    pseudo-inverse) -> Griffin-Lim phase recovery. Same interface as `SpeechT5HifiGan` in an AudioLDM pipeline:
    `forward(mel)` with `mel` of shape `(batch, frames, model_in_dim)` returns `(batch, frames * prod(upsample_rates))`.

    Args:
        model_in_dim (`int`, *optional*, defaults to `32`):
            Mel bins.
        sampling_rate (`int`, *optional*, defaults to `16000`):
            Output sampling rate.
        upsample_rates (`list[int]`, *optional*, defaults to `[4, 4, 4, 4]`):
            Their product is the hop length (256 samples = 16 ms at 16 kHz).
        n_fft (`int`, *optional*, defaults to `1024`):
            FFT size of analysis and synthesis.
        fmin (`float`, *optional*, defaults to `0.0`), fmax (`float`, *optional*, defaults to `8000.0`):
            Band edges of the mel filters.
        n_iter (`int`, *optional*, defaults to `32`):
            Griffin-Lim iterations.
    """

    @register_to_config
    def __init__(
        self,
        model_in_dim: int = 32,
        sampling_rate: int = 16000,
        upsample_rates: Sequence[int] = (4, 4, 4, 4),
        n_fft: int = 1024,
        fmin: float = 0.0,
        fmax: float = 8000.0,
        n_iter: int = 32,
    ):
        super().__init__()
        if n_iter < 1:
            raise ValueError(f"n_iter={n_iter} must be >= 1")
        hop = int(np.prod(upsample_rates))
        if hop > n_fft:
            raise ValueError(f"the hop prod(upsample_rates)={hop} must not exceed n_fft={n_fft}")
        basis = _mel_basis(n_fft, model_in_dim, sampling_rate, fmin, min(fmax, sampling_rate / 2))
        self.register_buffer("inverse_basis", torch.linalg.pinv(basis), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        # A parameter so that ModelMixin finds a dtype and device; it is never trained.
        self.scale = torch.nn.Parameter(torch.ones(()), requires_grad=False)

    def forward(self, spectrogram: torch.Tensor) -> torch.Tensor:
        config = self.config
        hop = int(np.prod(config.upsample_rates))
        mel = spectrogram.float()
        if mel.dim() == 2:
            mel = mel.unsqueeze(0)
        magnitude = torch.matmul(self.inverse_basis.to(mel.device), torch.exp(mel).transpose(1, 2)).clamp(min=0.0)
        frames = mel.shape[1]
        length = frames * hop
        window = self.window.to(mel.device)
        generator = torch.Generator(device="cpu").manual_seed(0)
        # One fixed initial phase shared by every clip, so a clip's waveform does not depend on its batch.
        phase = torch.rand(magnitude.shape[1:], generator=generator).to(mel.device).expand_as(magnitude) * 2 * np.pi
        spec = magnitude * torch.exp(1j * phase)
        for _ in range(config.n_iter):
            wave = torch.istft(spec, config.n_fft, hop, config.n_fft, window, center=True, length=length)
            rebuilt = torch.stft(wave, config.n_fft, hop, config.n_fft, window, center=True, return_complex=True)
            spec = magnitude * torch.exp(1j * torch.angle(rebuilt[..., :frames]))
        wave = torch.istft(spec, config.n_fft, hop, config.n_fft, window, center=True, length=length)
        return (self.scale * wave).to(spectrogram.dtype)


def tiny_unet(
    text_dim: int,
    *,
    latent_channels: int = 4,
    block_out_channels: Sequence[int] = (32, 64),
    sample_size: int = 16,
    seed: int = 0,
) -> UNet2DConditionModel:
    """
    A tiny AudioLDM-style UNet: no cross-attention; the text embedding enters through a `simple_projection` class
    embedding concatenated to the time embedding, as in `cvssp/audioldm-s-full-v2`.

    Args:
        text_dim (`int`):
            Width of the text embedding (the CLAP projection dimension).
        latent_channels (`int`, *optional*, defaults to `4`):
            VAE latent channels.
        block_out_channels (`Sequence[int]`, *optional*, defaults to `(32, 64)`):
            Channels per resolution.
        sample_size (`int`, *optional*, defaults to `16`):
            Latent frames (the pipeline's default clip length, as in AudioLDM).
        seed (`int`, *optional*, defaults to `0`):
            Seed of the initialisation; the global RNG is left alone.
    """
    n = len(block_out_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DConditionModel(
            sample_size=int(sample_size),
            in_channels=latent_channels,
            out_channels=latent_channels,
            down_block_types=("DownBlock2D",) * n,
            up_block_types=("UpBlock2D",) * n,
            mid_block_type="UNetMidBlock2D",
            block_out_channels=tuple(block_out_channels),
            layers_per_block=1,
            norm_num_groups=8,
            cross_attention_dim=text_dim,
            class_embed_type="simple_projection",
            projection_class_embeddings_input_dim=text_dim,
            class_embeddings_concat=True,
        )


def tiny_vae(
    *, latent_channels: int = 4, block_out_channels: Sequence[int] = (8, 16, 32), seed: int = 0
) -> AutoencoderKL:
    """A tiny `AutoencoderKL` on one-channel mel spectrograms; `2 ** (len(block_out_channels) - 1)` downsampling."""
    n = len(block_out_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKL(
            in_channels=1,
            out_channels=1,
            down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=1,
            latent_channels=latent_channels,
            norm_num_groups=8,
        )


def clap_text_encoder(clap: ClapModel) -> ClapTextModelWithProjection:
    """The text tower and projection of a `ClapModel` as the `ClapTextModelWithProjection` AudioLDM conditions on."""
    text_config = ClapTextConfig(**clap.config.text_config.to_dict())
    text_config.projection_dim = clap.config.projection_dim
    encoder = ClapTextModelWithProjection(text_config)
    state = {f"text_model.{k}": v for k, v in clap.text_model.state_dict().items()}
    state.update({f"text_projection.{k}": v for k, v in clap.text_projection.state_dict().items()})
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    missing = [k for k in missing if "position_ids" not in k]
    if missing or unexpected:
        raise RuntimeError(f"CLAP text tower does not fit ClapTextModelWithProjection: {missing} {unexpected}")
    return encoder.eval()


def build_tiny_tta_pipeline(
    clap: ClapModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    sampling_rate: int = 16000,
    n_mels: int = 32,
    hop_length: int = 256,
    latent_channels: int = 4,
    vae_channels: Sequence[int] = (8, 16, 32),
    unet_channels: Sequence[int] = (32, 64),
    clip_seconds: float = 1.0,
    num_train_timesteps: int = 1000,
    seed: int = 0,
) -> AudioLDMPipeline:
    """
    A tiny, randomly initialised `AudioLDMPipeline` built from configs, offline.

    The text encoder is `clap`'s text tower ([`clap_text_encoder`]): give a CLAP fitted on your data (an untrained
    one maps every prompt to nearly the same embedding). The vocoder is a [`GriffinLimVocoder`] with hop
    `hop_length`; the scheduler is DDIM with a scaled-linear beta schedule, as AudioLDM ships.

    Args:
        clap (`ClapModel`):
            Source of the text encoder.
        tokenizer (`PreTrainedTokenizerBase`):
            Its tokenizer.
        sampling_rate (`int`, *optional*, defaults to `16000`):
            Output sampling rate.
        n_mels (`int`, *optional*, defaults to `32`):
            Mel bins; a multiple of the VAE downsampling.
        hop_length (`int`, *optional*, defaults to `256`):
            Hop of the mel frames; a product of the vocoder's `upsample_rates` (a power of 4 or 2).
        latent_channels (`int`, *optional*, defaults to `4`):
            VAE latent channels.
        vae_channels (`Sequence[int]`, *optional*, defaults to `(8, 16, 32)`):
            VAE channels per resolution.
        unet_channels (`Sequence[int]`, *optional*, defaults to `(32, 64)`):
            UNet channels per resolution.
        clip_seconds (`float`, *optional*, defaults to `1.0`):
            Default clip length (sets the UNet's `sample_size`).
        num_train_timesteps (`int`, *optional*, defaults to `1000`):
            Diffusion steps of the noise schedule.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the initialisation.

    Returns:
        `diffusers.AudioLDMPipeline`.
    """
    factor = 2 ** (len(vae_channels) - 1)
    if n_mels % factor:
        raise ValueError(f"n_mels={n_mels} must be a multiple of the VAE downsampling {factor}")
    rates, rest = [], hop_length
    while rest > 1:
        step = 4 if rest % 4 == 0 else 2
        if rest % step:
            raise ValueError(f"hop_length={hop_length} must be a power of 2")
        rates.append(step)
        rest //= step
    frames = int(np.ceil(clip_seconds * sampling_rate / hop_length / factor)) * factor
    text_encoder = clap_text_encoder(clap)
    vocoder = GriffinLimVocoder(model_in_dim=n_mels, sampling_rate=sampling_rate, upsample_rates=rates)
    scheduler = DDIMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_start=0.0015,
        beta_end=0.0195,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )
    pipeline = AudioLDMPipeline(
        vae=tiny_vae(latent_channels=latent_channels, block_out_channels=vae_channels, seed=seed),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=tiny_unet(
            clap.config.projection_dim,
            latent_channels=latent_channels,
            block_out_channels=unet_channels,
            sample_size=frames // factor,
            seed=seed + 1,
        ),
        scheduler=scheduler,
        vocoder=vocoder,
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def load_tta_pipeline(
    name_or_path: str | os.PathLike = DEFAULT_TTA_CHECKPOINT,
    *,
    device: str | torch.device | None = None,
    unet_name_or_path: str | os.PathLike | None = None,
) -> AudioLDMPipeline:
    """
    Load an AudioLDM pipeline: a Hub id such as `cvssp/audioldm-s-full-v2`, or a folder written by `save_pretrained`
    (a tiny pipeline's [`GriffinLimVocoder`] included). Safetensors only; remote code is never run.

    Args:
        name_or_path (`str` or `os.PathLike`, *optional*, defaults to `"cvssp/audioldm-s-full-v2"`):
            The pipeline.
        device (`str` or `torch.device`, *optional*):
            Where to move it.
        unet_name_or_path (`str` or `os.PathLike`, *optional*):
            A fine-tuned UNet (e.g. the output of [`~hfpref.trainers.RewardWeightedDiffusionTrainer`]) that replaces
            the pipeline's.
    """
    from ..utils.distributed import zero3_init_disabled

    with zero3_init_disabled():  # whole on every process; a ZeRO-3 engine partitions the UNet it trains when prepared
        return _load_tta_pipeline(name_or_path, device=device, unet_name_or_path=unet_name_or_path)


def _load_tta_pipeline(name_or_path, *, device=None, unet_name_or_path=None):
    kwargs = {}
    check_pretrained_path(name_or_path, what="AudioLDM pipeline")
    index = Path(name_or_path) / "model_index.json"
    if index.is_file():
        vocoder_entry = json.loads(index.read_text()).get("vocoder", [None, None])
        if vocoder_entry[1] == GriffinLimVocoder.__name__:
            kwargs["vocoder"] = load_pretrained(GriffinLimVocoder, Path(name_or_path) / "vocoder")
    if unet_name_or_path is not None:
        kwargs["unet"] = load_pretrained(UNet2DConditionModel, unet_name_or_path)
    pipeline = load_pretrained(AudioLDMPipeline, str(name_or_path), **kwargs)
    if device is not None:
        pipeline = pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@torch.no_grad()
def encode_prompts(pipeline: AudioLDMPipeline, prompts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """The normalised CLAP `text_embeds` AudioLDM conditions on, `(len(prompts), projection_dim)`."""
    out = []
    for start in range(0, len(prompts), batch_size):
        batch = list(prompts[start : start + batch_size])
        out.append(pipeline._encode_prompt(batch, pipeline._execution_device, 1, False))
    return torch.cat(out) if out else torch.zeros(0)


@torch.no_grad()
def generate_audio(
    pipeline: AudioLDMPipeline,
    prompts: Sequence[str],
    *,
    num_waveforms_per_prompt: int = 1,
    num_inference_steps: int = 10,
    guidance_scale: float = 1.0,
    audio_length_in_s: float | None = None,
    seed: int = 0,
    batch_size: int = 16,
) -> list[list[np.ndarray]]:
    """
    Render `num_waveforms_per_prompt` clips per prompt with the pipeline, reproducibly.

    Prompt `i`'s clips depend only on `(seed, i)`, not on the batch they are rendered in.

    Args:
        pipeline (`AudioLDMPipeline`):
            The pipeline.
        prompts (`Sequence[str]`):
            Prompts.
        num_waveforms_per_prompt (`int`, *optional*, defaults to `1`):
            Clips per prompt (BATON renders 5 for annotation).
        num_inference_steps (`int`, *optional*, defaults to `10`):
            Denoising steps.
        guidance_scale (`float`, *optional*, defaults to `1.0`):
            Classifier-free guidance; 1 disables it (AudioLDM's default is 2.5, for models trained with prompt
            dropout).
        audio_length_in_s (`float`, *optional*):
            Clip length; the pipeline's default when `None`.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the initial noise.
        batch_size (`int`, *optional*, defaults to `16`):
            Prompts per pipeline call.

    Returns:
        `list[list[np.ndarray]]`: for each prompt, its float32 waveforms at the vocoder's sampling rate.
    """
    if num_waveforms_per_prompt < 1:
        raise ValueError(f"num_waveforms_per_prompt={num_waveforms_per_prompt} must be >= 1")
    prompts = list(prompts)
    out: list[list[np.ndarray]] = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        generators = [
            torch.Generator(device="cpu").manual_seed(
                int(np.random.SeedSequence([seed, start + i, k]).generate_state(1)[0])
            )
            for i in range(len(batch))
            for k in range(num_waveforms_per_prompt)
        ]
        audios = pipeline(
            batch,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            num_waveforms_per_prompt=num_waveforms_per_prompt,
            audio_length_in_s=audio_length_in_s,
            generator=generators,
            output_type="np",
        ).audios
        audios = np.asarray(audios, dtype=np.float32)
        for i in range(len(batch)):
            out.append(list(audios[i * num_waveforms_per_prompt : (i + 1) * num_waveforms_per_prompt]))
    return out


def sampling_rate_of(pipeline: AudioLDMPipeline) -> int:
    """The output sampling rate of a pipeline (its vocoder's)."""
    return int(pipeline.vocoder.config.sampling_rate)


def fit_vae(
    pipeline: AudioLDMPipeline,
    clips: Sequence[np.ndarray],
    *,
    steps: int = 300,
    batch_size: int = 32,
    learning_rate: float = 2e-3,
    kl_weight: float = 1e-4,
    seed: int = 0,
) -> dict[str, float]:
    """
    Fit a (tiny) pipeline's VAE to reconstruct the log-mel spectrograms of `clips`, then set its `scaling_factor` to
    `1 / std` of the latents, as Stable Diffusion and AudioLDM do, so the diffusion sees unit-variance latents.

    Args:
        pipeline (`AudioLDMPipeline`): its VAE is trained in place (left in eval mode, frozen).
        clips (`Sequence[np.ndarray]`): mono waveforms at the vocoder's sampling rate.
        steps (`int`, *optional*, defaults to `300`), batch_size (`int`, *optional*, defaults to `32`),
        learning_rate (`float`, *optional*, defaults to `2e-3`): the schedule (AdamW).
        kl_weight (`float`, *optional*, defaults to `1e-4`): weight of the KL term.
        seed (`int`, *optional*, defaults to `0`): seed of batches and posterior samples.

    Returns:
        `dict[str, float]`: `reconstruction_mse` (log-mel, last 10% of steps), `scaling_factor`.
    """
    vae = pipeline.vae
    n_frames = int(pipeline.unet.config.sample_size) * pipeline.vae_scale_factor
    mels = waveform_to_log_mel(list(clips), pipeline.vocoder, n_frames)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=learning_rate)
    vae.requires_grad_(True).train()
    losses = []
    for _ in range(steps):
        rows = torch.randint(0, len(mels), (min(batch_size, len(mels)),), generator=generator)
        x = mels[rows].to(vae.device, vae.dtype)
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator).to(x.device)
        reconstruction = vae.decode(z).sample
        mse = F.mse_loss(reconstruction, x)
        loss = mse + kl_weight * posterior.kl().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(mse.item())
    vae.requires_grad_(False).eval()
    with torch.no_grad():
        latents = torch.cat([vae.encode(mels[i : i + 64]).latent_dist.mean for i in range(0, len(mels), 64)])
    scaling_factor = float(1.0 / latents.std().clamp(min=1e-6))
    vae.register_to_config(scaling_factor=scaling_factor)
    tail = losses[-max(1, steps // 10) :]
    return {"reconstruction_mse": float(np.mean(tail)), "scaling_factor": scaling_factor}
