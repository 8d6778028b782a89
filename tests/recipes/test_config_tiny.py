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
- reward_weighted_diffusion: the UNet (`diffusers.UNet2DConditionModel`), and the whole pipeline with it;
- audibility_classifier: the classifier (`AutoModelForSequenceClassification`) and its tokenizer.

Each method is trained once per module ([`tiny_runs`]): the tests of its artifact, and the test that runs the quick
start of its card (`README.md`) in a fresh process, read the same folder. (`make test` runs the suite with
`--dist loadgroup`: the tests of one method share an `xdist_group`, so one worker trains it.)
"""

import importlib
import json
import os
import re
import subprocess
import sys
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


def in_group(method: str):
    """The `xdist_group` of a method's tests, so that one pytest-xdist worker trains it once for all of them."""
    return pytest.mark.xdist_group(f"tiny_{method}")


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """`run(method) -> (trainer, output_dir)`: the method's tiny config trained once for this module ([`run_tiny`])."""
    runs = {}

    def run(method: str):
        if method not in runs:
            output_dir = tmp_path_factory.mktemp(method)
            runs[method] = (run_tiny(method, output_dir), output_dir)
        return runs[method]

    return run


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


@in_group("reward_model")
def test_reward_model(tiny_runs):
    trainer, tmp_path = tiny_runs("reward_model")
    model = AutoModel.from_pretrained(tmp_path)
    assert type(model).__name__ == "CLAPRewardModel"
    assert_saved_weights_equal(model, trainer.model.state_dict())
    # The tiny CLAP it embedded with is saved beside it and recorded (relative to the reward model) as its CLAP.
    assert model.config.clap_checkpoint == str(tmp_path / "tiny_clap")
    assert type(AutoModel.from_pretrained(tmp_path / "tiny_clap")).__name__ == "ClapModel"


@in_group("clap_contrastive")
def test_clap_contrastive(tiny_runs):
    trainer, tmp_path = tiny_runs("clap_contrastive")
    assert_saved_weights_equal(AutoModel.from_pretrained(tmp_path), trainer.model.state_dict())


@in_group("caption_sft")
def test_caption_sft(tiny_runs):
    trainer, tmp_path = tiny_runs("caption_sft")
    assert_saved_weights_equal(AutoModelForSpeechSeq2Seq.from_pretrained(tmp_path), trainer.model.state_dict())


@in_group("caption_rl")
def test_caption_rl(tiny_runs):
    trainer, tmp_path = tiny_runs("caption_rl")
    assert_saved_weights_equal(AutoModelForSpeechSeq2Seq.from_pretrained(tmp_path), trainer.model.state_dict())
    reward_model = AutoModel.from_pretrained(tmp_path / "tiny_reward_model")
    assert reward_model.config.clap_checkpoint == str(tmp_path / "tiny_reward_model" / "tiny_clap")


@in_group("caption_grpo")
def test_caption_grpo_adapter_loads_on_the_saved_tiny_llm(tiny_runs):
    trainer, tmp_path = tiny_runs("caption_grpo")
    assert (tmp_path / "adapter_model.safetensors").is_file() and (tmp_path / "tiny_llm" / "config.json").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert_saved_weights_equal(loaded, trainer.model.state_dict(), prefix="base_model.model.")
    assert any("lora_A" in name for name in loaded.state_dict())


