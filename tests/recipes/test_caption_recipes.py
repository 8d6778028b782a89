import json
import shutil
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


def test_rl_with_an_ensemble_reward_and_checkpoint_selection_by_a_held_out_reward_model(tmp_path, tiny_clap_dir):
    """
    RL rewarded by a 3-member reward-model ensemble at `reward_ensemble_lambda`, with a second reward model that
    never reaches the advantage (`selection_reward`, weight 0): every evaluation logs its mean reward of the held-out
    clips' greedy captions, and `load_best_model_at_end` keeps the checkpoint it scores best.
    """
    from safetensors.torch import load_file

    embedder = ClapEmbedder.from_pretrained(str(tiny_clap_dir), show_progress=False)
    paths = {}
    for name, members, seed in (("ensemble", 3, 0), ("selection", 1, 1)):
        torch.manual_seed(seed)
        config = CLAPRewardConfig(
            embedding_dim=embedder.embedding_dim, hidden_sizes=[16], num_members=members,
            clap_checkpoint=str(tiny_clap_dir), clap_fingerprint=embedder.fingerprint,
        )  # fmt: skip
        paths[name] = tmp_path / name
        CLAPRewardModel(config).save_pretrained(paths[name])
    argv = _yaml(
        tmp_path / "rl.yaml",
        synthetic_clips=24,
        tiny_captioner=True,
        reward_model_name_or_path=str(paths["ensemble"]),
        reward_ensemble_lambda=1.0,
        length_penalty_alpha=None,
        selection_reward_model=str(paths["selection"]),
        loss_type="scst",
        max_steps=4,
        learning_rate=5e-2,
        max_new_tokens=8,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="steps",
        save_steps=1,
        metric_for_best_model="rewards/selection_reward",
        load_best_model_at_end=True,
        output_dir=str(tmp_path / "rl"),
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )
    script, args, model_args = TrlParser(RL_TYPES).parse_args_and_config(argv)
    trainer, _ = _recipe("caption_rl").main(script, args, model_args)
    assert trainer.args.reward_weights == [1.0, 0.0] and trainer.reward_names[-1] == "selection_reward"
    scores = {
        e["step"]: e["eval_rewards/selection_reward"]
        for e in trainer.state.log_history
        if "eval_rewards/selection_reward" in e
    }
    assert sorted(scores)[:4] == [1, 2, 3, 4]
    best = max((s for s in scores if s <= 4), key=lambda s: scores[s])
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{best}")
    kept = load_file(str(tmp_path / "rl" / f"checkpoint-{best}" / "model.safetensors"))
    final = trainer.model.state_dict()
    assert all(torch.equal(final[name], tensor) for name, tensor in kept.items() if name in final)
    # The RL reward is the ensemble's mean - 1.0 * std of its members (not the saved lambda, 0): fixed captions
    # scored through the trainer's reward callable.
    clips = trainer.train_dataset.select(range(3))
    captions = ["a dog barks", "rain falls", "an engine hums"]
    ensemble = CLAPRewardModel.from_pretrained(paths["ensemble"]).eval()
    audio = torch.tensor(clips["audio_embedding"])
    out = ensemble(audio_embedding=audio, text_embedding=torch.from_numpy(embedder.embed_text(captions)))
    members = out.member_rewards
    by_hand = members.mean(-1) - members.std(-1, unbiased=False)
    ensemble_reward = trainer.reward_funcs[0]
    assert ensemble_reward.__name__.startswith("reward_model_reward")
    scored = ensemble_reward(completions=captions, audio_embedding=clips["audio_embedding"])
    assert scored == pytest.approx(by_hand.tolist(), rel=1e-5)
    assert not torch.allclose(by_hand, members.mean(-1))  # lambda matters on these captions


def test_rl_kl_reference_is_the_checkpoint_given_not_the_policy(tmp_path):
    """
    `ref_model_name_or_path` makes another checkpoint the KL term's frozen reference (`hfpref loop` keeps round 0's
    captioner while the policy starts from the previous round's). Control: on the first step the policy's samples
    have zero KL to a frozen copy of the policy, so a KL above zero shows the given reference is the one used.
    """
    from safetensors.torch import load_file

    from hfpref.models.captioning import build_tiny_whisper_captioner

    sft_out = tmp_path / "sft"
    argv = _yaml(
        tmp_path / "sft.yaml", synthetic_clips=16, tiny_captioner=True, max_steps=2, per_device_train_batch_size=4,
        per_device_eval_batch_size=4, output_dir=str(sft_out), **COMMON,
    )  # fmt: skip
    _recipe("caption_sft").main(*TrlParser(SFT_TYPES).parse_args_and_config(argv))
    reference = AutoModelForSpeechSeq2Seq.from_pretrained(sft_out)
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in reference.model.decoder.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    shutil.copytree(sft_out, tmp_path / "ref")  # the processor files; the weights are replaced
    reference.save_pretrained(tmp_path / "ref")

    def rl(ref: str | None, out: str, **extra):
        argv = _yaml(
            tmp_path / f"{out}.yaml", synthetic_clips=16, model_name_or_path=str(sft_out), tiny_reward_model=True,
            loss_type="scst", max_steps=1, max_new_tokens=6, per_device_train_batch_size=4,
            per_device_eval_batch_size=4, logging_steps=1, output_dir=str(tmp_path / out),
            **({"ref_model_name_or_path": ref} if ref else {}), **{"kl_coef": 0.1, **extra}, **COMMON,
        )  # fmt: skip
        trainer, _ = _recipe("caption_rl").main(*TrlParser(RL_TYPES).parse_args_and_config(argv))
        return trainer, next(e["kl"] for e in trainer.state.log_history if "kl" in e)

    trainer, kl = rl(str(tmp_path / "ref"), "rl-ref")
    saved = load_file(str(tmp_path / "ref" / "model.safetensors"))
    state = trainer.ref_model.state_dict()
    assert all(torch.equal(state[name], tensor) for name, tensor in saved.items() if name in state)
    assert kl > 1e-4
    _, kl_self = rl(None, "rl-self")
    assert abs(kl_self) < 1e-6

    with pytest.raises(ValueError, match="needs kl_coef > 0"):
        rl(str(tmp_path / "ref"), "rl-nokl", kl_coef=0.0)
    _, other = build_tiny_whisper_captioner(["zebra quartz", "violet xylophone"], clip_seconds=4.0)
    from hfpref.scripts.caption_rl import load_reference

    with pytest.raises(ValueError, match="another tokenizer than the policy"):
        load_reference(str(tmp_path / "ref"), CaptionRLConfig(output_dir=str(tmp_path / "x"), kl_coef=0.1), other)
