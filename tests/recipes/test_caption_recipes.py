import json
from pathlib import Path

import pytest
import torch
from recipe_helpers import load_recipe, yaml_args
from transformers import AutoModelForSpeechSeq2Seq
from trl import TrlParser

from hfpref.encoders.clap import ClapEmbedder
from hfpref.rewards import CLAPRewardConfig, CLAPRewardModel
from hfpref.scripts.utils import CaptionerArguments, CaptionRLScriptArguments, CaptionScriptArguments
from hfpref.trainers import CaptionRLConfig
from hfpref.trainers.caption_sft.caption_sft_config import CaptionSFTConfig


RECIPES = Path(__file__).resolve().parents[2] / "recipes"

_recipe = load_recipe
_yaml = yaml_args
SFT_TYPES = (CaptionScriptArguments, CaptionSFTConfig, CaptionerArguments)
RL_TYPES = (CaptionRLScriptArguments, CaptionRLConfig, CaptionerArguments)


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Every test here decodes token by token with tiny models."""


COMMON = {"save_strategy": "no", "report_to": "none", "use_cpu": True, "disable_tqdm": True}


@pytest.mark.parametrize(
    "config, types",
    [
        ("caption_sft/config_synthetic.yaml", SFT_TYPES),
        ("caption_rl/config_scst.yaml", RL_TYPES),
        ("caption_rl/config_ppo.yaml", RL_TYPES),
    ],
)
def test_shipped_configs_parse(config, types):
    parsed = TrlParser(types).parse_args_and_config(["--config", str(RECIPES / config)])
    assert parsed[1].output_dir


def test_scst_config_has_the_paper_settings():
    script, args, _ = TrlParser(RL_TYPES).parse_args_and_config(
        ["--config", str(RECIPES / "caption_rl/config_scst.yaml")]
    )
    assert script.reward_funcs == ["reward_model"] and script.length_penalty_alpha == 0.4
    assert (args.loss_type, args.per_device_train_batch_size, args.warmup_epochs, args.step_decay_every_epochs) == (
        "scst",
        128,
        2,
        10,
    )


def test_sft_then_rl_recipes_from_yaml(tmp_path, tiny_clap_dir):
    sft_out, rl_out, rm_dir = tmp_path / "sft", tmp_path / "rl", tmp_path / "rm"
    argv = _yaml(
        tmp_path / "sft.yaml",
        synthetic_clips=24,
        tiny_captioner=True,
        max_steps=3,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        output_dir=str(sft_out),
        **COMMON,
    )
    _, sft_metrics = _recipe("caption_sft").main(*TrlParser(SFT_TYPES).parse_args_and_config(argv))
    assert (sft_out / "model.safetensors").is_file() and (sft_out / "README.md").is_file()
    assert torch.isfinite(torch.tensor(sft_metrics["eval_loss"]))
    AutoModelForSpeechSeq2Seq.from_pretrained(sft_out)

    embedder = ClapEmbedder.from_pretrained(str(tiny_clap_dir), show_progress=False)
    config = CLAPRewardConfig(
        embedding_dim=embedder.embedding_dim,
        hidden_sizes=[16],
        clap_checkpoint=str(tiny_clap_dir),
        clap_fingerprint=embedder.fingerprint,
    )
    CLAPRewardModel(config).save_pretrained(rm_dir)

    argv = _yaml(
        tmp_path / "rl.yaml",
        synthetic_clips=24,
        model_name_or_path=str(sft_out),
        reward_funcs=["reward_model", "clap_similarity"],
        reward_weights=[1.0, 0.5],
        reward_model_name_or_path=str(rm_dir),
        length_penalty_alpha=0.4,
        loss_type="scst",
        max_steps=2,
        max_new_tokens=8,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        output_dir=str(rl_out),
        license="apache-2.0",
        **COMMON,
    )
    trainer, metrics = _recipe("caption_rl").main(*TrlParser(RL_TYPES).parse_args_and_config(argv))
    logged = [e for e in trainer.state.log_history if "loss" in e]
    assert len(logged) == 2
    assert {"rewards/reward_model_reward_length_penalty", "rewards/clap_similarity_reward"} <= set(logged[0])
    assert "eval_reward" in metrics and json.loads((rl_out / "eval_results.json").read_text())
    card = (rl_out / "README.md").read_text()
    assert (rl_out / "model.safetensors").is_file() and "hfpref" in card
    assert "k3 (loss exp(-d) + d - 1: gradient of KL(ref || pi))" in card
    assert (
        "\nlicense: apache-2.0\n" in card
    )  # the config's --license reaches the card's front matter  # the card says which KL is optimised


def test_unknown_reward_name_is_refused(tmp_path):
    from hfpref.rewards.functions import build_reward_funcs

    with pytest.raises(ValueError, match=r"unknown reward 'bleu_reward'; known rewards: \["):
        build_reward_funcs(["bleu_reward"])
