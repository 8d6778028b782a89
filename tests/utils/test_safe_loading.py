"""Safe checkpoint loading: safetensors only, no remote code, missing local paths named; and every command uses it."""

import json

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM
from trl import DPOConfig

from hfpref.utils.safe_loading import (
    UnsafeCheckpointError,
    check_pretrained_path,
    load_pretrained,
    looks_local,
    remote_code_requested,
)


def _tiny_llama() -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=32,
    )  # fmt: skip
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


@pytest.fixture(scope="module")
def safe_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("safe")
    _tiny_llama().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bin_folder(tmp_path_factory, safe_folder):
    """A model folder as an old checkpoint ships it: config.json + pytorch_model.bin (a pickle), no safetensors."""
    folder = tmp_path_factory.mktemp("pickled")
    (folder / "config.json").write_text((safe_folder / "config.json").read_text())
    torch.save(_tiny_llama().state_dict(), folder / "pytorch_model.bin")
    return folder


def test_safetensors_folder_loads(safe_folder):
    model = load_pretrained(AutoModelForCausalLM, safe_folder)
    torch.testing.assert_close(model.lm_head.weight, _tiny_llama().lm_head.weight)
    assert load_pretrained(LlamaForCausalLM, str(safe_folder)).config.hidden_size == 16


def test_missing_local_path_is_named_not_called_a_bad_repo_id(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match=f"the local path '{missing}' does not exist"):
        load_pretrained(AutoModelForCausalLM, str(missing))
    with pytest.raises(FileNotFoundError, match="'./out/merged' does not exist"):
        load_pretrained(AutoTokenizer, "./out/merged")
    assert looks_local("./out/merged") and looks_local("a/b/c") and not looks_local("cvssp/audioldm-s-full-v2")
    assert check_pretrained_path("owner/name") is None  # a Hub id is left to from_pretrained (use_safetensors=True)


