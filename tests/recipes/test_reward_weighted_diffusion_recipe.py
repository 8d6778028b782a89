import csv
import functools
import json
from pathlib import Path

import numpy as np
import pytest
from recipe_helpers import load_recipe, yaml_args

from hfpref.data.audio import decode_audio_column
from hfpref.data.synthetic.audio_world import make_world
from hfpref.data.tta_feedback import write_feedback_skeleton
from hfpref.encoders.clap import ClapEmbedder
from hfpref.rewards import CLAPRewardConfig, CLAPRewardModel
from hfpref.trainers import RewardWeightedDiffusionConfig


RECIPES = Path(__file__).resolve().parents[2] / "recipes"

_recipe = functools.partial(load_recipe, "reward_weighted_diffusion")
_yaml = yaml_args
CONFIGS = RECIPES / "reward_weighted_diffusion"


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    pass


def _parse(argv):
    return _recipe().make_parser().parse_args_and_config(argv)


def _reward_model_on(clap_dir, path):
    embedder = ClapEmbedder.from_pretrained(str(clap_dir), show_progress=False)
    config = CLAPRewardConfig(
        embedding_dim=embedder.embedding_dim,
        hidden_sizes=[16],
        clap_checkpoint=str(clap_dir),
        clap_fingerprint=embedder.fingerprint,
    )
    CLAPRewardModel(config).save_pretrained(path)
    return path


@pytest.fixture
def reward_model_dir(tmp_path, tiny_clap_dir):
    return _reward_model_on(tiny_clap_dir, tmp_path / "rm")


@pytest.fixture
def reward_model_dir_48k(tmp_path):
    """A reward model on a tiny CLAP that takes 48 kHz audio, as LAION's do, while the pipeline renders 16 kHz."""
    from hfpref.encoders.clap import build_tiny_clap

    world = make_world(48, seed=99, clip_seconds=1.0)
    model, processor = build_tiny_clap([c for refs in world["references"] for c in refs], sampling_rate=48_000)
    model.save_pretrained(tmp_path / "clap48")
    processor.save_pretrained(tmp_path / "clap48")
    return _reward_model_on(tmp_path / "clap48", tmp_path / "rm48")


class ClapInputSpy:
    """
    Records every waveform handed to CLAP: the clip lengths and declared rate of each `ClapEmbedder.embed_audio`
    call, and the length and rate of each clip reaching the feature extractor (after any resampling).
    """

    def __init__(self, monkeypatch):
        from transformers import ClapFeatureExtractor

        self.declared, self.extracted = [], []
        embed_audio, extract = ClapEmbedder.embed_audio, ClapFeatureExtractor.__call__

        def spy_embed(embedder, arrays, **kwargs):
            self.declared += [(len(a), kwargs.get("sampling_rate")) for a in arrays]
            return embed_audio(embedder, arrays, **kwargs)

        def spy_extract(extractor, raw_speech, *args, **kwargs):
            self.extracted.append((len(raw_speech), kwargs.get("sampling_rate"), extractor.sampling_rate))
            return extract(extractor, raw_speech, *args, **kwargs)

        monkeypatch.setattr(ClapEmbedder, "embed_audio", spy_embed)
        monkeypatch.setattr(ClapFeatureExtractor, "__call__", spy_extract)


TINY = dict(
    tiny_pipeline=True,
    tiny_vae_steps=2,
    num_inference_steps=2,
    guidance_scale=1.0,
    audio_length_in_s=1.0,
    eval_prompts=4,
    eval_clips_per_prompt=1,
    max_steps=2,
    per_device_train_batch_size=4,
    learning_rate=1e-3,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    use_cpu=True,
    disable_tqdm=True,
)


@pytest.mark.parametrize("name", ["config_baton.yaml", "config_synthetic.yaml"])
def test_shipped_configs_parse(name):
    script, args, model = _parse(["--config", str(CONFIGS / name)])
    assert isinstance(args, RewardWeightedDiffusionConfig) and args.output_dir
    assert script.reward_model_name_or_path and args.beta == 0.5


def test_shipped_evaluations_render_two_clips_per_task_subset():
    """Every shipped config's held-out evaluation can compute its per-task Frechet distances."""
    from hfpref.scripts.reward_weighted_diffusion import check_evaluation_settings

    for path in sorted(CONFIGS.glob("*.yaml")):
        script, _, _ = _parse(["--config", str(path)])
        check_evaluation_settings(script.eval_prompts, script.eval_clips_per_prompt, frechet=True)


def test_baton_config_has_the_paper_settings():
    script, args, model = _parse(["--config", str(CONFIGS / "config_baton.yaml")])
    assert (args.beta, args.num_train_epochs, args.learning_rate, args.per_device_train_batch_size, args.optim) == (
        0.5,
        10,
        1e-5,
        6,
        "adamw_torch",
    )
    assert script.mix_ratio == 1.0 and script.human_reward == "reward_model"
    assert model.pipeline_name_or_path == "cvssp/audioldm-s-full-v2" and not model.tiny_pipeline


def test_unknown_yaml_key_is_fatal(tmp_path):
    argv = _yaml(tmp_path / "c.yaml", synthetic_clips=8, reward_model_name_or_path="rm", output_dir="o", mix_rato=2.0)
    with pytest.raises(ValueError, match="mix_rato"):
        _parse(argv)


def test_bad_script_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="exactly one data source"):
        _parse(_yaml(tmp_path / "a.yaml", reward_model_name_or_path="rm", output_dir="o"))
    with pytest.raises(ValueError, match=r"human_reward='votes' is not one of \['reward_model', 'label'\]"):
        _parse(
            _yaml(
                tmp_path / "b.yaml",
                synthetic_clips=8,
                reward_model_name_or_path="rm",
                output_dir="o",
                human_reward="votes",
            )
        )