@in_group("aligncap_kd")
def test_aligncap_kd_adapter_and_merged_student(tiny_runs):
    trainer, tmp_path = tiny_runs("aligncap_kd")
    # The recipe merges the saved adapter into its base: the trainer's model, merged here, is the same student.
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert_saved_weights_equal(merged, trainer.model.merge_and_unload().state_dict())
    adapted = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert any("lora_A" in name for name in adapted.state_dict())
    ids = AutoTokenizer.from_pretrained(tmp_path / "merged")("<st_1><st_2> Describe the speaker's emotion.")
    ids = torch.tensor([ids["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(adapted(ids).logits, merged(ids).logits, rtol=1e-4, atol=1e-5)


@in_group("aligncap_dpo")
def test_aligncap_dpo_adapter_loads_on_the_saved_tiny_llm(tiny_runs):
    trainer, tmp_path = tiny_runs("aligncap_dpo")
    assert (tmp_path / "adapter_model.safetensors").is_file() and (tmp_path / "po_results.json").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert_saved_weights_equal(loaded, trainer.model.state_dict(), prefix="base_model.model.")
    assert any("lora_A" in name for name in loaded.state_dict())


@in_group("reward_weighted_diffusion")
def test_reward_weighted_diffusion(tiny_runs):
    from diffusers import UNet2DConditionModel

    from hfpref.models.tta_pipeline import load_tta_pipeline

    trainer, tmp_path = tiny_runs("reward_weighted_diffusion")
    assert_saved_weights_equal(UNet2DConditionModel.from_pretrained(tmp_path), trainer.model.state_dict())
    assert (tmp_path / "tiny_reward_model" / "tiny_clap" / "config.json").is_file()
    # The whole pipeline is saved too, with the trained UNet.
    pipeline = load_tta_pipeline(tmp_path)
    assert_saved_weights_equal(pipeline.unet, trainer.model.state_dict())


@in_group("audibility_classifier")
def test_audibility_classifier(tiny_runs):
    trainer, tmp_path = tiny_runs("audibility_classifier")
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


def quick_start(card: str) -> str:
    """The python block under a card's `## Quick start` heading."""
    section = card.split("## Quick start", 1)[1]
    match = re.search(r"```python\n(.*?)\n```", section, re.S)
    assert match, "the card's Quick start has no python block"
    return match.group(1)


def test_quick_start_is_the_first_python_block_of_the_quick_start_section():
    card = "# T\n```python\nnot this\n```\n## Quick start\n\nText.\n\n```python\nprint(1)\nprint(2)\n```\n## Next\n"
    assert quick_start(card) == "print(1)\nprint(2)"


# A fresh interpreter spends ~11 s (on this 2-core machine) importing torch, transformers, diffusers, peft and trl,
# more than any snippet runs. The default suite therefore starts one interpreter per pytest process (`python -c
# SNIPPET_RUNNER`) that imports those third-party libraries only, and runs each snippet in a process forked from it:
# a new process that has never seen the trainer, hfpref (which the snippet imports itself, so no registration is done
# for it) or the test's state. `-m slow` runs each snippet by `python -c` in an interpreter of its own.
SNIPPET_LIBRARIES = "import diffusers, peft, soundfile, torch, transformers, trl"
SNIPPET_RUNNER = f"""
import json, os, sys, traceback
{SNIPPET_LIBRARIES}
for line in sys.stdin:
    request = json.loads(line)
    out, err = request["cwd"] + "/stdout.txt", request["cwd"] + "/stderr.txt"
    pid = os.fork()
    if pid == 0:
        os.chdir(request["cwd"])
        os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)
        os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
        sys.stdout, sys.stderr = os.fdopen(1, "w"), os.fdopen(2, "w")
        code = 0
        try:
            exec(compile(request["code"], "<quick start>", "exec"), {{"__name__": "__main__"}})
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({{"returncode": os.waitstatus_to_exitcode(status)}}), flush=True)
"""


def snippet_env() -> dict[str, str]:
    """The environment a snippet runs in: offline, one thread, the checkout importable."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="session")
def run_snippet():
    """
    `run(code, cwd) -> (returncode, stdout, stderr)`: `code` in a process forked from one fresh interpreter, started
    once per pytest process (pytest-xdist runs each method's tests as one batch, and may run other modules' tests
    between two batches: a module-scoped runner would start again for each).
    """
    runner = subprocess.Popen(
        [sys.executable, "-c", SNIPPET_RUNNER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=snippet_env(),
        cwd=Path(__file__).parent,
    )

    def run(code: str, cwd: Path):
        runner.stdin.write(json.dumps({"code": code, "cwd": str(cwd)}) + "\n")
        runner.stdin.flush()
        reply = runner.stdout.readline()
        assert reply, f"the snippet runner exited (code {runner.poll()})"
        return json.loads(reply)["returncode"], (cwd / "stdout.txt").read_text(), (cwd / "stderr.txt").read_text()

    yield run
    runner.stdin.close()
    runner.wait(timeout=60)


def run_snippet_alone(code: str, cwd: Path):
    """`(returncode, stdout, stderr)` of `python -c code` in an interpreter of its own."""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=snippet_env(), capture_output=True, text=True, timeout=300
    )
    return result.returncode, result.stdout, result.stderr


def check_card_quick_start(method: str, output_dir: Path, cwd: Path, run) -> None:
    """
    The card of `output_dir` has model-index results, and its quick start, its repository id replaced by the saved
    folder, runs offline with `run` in `cwd`, beside a `clip.wav` (1 s of noise at 16 kHz, which every snippet reads or
    resamples), and prints what it prints.
    """
    import numpy as np
    import soundfile as sf
    from huggingface_hub import ModelCard

    card = (output_dir / "README.md").read_text()
    assert ModelCard(card).data.eval_results, f"{method}'s card has no model-index results"
    snippet = quick_start(card)
    repo_id = output_dir.name  # the cards name a run without hub_model_id by its folder's name, never its local path
    assert f'"{repo_id}"' in snippet and str(output_dir) not in snippet, snippet
    code = snippet.replace(f'"{repo_id}"', repr(str(output_dir)))
    sf.write(cwd / "clip.wav", np.random.default_rng(0).uniform(-0.5, 0.5, 16000).astype("float32"), 16000)
    returncode, stdout, stderr = run(code, cwd)
    assert returncode == 0, f"{method}'s quick start failed:\n{code}\n{stderr[-4000:]}"
    if "print(" in code:
        assert stdout.strip(), f"{method}'s quick start printed nothing"


@pytest.mark.parametrize("method", [pytest.param(m, marks=in_group(m)) for m in METHODS])
def test_card_quick_start_runs_in_a_fresh_process(method, tiny_runs, run_snippet, tmp_path):
    _, output_dir = tiny_runs(method)
    check_card_quick_start(method, output_dir, tmp_path, run_snippet)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_card_quick_start_runs_in_an_interpreter_of_its_own(method, tiny_runs, tmp_path):
    _, output_dir = tiny_runs(method)
    check_card_quick_start(method, output_dir, tmp_path, run_snippet_alone)


def test_snippet_runner_reports_failures_and_output(run_snippet, tmp_path):
    assert run_snippet("print('hello')", tmp_path)[:2] == (0, "hello\n")
    returncode, _, stderr = run_snippet("import hfpref_no_such_module", tmp_path)
    assert returncode == 1 and "ModuleNotFoundError" in stderr
    # Each snippet runs in its own process: nothing it imports or defines reaches the next one.
    assert run_snippet("import sys; x = 1; print('hfpref' in sys.modules)", tmp_path)[:2] == (0, "False\n")
    assert run_snippet("x", tmp_path)[0] == 1


@in_group("aligncap_kd")
def test_speech_adapter_finds_its_base_saved_beside_it_once_moved(tiny_runs, tmp_path):
    # On the Hub (or once the run's folder moved), the local base path in adapter_config.json is gone; the tiny LLM
    # saved beside the adapter is the one it names.
    import shutil

    from hfpref.encoders.speech_tokens import load_speech_adapter

    _, output_dir = tiny_runs("aligncap_kd")
    moved = tmp_path / "downloaded"
    shutil.copytree(output_dir, moved, ignore=shutil.ignore_patterns("merged", "speech_tokenizer", "embedding-cache"))
    config_file = moved / "adapter_config.json"
    config = json.loads(config_file.read_text())
    assert config["base_model_name_or_path"] == str(output_dir / "tiny_llm")
    ids = torch.tensor([[5, 6, 7, 8]])
    original, _ = load_speech_adapter(output_dir)
    with torch.no_grad():
        expected = original(ids).logits
    for recorded in ("outputs/aligncap-kd-tiny/tiny_llm", "kd/tiny_llm", "/gone/run/tiny_llm"):
        config_file.write_text(json.dumps({**config, "base_model_name_or_path": recorded}))
        model, _ = load_speech_adapter(moved)
        assert model.get_base_model().name_or_path == str(moved / "tiny_llm"), recorded
        with torch.no_grad():
            torch.testing.assert_close(model(ids).logits, expected, rtol=0, atol=0)
    config_file.write_text(json.dumps({**config, "base_model_name_or_path": None}))
    with pytest.raises(ValueError, match="base_model_name_or_path is null"):
        load_speech_adapter(moved)
    config_file.write_text(json.dumps({**config, "base_model_name_or_path": "/gone/run/other_llm"}))
    with pytest.raises(FileNotFoundError, match="is not there, nor beside the adapter"):
        load_speech_adapter(moved)


@pytest.mark.parametrize("method", ["aligncap_kd", "aligncap_dpo"])
def test_aligncap_honours_or_refuses_every_model_config_field(method):
    from trl import ModelConfig

    from hfpref.encoders.speech_tokens import build_tiny_speech_llm
    from hfpref.scripts.aligncap_kd import (
        aligncap_lora_config,
        aligncap_model_kwargs,
        check_aligncap_model_args,
        set_attn_implementation,
    )

    script = importlib.import_module(f"hfpref.scripts.{method}")
    parse = script.make_parser().parse_args_and_config
    argv = ["--config", str(RECIPES / method / "config_tiny.yaml"), "--output_dir", "out"]
    # AlignCap is a LoRA method: use_peft defaults to true, and false is refused (the teacher / reference is the
    # adapter-disabled model); --license reaches the training config (the card).
    parsed = parse(argv + ["--license", "mit"])
    assert parsed[2].use_peft is True and parsed[1].license == "mit"
    with pytest.raises(ValueError, match="use_peft: false is not supported"):
        script.main(*parse(argv + ["--use_peft", "false"]))
    # 4-bit needs bitsandbytes and CUDA: refused on a CPU, even with bitsandbytes.
    with pytest.raises(ValueError, match="load_in_4bit needs bitsandbytes and a CUDA GPU"):
        check_aligncap_model_args(ModelConfig(use_peft=True, load_in_4bit=True), tiny_llm=False, cuda=False)
    with pytest.raises(ValueError, match="lora_modules_to_save is not supported"):
        check_aligncap_model_args(ModelConfig(use_peft=True, lora_modules_to_save=["lm_head"]), tiny_llm=False)
    # Honoured: DoRA / rsLoRA and the LoRA sizes in the adapter config, attn_implementation in the model.
    args = ModelConfig(
        use_peft=True, use_dora=True, use_rslora=True, lora_r=4, lora_alpha=8, attn_implementation="eager"
    )
    lora = aligncap_lora_config([5, 6], args)
    assert (lora.use_dora, lora.use_rslora, lora.r, lora.lora_alpha) == (True, True, 4, 8)
    assert lora.trainable_token_indices == {"embed_tokens": [5, 6]}
    assert aligncap_model_kwargs(args)["attn_implementation"] == "eager"
    model, _ = build_tiny_speech_llm(["a dog barks", "rain falls"], 4, seed=0)
    set_attn_implementation(model, args)
    assert model.config._attn_implementation == "eager"


@pytest.mark.xdist_group("tiny_reward_weighted_diffusion")
def test_baton_lora_card_loads_its_base_then_the_adapter(tiny_runs, run_snippet, tmp_path):
    """
    With `use_lora` the repository holds the UNet's adapter only: the card's quick start loads the base pipeline it
    was trained from, named as the user named it (here the whole pipeline the tiny BATON run saved, and its reward
    model; the tiny UNet has no attention, so LoRA sits on its convolutions), then the adapter, and samples, in a
    fresh process.
    """
    from hfpref.scripts import reward_weighted_diffusion as script

    _, base = tiny_runs("reward_weighted_diffusion")
    output_dir = tmp_path / "baton-lora"
    argv = [
        "--config", str(RECIPES / "reward_weighted_diffusion" / "config_tiny.yaml"), "--output_dir", str(output_dir),
        "--tiny_pipeline", "false", "--pipeline_name_or_path", str(base),
        "--tiny_reward_model", "false", "--reward_model_name_or_path", str(base / "tiny_reward_model"),
        "--use_lora", "true", "--lora_target_modules", "conv1", "conv2", "--learning_rate", "1e-2",
    ]  # fmt: skip
    trainer, _ = script.main(*script.make_parser().parse_args_and_config(argv))
    assert (output_dir / "pytorch_lora_weights.safetensors").is_file()
    assert not (output_dir / "model_index.json").exists()  # the adapter only, not a pipeline
    snippet = quick_start((output_dir / "README.md").read_text())
    assert f'load_tta_pipeline("{base}")' in snippet and "load_lora_adapter" in snippet, snippet
    (tmp_path / "run").mkdir()
    check_card_quick_start("reward_weighted_diffusion (use_lora)", output_dir, tmp_path / "run", run_snippet)
    # What the snippet loads is the trained adapter: every LoRA weight, the B matrices moved from their zero start.
    exec(snippet.split("audio = ")[0].replace(f'"{output_dir.name}"', repr(str(output_dir))), namespace := {})

    def lora(module):  # the adapter's name (`default` when trained, `default_0` when loaded) left out
        return {re.sub(r"\.default(_\d+)?\.", ".", n): p for n, p in module.named_parameters() if "lora" in n}

    loaded, trained = lora(namespace["pipe"].unet), lora(trainer.accelerator.unwrap_model(trainer.model))
    assert loaded.keys() == trained.keys() and loaded
    assert all(torch.equal(loaded[n], trained[n].detach()) for n in loaded)
    assert all(loaded[n].abs().sum() > 0 for n in loaded if "lora_B" in n)


@pytest.mark.xdist_group("tiny_caption_sft")
def test_audio_llm_captioner_cards_load_as_they_show(run_snippet, tmp_path):
    """
    The tiny Qwen2-Audio captioner through the recipes: SFT saves the whole model, RL with `use_peft` its LoRA adapter
    on the SFT model; each card's quick start (`Qwen2AudioForConditionalGeneration` + `AutoProcessor`, the adapter
    through `PeftModel` and merged) runs in a fresh process and prints a caption, and the cards name base model,
    method and results.
    """
    from huggingface_hub import ModelCard

    sft, rl = tmp_path / "alm-sft", tmp_path / "alm-rl"
    for method, argv in (
        ("caption_sft", ["--tiny_architecture", "qwen2_audio", "--output_dir", str(sft)]),
        ("caption_rl", ["--tiny_captioner", "false", "--model_name_or_path", str(sft), "--use_peft", "true",
                        "--output_dir", str(rl)]),
    ):  # fmt: skip
        script = importlib.import_module(f"hfpref.scripts.{method}")
        config = RECIPES / method / "config_tiny.yaml"
        script.main(*script.make_parser().parse_args_and_config(["--config", str(config), *argv]))
    assert json.loads((sft / "config.json").read_text())["architectures"] == ["Qwen2AudioForConditionalGeneration"]
    assert (rl / "adapter_model.safetensors").is_file() and not (rl / "model.safetensors").exists()
    for method, output_dir in (("caption_sft", sft), ("caption_rl", rl)):
        card = ModelCard.load(output_dir / "README.md")
        assert method.replace("_", "-") in card.data.tags
        snippet = quick_start(card.content)
        assert "Qwen2AudioForConditionalGeneration.from_pretrained" in snippet, snippet
        (tmp_path / method).mkdir()
        check_card_quick_start(method, output_dir, tmp_path / method, run_snippet)
    rl_card = ModelCard.load(rl / "README.md")
    assert rl_card.data.base_model is None or str(sft) in str(rl_card.data.base_model)
    assert f'from_pretrained("{sft}")' in quick_start(rl_card.content)  # the adapter's base, as the user named it