def test_pickled_weights_are_refused_naming_the_folder(bin_folder, tmp_path):
    with pytest.raises(UnsafeCheckpointError, match=f"folder '{bin_folder}' holds only pickled weights"):
        load_pretrained(AutoModelForCausalLM, bin_folder)
    with pytest.raises(UnsafeCheckpointError, match="pytorch_model.bin"):
        load_pretrained(LlamaForCausalLM, str(bin_folder))
    with pytest.raises(UnsafeCheckpointError, match="use_safetensors=False"):
        load_pretrained(AutoModelForCausalLM, bin_folder, use_safetensors=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no .safetensors weights"):
        load_pretrained(AutoModelForCausalLM, tmp_path / "empty")
    # A pipeline folder is checked component by component.
    pipeline = tmp_path / "pipeline"
    (pipeline / "unet").mkdir(parents=True)
    (pipeline / "model_index.json").write_text(json.dumps({"unet": ["diffusers", "UNet2DConditionModel"]}))
    torch.save({"w": torch.zeros(1)}, pipeline / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(UnsafeCheckpointError, match=f"'{pipeline / 'unet'}' holds only pickled weights"):
        check_pretrained_path(pipeline)


def test_remote_code_is_refused_not_ignored(safe_folder, tmp_path):
    with pytest.raises(UnsafeCheckpointError, match="trust_remote_code is refused"):
        load_pretrained(AutoModelForCausalLM, safe_folder, trust_remote_code=True)
    assert remote_code_requested(DPOConfig(output_dir=str(tmp_path), trust_remote_code=True, bf16=False))
    assert remote_code_requested({"model_init_kwargs": {"trust_remote_code": True}})
    assert not remote_code_requested(DPOConfig(output_dir=str(tmp_path), bf16=False), {"trust_remote_code": False})


def _yaml(path, **config):
    path.write_text(yaml.safe_dump(config))
    return ["--config", str(path)]


def _cli(*argv):
    from hfpref.cli.main import main

    return lambda: main([str(a) for a in argv])


def _script(name, tmp_path, **config):
    import importlib

    module = importlib.import_module(f"hfpref.scripts.{name}")
    argv = _yaml(tmp_path / f"{name}.yaml", output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True, **config)
    return lambda: module.main(*module.make_parser().parse_args_and_config(argv))


def _dpo(bad, tmp_path):
    from datasets import Dataset

    from hfpref.trainers.aligncap_dpo.aligncap_dpo_trainer import aligncap_dpo_trainer

    pairs = Dataset.from_dict({"prompt": ["<st_1> Describe."], "chosen": [" sad"], "rejected": [" happy"]})
    return lambda: aligncap_dpo_trainer(
        str(bad), None, pairs, DPOConfig(output_dir=str(tmp_path), report_to="none", bf16=False)
    )


def _command(name, bad, good, tmp):
    """The command `name` pointed at the pickled folder `bad` (other checkpoints: `good`, or not needed)."""
    world = ["--speech-world", 2, "--output-dir", tmp / "pairs"]
    commands = {
        "hfpref pairs": lambda: _cli("pairs", "--model", bad, *world),
        "hfpref pairs --judge reward_model": lambda: _cli(
            "pairs", "--model", good, *world, "--judge", "reward_model", "--reward-model", bad
        ),
        "hfpref tta-generate": lambda: _cli("tta-generate", tmp / "prompts.txt", "--pipeline", bad, "--output-dir", tmp),
        "aligncap_kd": lambda: _script("aligncap_kd", tmp, model_name_or_path=str(bad)),
        "aligncap_dpo": lambda: _script(
            "aligncap_dpo", tmp, model_name_or_path=str(bad), speech_tokenizer_path=str(tmp)
        ),
        "aligncap_dpo_trainer": lambda: _dpo(bad, tmp),
        "reward_weighted_diffusion (pipeline)": lambda: _script(
            "reward_weighted_diffusion", tmp, synthetic_clips=4, reward_model_name_or_path=str(good),
            pipeline_name_or_path=str(bad),
        ),
        "reward_weighted_diffusion (reward model)": lambda: _script(
            "reward_weighted_diffusion", tmp, synthetic_clips=4, reward_model_name_or_path=str(bad), tiny_pipeline=True
        ),
    }  # fmt: skip
    return commands[name]()


COMMANDS = [
    "hfpref pairs",
    "hfpref pairs --judge reward_model",
    "hfpref tta-generate",
    "aligncap_kd",
    "aligncap_dpo",
    "aligncap_dpo_trainer",
    "reward_weighted_diffusion (pipeline)",
    "reward_weighted_diffusion (reward model)",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_a_pickled_model_folder(command, bin_folder, safe_folder, tmp_path):
    """Each command of the AlignCap and BATON pipelines checks its checkpoints before loading or computing anything."""
    (tmp_path / "prompts.txt").write_text("a dog barks\n")
    run = _command(command, bin_folder, safe_folder, tmp_path)
    with pytest.raises(UnsafeCheckpointError, match=f"'{bin_folder}' holds only pickled weights"):
        run()


def test_po_recipe_refuses_trust_remote_code(safe_folder, tmp_path):
    run = _script("aligncap_dpo", tmp_path, model_name_or_path=str(safe_folder), trust_remote_code=True)
    with pytest.raises(UnsafeCheckpointError, match="trust_remote_code is refused"):
        run()


def test_caption_rl_and_sft_refuse_a_bin_only_captioner(tmp_path, bin_folder):
    """The captioning recipes (and the quickstart, which loads through them) refuse a .bin-only checkpoint too."""
    from hfpref.scripts.caption_rl import make_parser as rl_parser
    from hfpref.scripts.caption_sft import make_parser as sft_parser
    from hfpref.scripts.utils import load_captioner

    for parser in (rl_parser(), sft_parser()):
        _, _, model_args = parser.parse_dict(
            {"synthetic_clips": 8, "model_name_or_path": str(bin_folder), "output_dir": str(tmp_path)}
        )
        with pytest.raises(UnsafeCheckpointError, match=str(bin_folder)):
            load_captioner(model_args)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_captioner(
            rl_parser().parse_dict(
                {"synthetic_clips": 8, "model_name_or_path": str(tmp_path / "x"), "output_dir": str(tmp_path)}
            )[2]
        )


def test_audibility_classifier_refuses_a_bin_only_folder(bin_folder):
    from hfpref.metrics.audibility import AudibilityClassifier

    with pytest.raises(UnsafeCheckpointError, match=str(bin_folder)):
        AudibilityClassifier.from_pretrained(str(bin_folder))