def test_recipe_runs_on_the_synthetic_world(tmp_path, reward_model_dir_48k, monkeypatch):
    """
    The whole recipe with a 48 kHz CLAP and a 16 kHz pipeline: every waveform CLAP gets (reward labels, the
    before / after CLAP score, reward score and Frechet distance) is 1 s long at the rate it is declared at, and
    reaches the feature extractor at its 48 kHz as 1 s of audio; a 16 kHz render handed over as it is would be
    1/3 s long there (3x sped up).
    """
    spy = ClapInputSpy(monkeypatch)
    out = tmp_path / "out"
    argv = _yaml(
        tmp_path / "synthetic.yaml",
        synthetic_clips=12,
        reward_model_name_or_path=str(reward_model_dir_48k),
        n_prompts=4,
        clips_per_prompt=2,
        output_dir=str(out),
        **TINY,
    )
    trainer, metrics = _recipe().main(*_parse(argv))
    logged = [e for e in trainer.state.log_history if "loss" in e]
    assert len(logged) == 2 and all(np.isfinite(e["loss"]) and e["pretrain_loss"] > 0 for e in logged)
    # 12 world clips x (true, wrong caption) human rows + as many of the 8 rendered clips as exist.
    assert trainer.train_dataset.num_rows == 24 + 8
    for key in (
        "start_all_reward_score",
        "eval_all_reward_score",
        "eval_integrity_clap_score",
        "eval_temporal_clap_score",
    ):
        assert np.isfinite(metrics[key]), key
    assert np.isfinite(metrics["eval_all_frechet_distance"])
    assert (out / "diffusion_pytorch_model.safetensors").is_file()
    assert json.loads((out / "eval_results.json").read_text()) == pytest.approx(metrics)
    card = (out / "README.md").read_text()
    assert "BATON" in card and "| eval_all_reward_score |" in card and "| start_all_reward_score |" in card

    # World clips and renders are 1 s (renders a whole number of VAE frames: up to 1.1 s).
    seconds = [n / rate for n, rate in spy.declared]
    assert spy.declared and all(0.99 <= s <= 1.1 for s in seconds), sorted(set(spy.declared))
    assert any(rate == 16_000 for _, rate in spy.declared)  # the renders are handed over at the pipeline's rate
    assert spy.extracted and all(told == own == 48_000 for _, told, own in spy.extracted)
    assert all(0.99 <= n / 48_000 <= 1.1 for n, _, _ in spy.extracted), sorted({n for n, _, _ in spy.extracted})


def test_recipe_reads_an_annotated_feedback_file(tmp_path, reward_model_dir):
    """The BATON path: a tta-generate skeleton, half labelled; the unlabelled half gets reward-model labels."""
    world = make_world(8, seed=3, clip_seconds=1.0)
    decoded, _ = decode_audio_column(world, "audio", 16000)
    path = write_feedback_skeleton(
        list(world["caption"]), [[c] for c in decoded], tmp_path / "fb", sampling_rate=16000
    )
    rows = list(csv.DictReader(path.open()))
    for i, row in enumerate(rows):
        row["label"] = str(i % 2) if i < 4 else ""  # 4 annotated, 4 left for the reward model
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    world.save_to_disk(str(tmp_path / "pretrain"))
    out = tmp_path / "out"
    argv = _yaml(
        tmp_path / "baton.yaml",
        feedback_file=str(path),
        pretrain_dataset=str(tmp_path / "pretrain"),
        reward_model_name_or_path=str(reward_model_dir),
        output_dir=str(out),
        **TINY,
    )
    trainer, metrics = _recipe().main(*_parse(argv))
    assert trainer.train_dataset.num_rows == 8  # 4 human + 4 reward-labelled (1:1)
    assert np.isfinite(metrics["eval_all_reward_score"])
    assert (out / "diffusion_pytorch_model.safetensors").is_file() and (out / "README.md").is_file()


@pytest.mark.parametrize(("eval_prompts", "eval_clips_per_prompt"), [(2, 1), (3, 1)])
def test_evaluation_settings_without_two_clips_per_subset_are_refused_before_anything_runs(
    tmp_path, reward_model_dir, monkeypatch, eval_prompts, eval_clips_per_prompt
):
    """
    With a reference set, each task subset's Frechet distance needs 2 clips: 2 prompts x 1 clip (1 integrity,
    1 temporal) or 3 x 1 (2 + 1) must be refused with the settings named, before any rendering or training.
    """
    import hfpref.scripts.reward_weighted_diffusion as script

    def no_rendering(*args, **kwargs):
        raise AssertionError("rendered before the evaluation settings were checked")

    monkeypatch.setattr(script, "generate_audio", no_rendering)
    monkeypatch.setattr(script, "resolve_reward_model", no_rendering)
    settings = {**TINY, "eval_prompts": eval_prompts, "eval_clips_per_prompt": eval_clips_per_prompt}
    argv = _yaml(
        tmp_path / "c.yaml",
        synthetic_clips=4,
        reward_model_name_or_path=str(reward_model_dir),
        output_dir=str(tmp_path / "out"),
        **settings,
    )
    match = rf"eval_prompts={eval_prompts} with eval_clips_per_prompt=1 renders .* at least 2 per subset"
    with pytest.raises(ValueError, match=match):
        _recipe().main(*_parse(argv))
    # Enough clips per subset, or no reference set (beta 0, no original data), passes the check.
    script.check_evaluation_settings(eval_prompts, 2, frechet=True)
    script.check_evaluation_settings(eval_prompts, 1, frechet=False)
    assert script.eval_task_sizes(4, 1) == {"integrity": 2, "temporal": 2}
