"""
Every recipe's `recipes/<method>/config_tiny.yaml` runs from nothing prepared (synthetic data, tiny models built on the
fly) for 2 steps, in-process on 1 process, as the smoke command of its first comment runs it:

    accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/<method>.py \
        --config recipes/<method>/config_tiny.yaml --max_steps 2 --output_dir DIR

and leaves in DIR weights that load with the plain `from_pretrained` of their Auto class (`import hfpref` first for
the CLAP reward model), finite and equal to the trainer's final weights. What each method saves:

- reward_model: the reward head (`AutoModel` -> `CLAPRewardModel`), its tiny CLAP in `DIR/tiny_clap` (`AutoModel`);
- clap_contrastive: the CLAP (`AutoModel`) and its processor;
- caption_sft, caption_rl: the Whisper-architecture captioner (`AutoModelForSpeechSeq2Seq`); caption_rl also the
  tiny reward model it was rewarded by in `DIR/tiny_reward_model`;
- caption_grpo, aligncap_dpo: a LoRA adapter whose base is the tiny LLM saved in `DIR/tiny_llm`;
  `AutoModelForCausalLM.from_pretrained(DIR)` loads base + adapter;
- aligncap_kd: the same adapter, and the merged student in `DIR/merged` (`AutoModelForCausalLM`);
- reward_weighted_diffusion: the UNet (`diffusers.UNet2DConditionModel`);
- audibility_classifier: the classifier (`AutoModelForSequenceClassification`) and its tokenizer.
"""

import importlib
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForSpeechSeq2Seq,
    AutoTokenizer,
)

import hfpref  # noqa: F401 (registers the CLAP reward model with the Auto classes)
from hfpref.cli.train import TRAINING_METHODS
from hfpref.guidance.audibility_data import load_audibility_dataset
from hfpref.models.audibility_classifier import build_tiny_audibility_classifier


