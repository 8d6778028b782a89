import numpy as np
import pytest
import torch
from diffusers import AudioLDMPipeline
from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

from hfpref.encoders.clap import build_tiny_clap
from hfpref.models.tta_pipeline import (
    GriffinLimVocoder,
    build_tiny_tta_pipeline,
    encode_prompts,
    fit_vae,
    generate_audio,
    load_tta_pipeline,
    waveform_to_log_mel,
)


PROMPTS = ["a siren wails", "rapid clicking", "a low hum followed by a bell ringing"]


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    pass


@pytest.fixture(scope="module")
def tiny_pipeline():
    clap, processor = build_tiny_clap(PROMPTS * 8, seed=0, clip_seconds=1.0, num_mel_bins=32, spec_size=64)
    return build_tiny_tta_pipeline(clap, processor.tokenizer, seed=0)


def _sine(freq: float, seconds: float = 1.0, sr: int = 16000) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def _peak_hz(wave: np.ndarray, sr: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(wave))
    return float(np.fft.rfftfreq(len(wave), 1 / sr)[spectrum.argmax()])


def test_tiny_pipeline_is_audioldm_with_clap_text_conditioning(tiny_pipeline):
    assert isinstance(tiny_pipeline, AudioLDMPipeline)
    assert tiny_pipeline.unet.config.class_embed_type == "simple_projection"
    embeds = encode_prompts(tiny_pipeline, PROMPTS)
    assert embeds.shape == (3, tiny_pipeline.text_encoder.config.projection_dim)
    assert torch.allclose(embeds.norm(dim=-1), torch.ones(3), atol=1e-5)  # AudioLDM normalises text_embeds


def test_log_mel_puts_a_tone_in_the_right_band_and_the_vocoder_brings_it_back(tiny_pipeline):
    vocoder = tiny_pipeline.vocoder
    mel = waveform_to_log_mel([_sine(1000.0), _sine(3000.0)], vocoder, n_frames=64)
    assert mel.shape == (2, 1, 64, 32)
    # The louder band of the 3 kHz tone sits above the 1 kHz one's.
    assert mel[1, 0].mean(0).argmax() > mel[0, 0].mean(0).argmax()
    wave = vocoder(mel[:, 0]).numpy()
    assert wave.shape == (2, 64 * 256) and np.isfinite(wave).all()
    # Griffin-Lim from 32 mel bands: the dominant frequency comes back within one band (~10%).
    assert abs(_peak_hz(wave[0]) - 1000) < 100 and abs(_peak_hz(wave[1]) - 3000) < 300


def test_generation_is_reproducible_and_independent_of_batching(tiny_pipeline):
    a = generate_audio(tiny_pipeline, PROMPTS, num_waveforms_per_prompt=2, num_inference_steps=3, batch_size=3, seed=1)
    b = generate_audio(tiny_pipeline, PROMPTS, num_waveforms_per_prompt=2, num_inference_steps=3, batch_size=1, seed=1)
    c = generate_audio(tiny_pipeline, PROMPTS, num_waveforms_per_prompt=2, num_inference_steps=3, seed=2)
    assert len(a) == 3 and all(len(group) == 2 for group in a)
    assert a[0][0].shape == (16384,) and a[0][0].dtype == np.float32  # default length: the UNet's sample_size
    for x, y in zip(a, b):
        np.testing.assert_allclose(x[1], y[1], rtol=0, atol=1e-3 * np.abs(x[1]).max())  # batched float sums
    assert not np.allclose(a[0][0], a[0][1]) and not np.allclose(a[0][0], c[0][0])


def test_save_and_load_roundtrip_offline(tiny_pipeline, tmp_path):
    tiny_pipeline.save_pretrained(tmp_path / "pipe")
    loaded = load_tta_pipeline(tmp_path / "pipe")
    assert isinstance(loaded.vocoder, GriffinLimVocoder)
    a = generate_audio(tiny_pipeline, PROMPTS[:1], num_inference_steps=2, audio_length_in_s=1.0)[0][0]
    b = generate_audio(loaded, PROMPTS[:1], num_inference_steps=2, audio_length_in_s=1.0)[0][0]
    assert a.shape == (16000,)
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * np.abs(a).max())


def test_a_speecht5_hifigan_vocoder_works_in_the_same_pipeline(tiny_pipeline):
    """The real AudioLDM vocoder class, tiny and random: mel settings and generation read its config."""
    config = SpeechT5HifiGanConfig(
        model_in_dim=32,
        sampling_rate=16000,
        upsample_initial_channel=16,
        upsample_rates=[4, 4, 4, 4],
        upsample_kernel_sizes=[8, 8, 8, 8],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]],
    )
    components = {**tiny_pipeline.components, "vocoder": SpeechT5HifiGan(config).eval()}
    pipeline = AudioLDMPipeline(**components)
    audio = generate_audio(pipeline, PROMPTS[:2], num_inference_steps=2, audio_length_in_s=1.0)
    assert audio[0][0].shape == (16000,) and np.isfinite(audio[0][0]).all()
    assert waveform_to_log_mel([audio[0][0]], pipeline.vocoder).shape[-1] == 32


