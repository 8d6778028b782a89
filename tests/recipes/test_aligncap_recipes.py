"""AlignCap recipes end to end offline: KD -> `hfpref pairs` (LLM judge on a local server) -> DPO, on tiny models."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml
from datasets import load_from_disk
from recipe_helpers import load_recipe, yaml_args
from transformers import AutoModelForCausalLM

from hfpref.cli.main import main as hfpref_main
from hfpref.scripts.aligncap_dpo import make_parser as po_parser
from hfpref.scripts.aligncap_kd import make_parser as kd_parser


RECIPES = Path(__file__).resolve().parents[2] / "recipes"

_recipe = load_recipe
_yaml = yaml_args
_spec = importlib.util.spec_from_file_location("chat_server", Path(__file__).parents[1] / "judges" / "chat_server.py")
_chat_server = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_chat_server)
FakeChatServer = _chat_server.FakeChatServer
KD_YAML = RECIPES / "aligncap_kd/config_kd.yaml"
PO_YAML = RECIPES / "aligncap_dpo/config_dpo.yaml"
CPU = {"save_strategy": "no", "report_to": "none", "use_cpu": True, "disable_tqdm": True, "seed": 0}
WORLD = {"speech_world_clips": 12, "speech_world_test_clips": 4, "speech_world_backend": "procedural"}


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Tiny Llama, decoded token by token."""


def test_shipped_configs_parse_with_the_paper_settings():
    script, args, model = kd_parser().parse_args_and_config(["--config", str(KD_YAML)])
    assert (args.learning_rate, args.warmup_steps, model.lora_r) == (1e-5, 400, 8)
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps == 16
    assert (args.temperature, args.kd_weight, args.ce_weight) == (1.0, 1.0, 0.0)  # eq. 5 exactly
    script, args, model = po_parser().parse_args_and_config(["--config", str(PO_YAML)])
    assert (args.learning_rate, args.max_steps, args.beta, model.lora_r) == (5e-7, 1000, 0.1, 8)
    assert args.loss_type == ["sigmoid"] and args.bf16 is False and script.judge == "clue_overlap"


@pytest.mark.parametrize(("parser", "config"), [(kd_parser, KD_YAML), (po_parser, PO_YAML)], ids=["kd", "po"])
def test_unknown_yaml_keys_are_fatal(parser, config, tmp_path):
    settings = yaml.safe_load(config.read_text())
    argv = _yaml(tmp_path / "typo.yaml", **settings, lerning_rate=1e-4)
    with pytest.raises(ValueError, match="lerning_rate"):
        parser().parse_args_and_config(argv)


def test_kd_then_pairs_then_dpo_offline(tmp_path):
    kd_out = tmp_path / "kd"
    argv = _yaml(
        tmp_path / "kd.yaml",
        tiny_llm=True,
        speech_world_seconds=1.0,
        **WORLD,
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        output_dir=str(kd_out),
        **CPU,
    )
    kd = _recipe("aligncap_kd")
    trainer, metrics = kd.main(*kd.make_parser().parse_args_and_config(argv))
    assert metrics["eval_start_kl"] > 0 and torch.isfinite(torch.tensor(metrics["eval_kl"]))
    assert all(0 <= metrics[k] <= 1 for k in ("eval_start_emotion_accuracy", "eval_emotion_accuracy"))
    assert (kd_out / "adapter_model.safetensors").is_file() and (kd_out / "README.md").is_file()
    assert (kd_out / "speech_tokenizer" / "config.json").is_file()
    assert (kd_out / "added_token_rows.safetensors").is_file()  # the speech rows, not the embedding tables
    AutoModelForCausalLM.from_pretrained(kd_out / "merged")

    # `hfpref pairs` on the merged KD student, judged by an LLM on a local OpenAI-compatible server; every seventh
    # answer is malformed, and those clips are skipped and counted (--on-error skip), never scored.
    pairs_dir = tmp_path / "pairs"
    with FakeChatServer(malformed_every=7) as server:
        code = hfpref_main(
            [
                "pairs",
                "--model", str(kd_out / "merged"),
                "--speech-world", "8", "--speech-world-backend", "procedural", "--speech-world-seconds", "1.0",
                "--speech-tokenizer", str(kd_out / "speech_tokenizer"),
                "--judge", "llm", "--llm-base-url", server.base_url, "--llm-model", "judge",
                "--num-beams", "3", "--max-new-tokens", "8", "--on-error", "skip",
                "--output-dir", str(pairs_dir),
            ]
        )  # fmt: skip
    assert code == 0
    stats = json.loads((pairs_dir / "stats.json").read_text())
    pairs = load_from_disk(str(pairs_dir))
    assert stats["clips"] == 8 and stats["pairs"] == len(pairs)
    assert stats["judge_malformed_answers"] == stats["judge_errors"] >= 1
    assert stats["judge_scored_clips"] + stats["judge_errors"] + stats.get("fewer_than_two_candidates", 0) == 8, stats
    assert all(c > r for c, r in zip(pairs["chosen_score"], pairs["rejected_score"]))
    assert all(p.startswith("<st_") and p.endswith("Describe the speaker's emotion.") for p in pairs["prompt"])
    # The generated token ids travel with the pairs; DPO trains on them (tests/trainers/test_aligncap_dpo.py).
    eos = trainer.processing_class.eos_token_id
    assert all(ids[-1] == eos for column in ("chosen_ids", "rejected_ids") for ids in pairs[column])

    po_out = tmp_path / "po"
    argv = _yaml(
        tmp_path / "po.yaml",
        model_name_or_path=str(kd_out / "merged"),
        speech_tokenizer_path=str(kd_out / "speech_tokenizer"),
        pairs_dataset=str(pairs_dir),
        speech_world_seconds=1.0,
        **WORLD,
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        gradient_checkpointing=False,
        output_dir=str(po_out),
        **CPU,
    )
    po = _recipe("aligncap_dpo")
    trainer, preference = po.main(*po.make_parser().parse_args_and_config(argv))
    assert trainer.state.global_step == 2 and trainer.ref_model is None
    assert preference["wins"] + preference["losses"] + preference["ties"] == 4
    results = json.loads((po_out / "po_results.json").read_text())
    assert results["heldout_preference"]["ties"] == preference["ties"]
    assert (po_out / "adapter_model.safetensors").is_file()