RECIPES = Path(__file__).resolve().parents[2] / "recipes"
METHODS = list(TRAINING_METHODS)


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Tiny models, decoded token by token."""


def run_tiny(method: str, output_dir: Path):
    """`main` of hfpref/scripts/<method>.py on the tiny config, for 2 steps; returns the trainer."""
    script = importlib.import_module(f"hfpref.scripts.{method}")
    config = RECIPES / method / "config_tiny.yaml"
    argv = ["--config", str(config), "--max_steps", "2", "--output_dir", str(output_dir)]
    result = script.main(*script.make_parser().parse_args_and_config(argv))
    trainer = result[0] if isinstance(result, tuple) else result
    assert trainer.state.global_step == 2
    return trainer


def assert_saved_weights_equal(loaded, trained: dict[str, torch.Tensor], prefix: str = "") -> None:
    """Every tensor of `loaded` is finite and equals the trained one of the same name (`prefix` stripped)."""
    trained = {name.removeprefix(prefix): tensor for name, tensor in trained.items()}
    state = loaded.state_dict()
    assert state and set(state) <= set(trained), sorted(set(state) - set(trained))[:5]
    for name, tensor in state.items():
        assert torch.isfinite(tensor).all(), name
        assert torch.equal(tensor, trained[name].to(tensor.dtype)), name


def test_every_method_ships_a_tiny_config_with_its_command():
    for method in METHODS:
        path = RECIPES / method / "config_tiny.yaml"
        assert path.is_file(), path
        first_lines = path.read_text().split("\n", 12)
        command = f"--config_file recipes/accelerate_configs/cpu.yaml recipes/{method}.py"
        assert first_lines[0].startswith("#") and any(command in line for line in first_lines), method
        assert f"--config recipes/{method}/config_tiny.yaml --max_steps 2 --output_dir" in path.read_text(), method


def test_reward_model(tmp_path):
    trainer = run_tiny("reward_model", tmp_path)
    model = AutoModel.from_pretrained(tmp_path)
    assert type(model).__name__ == "CLAPRewardModel"
    assert_saved_weights_equal(model, trainer.model.state_dict())
    # The tiny CLAP it embedded with is saved beside it and recorded (relative to the reward model) as its CLAP.
    assert model.config.clap_checkpoint == str(tmp_path / "tiny_clap")
    assert type(AutoModel.from_pretrained(tmp_path / "tiny_clap")).__name__ == "ClapModel"


def test_clap_contrastive(tmp_path):
    trainer = run_tiny("clap_contrastive", tmp_path)
    assert_saved_weights_equal(AutoModel.from_pretrained(tmp_path), trainer.model.state_dict())


def test_caption_sft(tmp_path):
    trainer = run_tiny("caption_sft", tmp_path)
    assert_saved_weights_equal(AutoModelForSpeechSeq2Seq.from_pretrained(tmp_path), trainer.model.state_dict())


def test_caption_rl(tmp_path):
    trainer = run_tiny("caption_rl", tmp_path)
    assert_saved_weights_equal(AutoModelForSpeechSeq2Seq.from_pretrained(tmp_path), trainer.model.state_dict())
    reward_model = AutoModel.from_pretrained(tmp_path / "tiny_reward_model")
    assert reward_model.config.clap_checkpoint == str(tmp_path / "tiny_reward_model" / "tiny_clap")


def test_caption_grpo_adapter_loads_on_the_saved_tiny_llm(tmp_path):
    trainer = run_tiny("caption_grpo", tmp_path)
    assert (tmp_path / "adapter_model.safetensors").is_file() and (tmp_path / "tiny_llm" / "config.json").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert_saved_weights_equal(loaded, trainer.model.state_dict(), prefix="base_model.model.")
    assert any("lora_A" in name for name in loaded.state_dict())


def test_aligncap_kd_adapter_and_merged_student(tmp_path):
    trainer = run_tiny("aligncap_kd", tmp_path)
    # The recipe merges the saved adapter into its base: the trainer's model, merged here, is the same student.
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert_saved_weights_equal(merged, trainer.model.merge_and_unload().state_dict())
    adapted = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert any("lora_A" in name for name in adapted.state_dict())
    ids = AutoTokenizer.from_pretrained(tmp_path / "merged")("<st_1><st_2> Describe the speaker's emotion.")
    ids = torch.tensor([ids["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(adapted(ids).logits, merged(ids).logits, rtol=1e-4, atol=1e-5)


def test_aligncap_dpo_adapter_loads_on_the_saved_tiny_llm(tmp_path):
    trainer = run_tiny("aligncap_dpo", tmp_path)
    assert (tmp_path / "adapter_model.safetensors").is_file() and (tmp_path / "po_results.json").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert_saved_weights_equal(loaded, trainer.model.state_dict(), prefix="base_model.model.")
    assert any("lora_A" in name for name in loaded.state_dict())


def test_reward_weighted_diffusion(tmp_path):
    from diffusers import UNet2DConditionModel

    trainer = run_tiny("reward_weighted_diffusion", tmp_path)
    assert_saved_weights_equal(UNet2DConditionModel.from_pretrained(tmp_path), trainer.model.state_dict())
    assert (tmp_path / "tiny_reward_model" / "tiny_clap" / "config.json").is_file()


def test_audibility_classifier(tmp_path):
    trainer = run_tiny("audibility_classifier", tmp_path)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert_saved_weights_equal(model, trainer.model.state_dict())
    assert AutoTokenizer.from_pretrained(tmp_path).get_vocab() == trainer.processing_class.get_vocab()


def test_tiny_audibility_tokenizer_is_the_same_in_every_build():
    # `tokenizers`' WordPiece trainer numbered its pieces in hash-map order: 2 builds in one process (or 2 processes
    # of one launch) differed in hundreds of ids.
    sentences = load_audibility_dataset(None)["sentence"]
    (_, first), (_, second) = (build_tiny_audibility_classifier(sentences) for _ in range(2))
    assert len(first) > 500 and first.get_vocab() == second.get_vocab()
    sentence = "A dog barks twice behind the closed kitchen door."
    assert first(sentence)["input_ids"] == second(sentence)["input_ids"]
    assert first.unk_token_id not in first(sentence)["input_ids"]


@pytest.mark.parametrize(
    ("arguments", "settings", "message"),
    [
        (
            "RewardScriptArguments",
            {"synthetic_clips": 8, "tiny_clap": True, "clap_model_name_or_path": "c"},
            "not both",
        ),
        (
            "CaptionRLScriptArguments",
            {"synthetic_clips": 8, "tiny_reward_model": True, "reward_model_name_or_path": "rm"},
            r"remove \['reward_model_name_or_path'\]",
        ),
        (
            "CaptionGRPOScriptArguments",
            {"tiny_reward_model": True, "reward_funcs": ["oracle"]},
            "nothing reads a reward model",
        ),
        (
            "AlignCapDPOScriptArguments",
            {"tiny_reward_model": True, "judge": "clue_overlap"},
            "nothing reads a reward model",
        ),
        ("RewardWeightedDiffusionScriptArguments", {"synthetic_clips": 8}, r"\(or tiny_reward_model: true\)"),
        (
            "RewardWeightedDiffusionScriptArguments",
            {"synthetic_clips": 8, "tiny_reward_model": True, "clap_model_name_or_path": "c"},
            r"remove \['clap_model_name_or_path'\]",
        ),
    ],
)
def test_tiny_models_are_one_source_of_exactly_one(arguments, settings, message):
    from hfpref.scripts import utils

    with pytest.raises(ValueError, match=message):
        getattr(utils, arguments)(**settings)


def test_without_tiny_clap_the_reward_model_reads_laion_clap():
    from hfpref.scripts.utils import RewardScriptArguments

    assert RewardScriptArguments(synthetic_clips=8).clap_model_name_or_path == "laion/clap-htsat-unfused"
    assert RewardScriptArguments(synthetic_clips=8, tiny_clap=True).clap_model_name_or_path is None


@pytest.mark.parametrize("method", ["aligncap_kd", "aligncap_dpo", "caption_grpo"])
def test_tiny_llm_and_a_model_path_are_refused_together(method, tmp_path):
    script = importlib.import_module(f"hfpref.scripts.{method}")
    config = RECIPES / method / "config_tiny.yaml"
    argv = ["--config", str(config), "--model_name_or_path", str(tmp_path), "--output_dir", str(tmp_path)]
    with pytest.raises(ValueError, match="give exactly one model"):
        script.main(*script.make_parser().parse_args_and_config(argv))