def test_fit_vae_learns_to_reconstruct_and_sets_the_scaling_factor(tiny_pipeline):
    from hfpref.data.audio import decode_audio_column
    from hfpref.data.synthetic.audio_world import make_world

    clips, _ = decode_audio_column(make_world(16, seed=3, clip_seconds=1.0), "audio", 16000)
    vae_state = {k: v.clone() for k, v in tiny_pipeline.vae.state_dict().items()}
    try:
        first = fit_vae(tiny_pipeline, clips, steps=1, batch_size=8, seed=0)
        tiny_pipeline.vae.load_state_dict(vae_state)
        trained = fit_vae(tiny_pipeline, clips, steps=60, batch_size=8, seed=0)
    finally:
        tiny_pipeline.vae.load_state_dict(vae_state)
    assert trained["reconstruction_mse"] < 0.5 * first["reconstruction_mse"], (first, trained)
    assert tiny_pipeline.vae.config.scaling_factor == pytest.approx(trained["scaling_factor"])


def _librosa_slaney_mel(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax) (htk=False, norm="slaney"),
    written out: AudioLDM's TacotronSTFT builds its mel basis with it."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0

    def hz_to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)

    def mel_to_hz(m):
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    fft_freqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    ramps = np.subtract.outer(mel_f, fft_freqs)
    fdiff = np.diff(mel_f)
    weights = np.stack(
        [np.maximum(0, np.minimum(-ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1])) for i in range(n_mels)]
    )
    return weights * (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]


def _audioldm_fbank(waveform: np.ndarray, target_length: int) -> np.ndarray:
    """
    AudioLDM's own preprocessing of a training clip (haoheliu/AudioLDM, audioldm/audio/tools.py `wav_to_fbank` and
    audioldm/audio/stft.py `TacotronSTFT`, audioldm-s-full settings), re-implemented in numpy: mean removed, peak
    0.5, zero-padded to `target_length * 160` samples, reflect-padded by 512, a windowed Fourier basis of 1024
    points every 160 samples, magnitudes, Slaney mel (64 bands, 0 - 8 kHz), log(clamp(x, 1e-5)), frames cut to
    `target_length`. Returns `(target_length, 64)`.
    """
    waveform = waveform.astype(np.float64) - waveform.mean()
    waveform = waveform / (np.abs(waveform).max() + 1e-8) * 0.5
    padded = np.zeros(target_length * 160)
    padded[: min(len(waveform), len(padded))] = waveform[: len(padded)]
    signal = np.pad(padded, 512, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(1024) / 1024)  # scipy get_window("hann", fftbins=True)
    frames = np.stack([signal[i : i + 1024] * window for i in range(0, len(signal) - 1024 + 1, 160)])
    magnitude = np.abs(np.fft.rfft(frames, axis=1)).T  # (513, frames)
    mel = _librosa_slaney_mel(16000, 1024, 64, 0.0, 8000.0) @ magnitude
    return np.log(np.clip(mel, 1e-5, None)).T[:target_length]


def test_log_mel_matches_audioldm_preprocessing():
    """
    The mel features a released AudioLDM's VAE encodes, computed by hfpref from the pipeline's own vocoder config
    (audioldm-s-full-v2: SpeechT5HifiGan, 64 mels, hop 5*4*2*2*2 = 160), against AudioLDM's preprocessing written
    out above: a quiet clip with a DC offset (the case mean removal and peak normalisation change), one shorter than
    the target (zero-padded) and one longer (cut).
    """
    config = SpeechT5HifiGanConfig(model_in_dim=64, sampling_rate=16000, upsample_rates=[5, 4, 2, 2, 2])
    vocoder = type("Vocoder", (), {"config": config})()
    rng = np.random.default_rng(0)
    t = np.arange(24000) / 16000
    clips = [
        (0.03 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(t.size) + 0.2).astype(np.float32),
        _sine(2500.0, seconds=0.7),
        (0.9 * rng.standard_normal(40000)).astype(np.float32),
    ]
    target = 128  # 1.28 s of frames
    ours = waveform_to_log_mel(clips, vocoder, n_frames=target)
    assert ours.shape == (3, 1, target, 64)
    for i, clip in enumerate(clips):
        reference = _audioldm_fbank(clip, target)
        np.testing.assert_allclose(ours[i, 0].numpy(), reference, atol=2e-3, rtol=0)
    # Without AudioLDM's normalisation the quiet, offset clip lands elsewhere (what the VAE never saw in training).
    raw = waveform_to_log_mel(clips[:1], vocoder, n_frames=target, normalize=False)
    assert np.abs(raw[0, 0].numpy() - _audioldm_fbank(clips[0], target)).mean() > 1.0


def test_encoding_keeps_the_whole_clip_the_reward_scored(tiny_pipeline):
    """
    10 s clips are not cut to the pipeline's default length (1.02 s here, 5.12 s for AudioLDM): the latents cover
    the clip the reward model scored, and a shorter clip in the same data is zero-padded to the longest.
    """
    from datasets import Dataset

    from hfpref.data.audio import audio_value
    from hfpref.trainers.reward_weighted_diffusion.reward_weighted_diffusion_trainer import encode_audio_text

    default_frames = tiny_pipeline.unet.config.sample_size * tiny_pipeline.vae_scale_factor
    clips = [_sine(800.0, seconds=3.0), _sine(1600.0, seconds=2.0)]
    ds = Dataset.from_dict(
        {"audio": [audio_value(c, 16000, path=f"{i}.wav") for i, c in enumerate(clips)], "prompt": PROMPTS[:2]}
    )
    encoded = encode_audio_text(tiny_pipeline, ds)
    latent_frames = np.asarray(encoded[0]["latent_mean"]).shape[1]
    assert latent_frames * tiny_pipeline.vae_scale_factor == 188 > 2 * default_frames  # ceil(3 s / 256 / 4) * 4
    explicit = encode_audio_text(tiny_pipeline, ds, n_frames=default_frames)
    assert np.asarray(explicit[0]["latent_mean"]).shape[1] * tiny_pipeline.vae_scale_factor == default_frames
