"""
`bench/gpu_rehearsal.py` where there is no GPU (the GPUs are hidden from it here): a plain run says it is skipped and
exits 0 without a RATIO; `--dry-run` builds the configs and tokenizers of the real checkpoints (no weights), writes
YAMLs that its recipes' parsers accept, and prints launch commands of existing recipes and accelerate configs.
"""

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_rehearsal.py"
WHISPER_TINY = ROOT / "tests" / "fixtures" / "whisper-tiny"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _launches(stdout: str) -> list[list[str]]:
    return [
        shlex.split(line.split("] ", 1)[1]) for line in stdout.splitlines() if "accelerate.commands.launch" in line
    ]


def test_without_a_gpu_it_says_so_and_exits_0(tmp_path):
    out = tmp_path / "rehearsal"
    stdout = _run("--recipes", "caption_rl", "--output-dir", str(out)).stdout
    assert "skipped: no GPU" in stdout
    assert "RATIO" not in stdout  # nothing was measured
    assert not out.exists()  # nor built
    (zero3, fsdp2) = _launches(stdout)
    assert Path(zero3[zero3.index("--config_file") + 1]).name == "zero3.yaml"
    assert Path(fsdp2[fsdp2.index("--config_file") + 1]).name == "fsdp.yaml"
    assert fsdp2[fsdp2.index("--fsdp_state_dict_type") + 1] == "FULL_STATE_DICT"  # whole weights are saved


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rehearsal")
    return out, _run("--dry-run", "--recipes", "caption_sft", "aligncap_kd", "--steps", "3", "--output-dir", str(out))


def test_dry_run_prints_launches_of_existing_recipes_with_their_yaml(dry_run):
    out, done = dry_run
    assert (
        "2 config(s) parse with their recipe's parser (with --bf16 false" in done.stdout and "RATIO" not in done.stdout
    )
    launches = _launches(done.stdout)
    assert len(launches) == 4  # 2 recipes x (zero3, fsdp2)
    methods = set()
    for command in launches:
        assert command[1:3] == ["-m", "accelerate.commands.launch"]
        assert Path(command[command.index("--config_file") + 1]).is_file()
        assert Path(command[command.index("--rehearsal-run") - 1]) == SCRIPT
        method = command[command.index("--rehearsal-run") + 1]
        assert (ROOT / "recipes" / f"{method}.py").is_file()
        config = Path(command[command.index("--config") + 1])
        assert config == out / "configs" / f"{method}.yaml" and config.is_file()
        assert command[command.index("--max_steps") + 1] == "3" and command[command.index("--bf16") + 1] == "true"
        methods.add(method)
    assert methods == {"caption_sft", "aligncap_kd"}
    assert not list(out.rglob("*.safetensors"))  # the dry run writes no weights


def test_dry_run_builds_whisper_base(dry_run):
    out, done = dry_run
    sft = yaml.safe_load((out / "configs" / "caption_sft.yaml").read_text())
    assert sft["synthetic_clips"] > 0 and "tiny_captioner" not in sft
    model = Path(sft["model_name_or_path"])
    config = json.loads((model / "config.json").read_text())
    shape = ("d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads", "vocab_size", "num_mel_bins")
    assert tuple(config[k] for k in shape) == (512, 6, 6, 8, 51865, 80)
    assert config["max_source_positions"] == 1500 and config["decoder_ffn_dim"] == 2048
    assert "openai/whisper-base, 72.6M parameters" in done.stdout  # 72,593,920 in the released checkpoint
    # whisper-tiny and -base share the multilingual tokenizer: every generation setting but the alignment heads.
    generation = json.loads((model / "generation_config.json").read_text())
    fixture = json.loads((WHISPER_TINY / "generation_config.json").read_text())
    shared = set(fixture) - {"alignment_heads", "transformers_version"}
    assert {k: generation.get(k) for k in shared} == {k: fixture[k] for k in shared}
    assert generation["alignment_heads"] != fixture["alignment_heads"]  # whisper-base's own
    assert config["suppress_tokens"] == fixture["suppress_tokens"]

    # The tokenizer: 50,257 byte-level BPE tokens, then the real special tokens at the real ids, 51,865 in all.
    tokenizer = json.loads((model / "tokenizer.json").read_text())
    added = {token["content"]: token["id"] for token in tokenizer["added_tokens"]}
    assert len(tokenizer["model"]["vocab"]) == 50257 and max(added.values()) == 51864
    prompt = [added[t] for t in ("<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>")]
    assert prompt == [50258, 50259, 50359, 50363]


