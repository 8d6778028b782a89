"""recipes/caption_grpo.py end to end offline: a tiny saved Llama learns to caption speech-token prompts with GRPO."""

import functools
import math
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from datasets import Dataset
from recipe_helpers import load_recipe, yaml_args
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from hfpref.encoders.speech_tokens import build_tiny_speech_llm, speech_token_ids
from hfpref.scripts.caption_grpo import caption_reward_funcs, make_parser
from hfpref.scripts.utils import CaptionGRPOScriptArguments
from hfpref.trainers import CaptionGRPOConfig


RECIPES = Path(__file__).resolve().parents[2] / "recipes"

_recipe = functools.partial(load_recipe, "caption_grpo")
_yaml = yaml_args
CONFIG = RECIPES / "caption_grpo/config_synthetic.yaml"
CPU = {
    "save_strategy": "no",
    "report_to": "none",
    "use_cpu": True,
    "bf16": False,
    "activation_checkpointing": False,
    "disable_tqdm": True,
    "seed": 0,
}


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """A tiny Llama samples token by token."""


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory):
    """A random 2-layer Llama saved with its tokenizer and only 8 speech tokens, so the recipe has to add 8 more."""
    from hfpref.data.synthetic.audio_world import make_world

    world = make_world(16, seed=0, clip_seconds=1.0)
    texts = [c for refs in world["references"] for c in refs] + ["Describe the sound."]
    model, tokenizer = build_tiny_speech_llm(texts, 8, seed=0, max_position_embeddings=128)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_shipped_config_parses_offline_and_unknown_keys_are_fatal(tmp_path):
    script_args, training_args, model_args = make_parser().parse_args_and_config(["--config", str(CONFIG)])
    assert isinstance(training_args, CaptionGRPOConfig)
    assert script_args.tiny_llm and model_args.model_name_or_path is None and script_args.synthetic_clips == 64
    assert script_args.reward_funcs == ["oracle"] and training_args.beta == 0.0
    assert (training_args.speech_tokens, training_args.n_codes) == ("frame_band", 16)
    assert training_args.per_device_eval_batch_size % training_args.num_generations == 0
    settings = yaml.safe_load(CONFIG.read_text())
    with pytest.raises(ValueError, match="lerning_rate"):
        make_parser().parse_args_and_config(_yaml(tmp_path / "typo.yaml", **settings, lerning_rate=1e-4))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"speech_tokens": "encodec"}, r"speech_tokens='encodec' is not one of \['frame_band', 'speechtokenizer'\]"),
        ({"speech_tokens": "speechtokenizer"}, "needs speech_tokenizer_path"),
        ({"speech_tokenizer_path": "st"}, "only read with speech_tokens='speechtokenizer'"),
        ({"n_codes": 0}, "n_codes=0 must be a positive"),
    ],
)
def test_config_says_what_would_be_valid(overrides, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        CaptionGRPOConfig(output_dir=str(tmp_path), **CPU, **overrides)


def test_rewards_by_name_with_the_oracle_first_and_shaped():
    train = Dataset.from_dict(
        {"events": [["siren", "clicking"]], "references": [["a siren wails", "a siren then clicks"]]}
    )
    args = CaptionGRPOScriptArguments(reward_funcs=["oracle"], length_penalty_alpha=1.0, expected_length=2)
    (reward,), embedder = caption_reward_funcs(args, train, "unused")
    assert embedder is None and reward.__name__ == "oracle_reward_length_penalty"
    # 1.0 for naming both events in order, minus 1.0 * (4 - 2) / 2 for two words too many.
    assert reward(["a siren then clicking"], events=train["events"]) == [0.0]
    with pytest.raises(ValueError, match=r"unknown reward 'bleu'; known rewards: \['cider_d', .*'oracle'"):
        caption_reward_funcs(CaptionGRPOScriptArguments(reward_funcs=["oracle", "bleu"]), train, "unused")
    with pytest.raises(ValueError, match="`events` column"):
        caption_reward_funcs(args, train.remove_columns("events"), "unused")


def test_settings_the_trainer_cannot_run_are_refused_before_any_work(tmp_path, llm_dir):
    argv = _yaml(
        tmp_path / "kl.yaml", model_name_or_path=str(llm_dir), n_codes=16, beta=0.1, output_dir=str(tmp_path), **CPU
    )
    with pytest.raises(ValueError, match="has no speech tokens and beta=0.1"):
        _recipe().main(*make_parser().parse_args_and_config(argv))
    argv = _yaml(tmp_path / "tiny.yaml", tiny_llm=True, beta=0.1, output_dir=str(tmp_path), **CPU)
    with pytest.raises(ValueError, match="tiny_llm builds the model in memory"):
        _recipe().main(*make_parser().parse_args_and_config(argv))
    argv = _yaml(tmp_path / "eval.yaml", tiny_llm=True, per_device_eval_batch_size=6, output_dir=str(tmp_path), **CPU)
    with pytest.raises(
        ValueError, match="per_device_eval_batch_size=6 times 1 process.* multiple of the 8 generations"
    ):
        _recipe().main(*make_parser().parse_args_and_config(argv))


def test_recipe_trains_the_saved_llama_and_writes_model_and_card(tmp_path, llm_dir):
    out = tmp_path / "out"
    argv = _yaml(
        tmp_path / "grpo.yaml",
        model_name_or_path=str(llm_dir),
        synthetic_clips=12,
        test_size=0.25,
        reward_funcs=["oracle"],
        # L_exp = 2 words: the random policy writes 2-3 words in 8 tokens, so the rewards of a group differ.
        length_penalty_alpha=1.0,
        expected_length=2,
        n_codes=16,
        num_generations=4,
        max_completion_length=8,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=4,
        max_steps=3,
        learning_rate=1e-2,
        beta=0.0,
        logging_steps=1,
        output_dir=str(out),
        **CPU,
    )
    trainer, metrics = _recipe().main(*make_parser().parse_args_and_config(argv))

    logged = [e for e in trainer.state.log_history if "loss" in e]
    assert trainer.state.global_step == 3 and len(logged) == 3
    for key in ["loss", "reward", "rewards/oracle_reward_length_penalty/mean"]:
        assert all(math.isfinite(e[key]) for e in logged), key
    assert math.isfinite(metrics["eval_reward"])

    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(speech_token_ids(tokenizer)) == 16  # the checkpoint's 8 plus the 8 the recipe added
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)
    start = load_file(llm_dir / "model.safetensors")
    trained = load_file(out / "model.safetensors")
    changed = [n for n, p in start.items() if p.shape == trained[n].shape and not torch.equal(p, trained[n])]
    assert len(changed) == len([n for n, p in start.items() if p.shape == trained[n].shape])  # every tensor moved

    card = (out / "README.md").read_text()
    assert "caption-grpo" in card and "Group Relative Policy Optimization" in card and "oracle" in card
    # The card's quick start captions a clip with the saved model.
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    assert str(out) not in snippet and '"out"' in snippet  # the repo id (the folder's name), never a local path
    snippet = snippet.replace('"out"', repr(str(out))).replace('"clip.wav"', repr(str(tmp_path / "c.wav")))
    sf.write(tmp_path / "c.wav", np.sin(2 * np.pi * 440 * np.arange(22050) / 22050).astype(np.float32), 22050)
    exec(snippet, {})


def test_shipped_config_runs_offline_with_a_tiny_llm(tmp_path):
    out = tmp_path / "out"
    overrides = {"synthetic_clips": 8, "max_steps": 2, "max_completion_length": 8, "output_dir": str(out), **CPU}
    argv = ["--config", str(CONFIG)] + [f"--{k}={v}" for k, v in overrides.items()]
    trainer, metrics = _recipe().main(*make_parser().parse_args_and_config(argv))
    assert trainer.state.global_step == 2 and math.isfinite(metrics["eval_reward"])
    assert len(speech_token_ids(AutoTokenizer.from_pretrained(out))) == 16
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()
