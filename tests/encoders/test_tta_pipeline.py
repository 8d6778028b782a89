import numpy as np
import pytest
import torch
from diffusers import AudioLDMPipeline
from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

from hfpref.encoders.clap import build_tiny_clap
from hfpref.encoders.tta_pipeline import (
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
    from hfpref.data.synth import make_world

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