def test_dry_run_builds_qwen_with_lora_and_the_speech_tokenizer(dry_run):
    out, done = dry_run
    kd = yaml.safe_load((out / "configs" / "aligncap_kd.yaml").read_text())
    config = json.loads((Path(kd["model_name_or_path"]) / "config.json").read_text())
    shape = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size")
    assert tuple(config[k] for k in shape) == (896, 24, 14, 2, 4864)
    assert config["vocab_size"] == 151936 and config["tie_word_embeddings"] is True
    assert "Qwen/Qwen2.5-0.5B, 494.0M parameters" in done.stdout  # 494,032,768 in the released checkpoint
    assert (kd["dtype"], kd["lora_r"]) == ("bfloat16", 8)
    speech = json.loads((Path(kd["speech_tokenizer_path"]) / "config.json").read_text())
    released = {"codebook_size": 1024, "n_q": 8, "dimension": 1024, "semantic_dimension": 768, "strides": [8, 5, 4, 2]}
    assert {k: speech[k] for k in released} == released  # fnlp/SpeechTokenizer, speechtokenizer_hubert_avg


def _bench_module():
    spec = importlib.util.spec_from_file_location("gpu_rehearsal", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reports(run_dir: Path, **fields) -> None:
    for rank in (0, 1):
        report = {
            "rank": rank,
            "status": "ok",
            "step_seconds": [9.0, 1.0, 3.0],  # the first step is warm-up
            "global_batch": 16,
            "distributed_type": "DEEPSPEED",
            "zero_stage": 3,
            "peak_train_bytes": (rank + 1) * 2**30,
            "peak_run_bytes": (rank + 3) * 2**30,
            **{k: v[rank] if isinstance(v, tuple) else v for k, v in fields.items()},
        }
        (run_dir / f"rank{rank}.json").write_text(json.dumps(report))


def test_a_run_is_ok_only_when_every_process_ran_the_engine_asked_and_saved_whole_weights(tmp_path):
    import torch
    from safetensors.torch import save_file

    bench = _bench_module()
    run_dir = tmp_path / "run"
    (run_dir / "output").mkdir(parents=True)
    (run_dir / "launch.log").write_text("")
    save_file({"weight": torch.ones(2, 2)}, str(run_dir / "output" / "model.safetensors"))
    _reports(run_dir)
    row = bench.collect("caption_sft", "zero3", run_dir, 0, 30.0, 2, 600)
    assert row["status"] == "ok" and row["error"] is None
    assert row["seconds_per_step"] == 2.0 and row["samples_per_second"] == 8.0  # mean of the steps after the first
    assert (row["peak_train_gib"], row["peak_run_gib"]) == (2.0, 4.0)  # the largest process
    assert "| caption_sft | zero3 | ok | 2.000 | 8.00 | 2.00 | 4.00 |  |" in bench.markdown_table([row], "H100", 2)

    # A ZeRO-3 partition saved as it is leaves empty tensors.
    save_file({"weight": torch.ones(2, 2), "bias": torch.ones(0)}, str(run_dir / "output" / "model.safetensors"))
    assert bench.collect("caption_sft", "zero3", run_dir, 0, 30.0, 2, 600)["error"] == (
        "saved weights incomplete: 1 of 2 tensors empty"
    )
    # FSDP asked for, plain DDP ran.
    _reports(run_dir, distributed_type="MULTI_GPU")
    assert bench.collect("caption_sft", "fsdp2", run_dir, 0, 30.0, 2, 600)["error"] == "ran as MULTI_GPU, not FSDP"
    # The process that failed first names the cause; the other one only timed out waiting for it.
    _reports(
        run_dir,
        status="failed",
        error=("DistBackendError: NCCL communicator was aborted", "RuntimeError: the real cause"),
        failed_at=(20.0, 10.0),
    )
    row = bench.collect("caption_sft", "zero3", run_dir, 1, 30.0, 2, 600)
    assert (row["status"], row["error"]) == ("failed", "RuntimeError: the real cause")
    # No report at all: the launch log's last exception, not the launcher's own summary.
    for report in run_dir.glob("rank*.json"):
        report.unlink()
    (run_dir / "launch.log").write_text(
        "Traceback (most recent call last):\nValueError: the YAML has lerning_rate\n"
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:\n"
    )
    assert bench.collect("caption_sft", "zero3", run_dir, 1, 30.0, 2, 600)["error"] == (
        "ValueError: the YAML has lerning_rate (exit 1, 0/2 reports)"
    )
    assert bench.collect("caption_sft", "zero3", run_dir, None, 600.0, 2, 600)["error"] == "timed out after 600 s"
