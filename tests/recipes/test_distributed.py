"""
Every recipe as a job of 2 CPU processes (gloo) under each engine hfpref ships a config for, launched exactly as the
README says (`accelerate launch --config_file recipes/accelerate_configs/<engine>_cpu.yaml ...`): DeepSpeed ZeRO-2,
ZeRO-3, FSDP2 and DDP. For each (engine, recipe):

- the launch ran the engine it was configured for (accelerate's distributed type, ZeRO stage, FSDP version, gloo), and
  under ZeRO-3 and FSDP2 each process holds only part of the trained weights;
- it printed `hfpref <method>: 2 processes, <engine> (gloo)`;
- its trained weights, gathered through the engine, equal those of a 1-process run at the same global batch (2
  micro-batches of gradient accumulation), which itself equals a bare reference loop for the recipes whose trainer
  could share a bug with it (tests/trainers/test_loss_scaling.py: SFT and the audibility classifier, where a loss
  scaled by the accumulation steps or the process count would pass a comparison of the trainer with itself);
- the weights it saved are whole and load with `from_pretrained` (tests/recipes/test_config_tiny.py loads each
  recipe's artifact the way its card says; here the saved tensors are compared with the gathered ones).

Why the two runs must agree: the data order is the same (one seeded sampler; process k of 2 takes every other per-device
batch, accumulation step k the same ones); so are the random draws (RL samples and diffusion noise are seeded per
global micro-batch: `micro-step * processes + process_index`, the place of the batch accelerate deals); the runs use SGD with a constant
learning rate and no clipping, so the weights are linear in the summed gradients, and dropout is off. What is left is
the order of float additions (an all-reduce or reduce-scatter mean vs accumulated halves), ~1e-7 relative per step:
1e-5 absolute on these weights is far above it yet far below the training updates (checked to be > 1e-3 per recipe).
GRPO is the exception: TRL samples each process's completions from its own generator, so its 2-process run draws
other completions than the 1-process run; its check is that it trains (the weights move) under every engine, with the
same start, and saves whole weights.

Recipe variants (VARIANTS: caption_rl with an audio-LLM captioner, Qwen2-Audio's architecture) go through the same
checks under every engine, in launches of their own, and the audio-LLM run also equals a bare reference loop (SCST and
the KL term by hand through the model's own forward, over the global batch, replaying the run's recorded captions and
rewards), since the trainer compared with itself would pass a loss scaled by the accumulation steps or the process
count.

`make test` runs one engine per recipe (DEFAULT_ENGINE); `make test-distributed` the whole matrix and the variants
(marked `distributed`). One launch runs all the recipes of an engine in turn (tests/recipes/distributed_runner.py), so the
imports and DeepSpeed's start are paid once per engine.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from hfpref.cli.train import TRAINING_METHODS


# One pytest-xdist worker runs this module's launches (`make test` uses --dist loadgroup): the module-scoped launches
# then run once, not once per worker.
pytestmark = pytest.mark.xdist_group("distributed")
ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "tests" / "recipes" / "distributed_runner.py"
CONFIGS = ROOT / "recipes" / "accelerate_configs"
ENGINES = {
    "zero2": ("zero2_cpu.yaml", "DEEPSPEED", "deepspeed zero2"),
    "zero3": ("zero3_cpu.yaml", "DEEPSPEED", "deepspeed zero3"),
    "fsdp2": ("fsdp2_cpu.yaml", "FSDP", "fsdp2"),
    "ddp": ("multi_cpu.yaml", "MULTI_CPU", "ddp"),
}
RECIPES = list(TRAINING_METHODS)
# One engine per recipe in the default suite; the sharded ones where the recipe has the most to get wrong.
DEFAULT_ENGINE = {
    "reward_model": "zero3",  # an L2 penalty that reads the (partitioned) weights
    "caption_rl": "zero3",  # a frozen reward model and KL reference next to a partitioned policy
    "reward_weighted_diffusion": "zero3",  # frozen VAE, vocoder, CLAP and reward model
    "caption_sft": "fsdp2",
    "aligncap_kd": "fsdp2",
    "clap_contrastive": "fsdp2",
    "audibility_classifier": "zero2",
    "aligncap_dpo": "zero2",
    "caption_grpo": "zero2",
    "caption_dpo": "zero3",  # an audio LLM's tower read whole for its forward; a frozen reference copy
}
INEXACT = {"caption_grpo"}  # see the module docstring
# Variants of a recipe, run by the `distributed` matrix only (and compared with their own 1-process run): name ->
# (the recipe's script, what the variant sets on top of the recipe's config).
VARIANTS = {
    # An audio LLM (Qwen2-Audio's architecture): audio tower frozen, projector and LLM trained; under FSDP2 the tower
    # is a unit of its own (CaptionRLTrainer), under ZeRO-3 partitioned with the rest.
    # Its SCST updates are ~10x smaller than the Whisper captioner's at the same learning rate.
    "caption_rl_audio_llm": ("caption_rl", {"tiny_architecture": "qwen2_audio", "learning_rate": 20.0}),
}
COMMON = {
    "save_strategy": "no",
    "eval_strategy": "no",
    "report_to": "none",
    "disable_tqdm": True,
    "seed": 0,
    "optim": "sgd",
    "dataloader_drop_last": True,
    "max_grad_norm": 0.0,
    "lr_scheduler_type": "constant",
    "warmup_steps": 0,
    "max_steps": 2,
    "logging_steps": 1,
}
# Per recipe: what makes the weights move far beyond the tolerance in 2 SGD steps, and what turns randomness off.
OVERRIDES = {
    "reward_model": {"learning_rate": 0.5, "dropout": 0.0, "per_device_train_batch_size": 4},
    # No augmentation draws (a random reference caption per clip, dropout): they come from each process's RNG.
    "clap_contrastive": {
        "learning_rate": 0.005,
        "per_device_train_batch_size": 4,
        "tiny_text_dropout": 0.0,
        "tiny_audio_dropout": 0.0,
        "references_column": None,
    },
    "caption_sft": {"learning_rate": 0.5, "per_device_train_batch_size": 4},
    # SCST: PPO steps the optimizer inside each batch, so it has no accumulated 1-process counterpart.
    "caption_rl": {"learning_rate": 2.0, "per_device_train_batch_size": 4, "loss_type": "scst", "kl_coef": 0.05},
    "caption_grpo": {"learning_rate": 0.05, "per_device_train_batch_size": 4},
    "aligncap_kd": {"learning_rate": 0.05, "per_device_train_batch_size": 2},
    "aligncap_dpo": {"learning_rate": 0.05, "per_device_train_batch_size": 2},
    "caption_dpo": {"learning_rate": 10.0, "per_device_train_batch_size": 2},
    "reward_weighted_diffusion": {"learning_rate": 0.05, "per_device_train_batch_size": 2},
    "audibility_classifier": {
        "learning_rate": 0.5,
        "per_device_train_batch_size": 8,
        "num_train_epochs": 1,
        "tiny_dropout": 0.0,  # dropout masks come from each process's RNG
    },
}
DROP = {
    "audibility_classifier": ["use_cpu", "lr_decay_every_epochs", "lr_decay_factor"],
    "caption_rl": ["ppo_baseline", "ppo_epochs", "cliprange"],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]


def _run(command: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    """`command` from the repository root, one torch thread per process, hfpref importable."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def script_of(recipe: str) -> str:
    """The hfpref script a recipe (or a variant of one, [`VARIANTS`]) runs."""
    return VARIANTS[recipe][0] if recipe in VARIANTS else recipe


def recipe_config(recipe: str, output_dir: Path, **extra) -> dict:
    """The recipe's config_tiny.yaml with the comparison's settings (see the module docstring)."""
    script, variant = VARIANTS.get(recipe, (recipe, {}))
    config = yaml.safe_load((ROOT / "recipes" / script / "config_tiny.yaml").read_text())
    for key in DROP.get(script, []):
        config.pop(key, None)
    return {**config, **COMMON, **OVERRIDES[script], **variant, **extra, "output_dir": str(output_dir)}


def launch(workdir: Path, engine: str | None, recipes: list[str]) -> dict:
    """One launch running `recipes` in turn: 2 processes under `engine`, or 1 process (engine None) accumulating 2."""
    workdir.mkdir(parents=True, exist_ok=True)
    items = []
    for recipe in recipes:
        extra = {"gradient_accumulation_steps": 2} if engine is None else {}
        config = recipe_config(recipe, workdir / recipe, **extra)
        path = workdir / f"{recipe}.yaml"
        path.write_text(yaml.safe_dump(config))
        items.append(f"{script_of(recipe)}={path}")
    launch_config = CONFIGS / (ENGINES[engine][0] if engine else "cpu.yaml")
    command = [*ACCELERATE, "--config_file", str(launch_config)]
    if engine:
        command += ["--main_process_port", str(_free_port())]
    done = _run([*command, str(RUNNER), *items], timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-8000:]
    return {"workdir": workdir, "stderr": done.stderr, "processes": 2 if engine else 1}


def _view(run: dict, recipe: str, rank: int = 0) -> dict:
    import json

    return json.loads((run["workdir"] / recipe / f"rank{rank}.json").read_text())


def _weights(run: dict, recipe: str, which: str, keys: set | None = None) -> dict:
    weights = load_file(str(run["workdir"] / recipe / f"{which}.safetensors"))
    return weights if keys is None else {k: v for k, v in weights.items() if k in keys}


def _max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))[:10]
    for k in a:
        assert a[k].numel() == b[k].numel(), (k, a[k].shape, b[k].shape)
    return max((a[k].float().reshape(b[k].shape) - b[k].float()).abs().max().item() for k in a)


def check_recipe(engine: str, recipe: str, run: dict, reference: dict) -> None:
    _, distributed_type, name = ENGINES[engine]
    views = [_view(run, recipe, rank) for rank in (0, 1)]
    assert [v["world_size"] for v in views] == [2, 2] and [v["rank"] for v in views] == [0, 1]
    assert {v["backend"] for v in views} == {"gloo"}
    assert {v["distributed_type"] for v in views} == {distributed_type}
    if engine.startswith("zero"):
        assert {v["zero_stage"] for v in views} == {int(engine[-1])}
    if engine == "fsdp2":
        assert {v["fsdp_version"] for v in views} == {2}
    if engine in ("zero3", "fsdp2"):  # each process holds a part of the trained weights, together all of them
        for v in views:
            assert v["held_elements"] < v["whole_elements"], v
        assert sum(v["held_elements"] for v in views) >= views[0]["whole_elements"]
    else:
        assert all(v["held_elements"] == v["whole_elements"] for v in views)
    assert f"hfpref {script_of(recipe)}: 2 processes, {name} (gloo)" in run["stderr"]

    one = _view(reference, recipe)
    assert one["world_size"] == 1 and one["gradient_accumulation_steps"] == 2
    assert views[0]["global_step"] == one["global_step"] > 0
    # Trained parameters; buffers such as BatchNorm's running statistics are per process under DeepSpeed and FSDP
    # (each process tracks the batches it sees), and are not trained.
    trained = set(one["trainable"])
    assert trained and set(views[0]["trainable"]) == trained
    start, final = _weights(run, recipe, "start", trained), _weights(run, recipe, "final", trained)
    ref_start, ref_final = _weights(reference, recipe, "start", trained), _weights(reference, recipe, "final", trained)
    assert _max_difference(start, ref_start) == 0.0  # the same initial weights
    moved = _max_difference(ref_final, ref_start)
    assert moved > 1e-3, moved  # the runs did train, far beyond the tolerance
    if script_of(recipe) in INEXACT:
        assert _max_difference(final, start) > 1e-3
    else:
        difference = _max_difference(final, ref_final)
        assert difference < 1e-5, (difference, moved)
    check_saved(recipe, run["workdir"] / recipe, _weights(run, recipe, "final"))


def check_saved(recipe: str, output_dir: Path, final: dict) -> None:
    """The weights the recipe saved are whole: every saved tensor equals the gathered one of the same name."""
    files = sorted(output_dir.glob("*.safetensors")) + sorted(output_dir.glob("*/*.safetensors"))
    files = [f for f in files if f.name not in ("start.safetensors", "final.safetensors")]
    if (output_dir / "model_index.json").is_file():  # a whole pipeline (BATON): of its components, the UNet trained
        assert (output_dir / "unet").is_dir(), f"{recipe}'s pipeline has no unet/"
        files = [f for f in files if f.parent == output_dir or f.parent.name == "unet"]
    assert files, f"{recipe} saved no safetensors in {output_dir}"
    saved = {}
    for f in files:
        saved.update(load_file(str(f)))
    matched = 0
    for key, tensor in saved.items():
        candidates = [k for k in final if k == key or k.endswith("." + key) or key.endswith("." + k)]
        if not candidates:
            continue
        target = final[candidates[0]]
        if target.dim() == 1 and tensor.dim() == 0:  # FSDP2 trains 0-dim parameters as 1-element vectors
            target = target.reshape(())
        assert target.shape == tensor.shape, (key, target.shape, tensor.shape)
        torch.testing.assert_close(tensor.float(), target.float(), rtol=0, atol=1e-6)
        matched += 1
    assert matched >= 1, f"no saved tensor of {recipe} matched the trained weights: {sorted(saved)[:5]}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """All recipes on 1 process, 2 micro-batches of gradient accumulation: the same global batch."""
    return launch(tmp_path_factory.mktemp("one-process"), None, RECIPES)


@pytest.fixture(scope="module")
def default_runs(tmp_path_factory):
    runs = {}
    for engine in sorted(set(DEFAULT_ENGINE.values())):
        recipes = [r for r in RECIPES if DEFAULT_ENGINE[r] == engine]
        runs[engine] = launch(tmp_path_factory.mktemp(engine), engine, recipes)
    return runs


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_under_its_default_engine(recipe, default_runs, reference):
    engine = DEFAULT_ENGINE[recipe]
    check_recipe(engine, recipe, default_runs[engine], reference)


@pytest.fixture(scope="module")
def matrix_runs(tmp_path_factory):
    """engine -> its launch of every recipe, launched when first asked for (a failed launch fails its engine only)."""
    runs, failures = {}, {}

    def run(engine: str) -> dict:
        if engine in failures:
            pytest.fail(f"the {engine} launch failed (see the first test of {engine})")
        if engine not in runs:
            try:
                runs[engine] = launch(tmp_path_factory.mktemp(f"all-{engine}"), engine, RECIPES)
            except AssertionError:
                failures[engine] = True
                raise
        return runs[engine]

    return run


@pytest.mark.distributed
@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("engine", list(ENGINES))
def test_recipe_under_every_engine(engine, recipe, matrix_runs, reference):
    check_recipe(engine, recipe, matrix_runs(engine), reference)


@pytest.fixture(scope="module")
def variant_reference(tmp_path_factory):
    """The recipe variants on 1 process, 2 micro-batches of gradient accumulation (their own launch)."""
    return launch(tmp_path_factory.mktemp("one-process-variants"), None, list(VARIANTS))


@pytest.fixture(scope="module")
def variant_runs(tmp_path_factory):
    """engine -> its launch of every variant (their own launch, so that `-k` on a variant launches nothing else)."""
    runs = {}

    def run(engine: str) -> dict:
        if engine not in runs:
            runs[engine] = launch(tmp_path_factory.mktemp(f"variants-{engine}"), engine, list(VARIANTS))
        return runs[engine]

    return run


@pytest.mark.distributed
@pytest.mark.parametrize("recipe", list(VARIANTS))
@pytest.mark.parametrize("engine", list(ENGINES))
def test_recipe_variant_under_every_engine(engine, recipe, variant_runs, variant_reference):
    check_recipe(engine, recipe, variant_runs(engine), variant_reference)


def test_shard_separately_makes_only_the_named_modules_units():
    # accelerate's FSDP2 wrap policy matches classes by name: an audio LLM's input embeddings are an `nn.Embedding` as
    # its audio encoder's positions are, whose weight the encoder reads without calling it (it must stay in the
    # encoder's unit).
    from accelerate.utils.dataclasses import get_module_class_from_name

    from hfpref.utils.distributed import shard_separately

    model = torch.nn.Module()
    model.encoder = torch.nn.Module()
    model.encoder.embed_positions = torch.nn.Embedding(4, 2)
    model.embed_tokens = torch.nn.Embedding(8, 2)
    model.projector = torch.nn.Linear(2, 2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    shard_separately(model, [model.embed_tokens, model.projector])
    classes = tuple(get_module_class_from_name(model, name) for name in model._no_split_modules)
    assert [m for m in model.modules() if isinstance(m, classes)] == [model.embed_tokens, model.projector]
    assert type(model.encoder.embed_positions) is torch.nn.Embedding
    assert isinstance(model.embed_tokens, torch.nn.Embedding) and type(model.projector) is torch.nn.Linear
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def _completion_mask(ids: torch.Tensor, eos_ids: list[int]) -> torch.Tensor:
    is_eos = torch.isin(ids, torch.tensor(eos_ids)).int()
    return ((is_eos.cumsum(-1) - is_eos) == 0).float()  # up to and including the first eos


def bare_audio_llm_scst(run: dict, recipe: str) -> dict:
    """
    The 1-process run's 2 SCST steps replayed by a bare loop: per step, one loss over the global batch's rows (SCST,
    the paper's eq. 5: `-(r_i - r_greedy) * sum_t log p`, plus `kl_coef` times the k3 KL to the frozen start, per row,
    averaged over all rows of both micro-batches) through the model's own forward (Qwen2-Audio's audio merging, not
    hfpref's `encode_prompt`), one backward, one SGD step. The captions and rewards are the ones the run recorded.
    """
    import copy

    from transformers import AutoConfig, GenerationConfig, Qwen2AudioForConditionalGeneration

    output_dir = run["workdir"] / recipe
    config = yaml.safe_load((run["workdir"] / f"{recipe}.yaml").read_text())
    assert config["loss_type"] == "scst" and config.get("scst_baseline", "greedy") == "greedy"
    assert config.get("kl_estimator", "k3") == "k3" and config.get("temperature", 1.0) == 1.0
    model = Qwen2AudioForConditionalGeneration(AutoConfig.from_pretrained(output_dir))
    model.load_state_dict(load_file(str(output_dir / "start.safetensors")))
    model.eval()
    reference_model = copy.deepcopy(model).requires_grad_(False)
    trained = dict(model.named_parameters())
    trained = {name: trained[name] for name in _view(run, recipe)["trainable"]}
    eos = GenerationConfig.from_pretrained(output_dir).eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos)
    k, kl_coef = config["num_samples"], config["kl_coef"]
    records = torch.load(output_dir / "rollouts_rank0.pt", weights_only=False)
    steps = sorted({r["step"] for r in records})
    assert len(steps) == config["max_steps"] and all(len(r["rewards"]) == 2 for r in records)

    def log_probs(policy, record):
        inputs, samples = record["inputs"], record["samples"]
        sequences, start = samples["sequences"], samples["prompt_length"]
        rows, steps = sequences.shape[0], sequences.shape[1] - start
        prompt_mask = inputs["attention_mask"].repeat_interleave(k, 0)
        # The prompts' embeddings as the model's own forward merges the audio into them (the language model's input,
        # hidden state 0), then the caption's; not one forward over prompt + caption, which would take a sampled
        # `<|AUDIO|>` in the caption (a random policy draws any token) for an audio slot.
        prompt = policy(
            input_ids=sequences[:, :start],
            attention_mask=prompt_mask,
            input_features=inputs["input_features"].repeat_interleave(k, 0),
            feature_attention_mask=inputs["feature_attention_mask"].repeat_interleave(k, 0),
            output_hidden_states=True,
            use_cache=False,
        ).hidden_states[0]
        embeds = torch.cat([prompt, policy.get_input_embeddings()(sequences[:, start:-1])], 1)
        mask = torch.cat([prompt_mask, torch.ones(rows, steps - 1).long()], 1)
        logits = policy(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=(mask.cumsum(-1) - 1).masked_fill(mask == 0, 1),  # generate's, on left padding
            use_cache=False,
        ).logits[:, start - 1 :]
        if samples["support"] is not None:
            logits = logits.masked_fill(~samples["support"], float("-inf"))
        completion = sequences[:, start:]
        chosen = torch.log_softmax(logits.float(), -1).gather(2, completion[:, :, None]).squeeze(-1)
        mask = _completion_mask(completion, eos)
        return chosen * mask, mask

    for step in steps:
        rows = []
        for record in (r for r in records if r["step"] == step):
            sampled, greedy = record["rewards"]
            advantages = sampled - greedy.repeat_interleave(k)
            policy, mask = log_probs(model, record)
            with torch.no_grad():
                reference, _ = log_probs(reference_model, record)
            delta = reference - policy
            kl = (torch.exp(delta) - delta - 1) * mask
            rows.append(-advantages * policy.sum(-1) + kl_coef * kl.sum(-1))
        loss = torch.cat(rows).mean()
        gradients = torch.autograd.grad(loss, list(trained.values()))
        with torch.no_grad():
            for parameter, gradient in zip(trained.values(), gradients):
                parameter -= config["learning_rate"] * gradient
    return {name: p.detach().clone() for name, p in trained.items()}


@pytest.mark.distributed
def test_audio_llm_caption_rl_equals_a_bare_reference_loop(variant_reference):
    # The trainer compared with itself (2 processes vs 1 process accumulating) would pass a loss scaled by the
    # accumulation steps, the process count or the rows: this reference shares none of its code.
    recipe = "caption_rl_audio_llm"
    bare = bare_audio_llm_scst(variant_reference, recipe)
    start, final = (_weights(variant_reference, recipe, w, set(bare)) for w in ("start", "final"))
    assert len(start) == len(bare)
    moved = _max_difference(final, start)
    assert moved > 1e-3, moved
    difference = _max_difference(final, bare)
    assert difference < 1e-5, (difference, moved)


def _accelerate(args: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    return _run([*ACCELERATE, *args], timeout=timeout)


def _load_trained(recipe: str, output_dir: Path) -> dict:
    """The saved model, loaded with plain `from_pretrained` (after `import hfpref` for the reward model)."""
    import hfpref  # noqa: F401  (registers the reward model with the Auto classes)

    if recipe == "reward_model":
        from transformers import AutoModel

        model = AutoModel.from_pretrained(output_dir)
    else:
        from transformers import AutoModelForSpeechSeq2Seq

        model = AutoModelForSpeechSeq2Seq.from_pretrained(output_dir)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.distributed
@pytest.mark.parametrize("engine", ["zero3_cpu", "fsdp2_cpu"])
@pytest.mark.parametrize("recipe", ["reward_model", "caption_rl"])
def test_the_readme_commands_train_and_save_whole_weights(recipe, engine, tmp_path):
    # The bar, as a user types it: the shipped tiny config, 2 steps, an output folder, nothing prepared.
    out = tmp_path / "out"
    done = _accelerate(
        [
            "--config_file",
            str(CONFIGS / f"{engine}.yaml"),
            "--main_process_port",
            str(_free_port()),
            f"recipes/{recipe}.py",
            "--config",
            f"recipes/{recipe}/config_tiny.yaml",
            "--max_steps",
            "2",
            "--output_dir",
            str(out),
        ]
    )
    assert done.returncode == 0, done.stderr[-6000:]
    name = ENGINES[engine.removesuffix("_cpu")][2]
    assert f"hfpref {recipe}: 2 processes, {name} (gloo)" in done.stderr
    weights = _load_trained(recipe, out)
    assert weights and all(torch.isfinite(v.float()).all() for v in weights.values())
    saved = load_file(str(out / "model.safetensors"))
    for key, tensor in saved.items():  # what loaded is what was saved, whole (no empty ZeRO-3 partitions)
        assert tensor.numel() > 0, key
        torch.testing.assert_close(weights[key], tensor)


def test_a_launch_that_starts_one_of_two_processes_is_refused(tmp_path):
    # `accelerate launch --num_processes 2` without --multi_gpu (or a config file) starts the script once, alone.
    done = _accelerate(
        [
            "--num_processes",
            "2",
            "recipes/caption_sft.py",
            "--config",
            "recipes/caption_sft/config_tiny.yaml",
            "--output_dir",
            str(tmp_path / "out"),
        ],
        timeout=300,
    )
    assert done.returncode != 0
    assert "`accelerate launch --num_processes 2` started 1 process(es)" in done.stderr, done.stderr[-3000:]
    assert not (tmp_path / "out" / "model.safetensors").exists()


@pytest.mark.distributed
def test_two_machines(tmp_path):
    # The README's multi-node command, as two "machines" of one process each on this host.
    port = str(_free_port())
    config = recipe_config("caption_sft", tmp_path / "out")
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(config))
    commands = []
    for rank in (0, 1):
        commands.append(
            [
                *ACCELERATE,
                "--config_file",
                str(CONFIGS / "multi_cpu.yaml"),
                "--num_machines",
                "2",
                "--machine_rank",
                str(rank),
                "--num_processes",
                "2",
                "--main_process_ip",
                "127.0.0.1",
                "--main_process_port",
                port,
                "recipes/caption_sft.py",
                "--config",
                str(path),
            ]
        )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}  # both at once: Popen, not _run
    machines = [
        subprocess.Popen(c, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c in commands
    ]
    outputs = [m.communicate(timeout=900) for m in machines]
    for machine, (_, err) in zip(machines, outputs):
        assert machine.returncode == 0, err[-6000:]
    assert "hfpref caption_sft: 2 processes, ddp (gloo)" in outputs[0][1]
    assert (tmp_path / "out" / "model.safetensors").is_file()


@pytest.mark.distributed
def test_hfpref_train_runs_a_recipe_under_zero3(tmp_path):
    # `hfpref train <method> --accelerate_config zero3_cpu`, the command-line way to the same launch.
    out = tmp_path / "out"
    command = [
        str(Path(sys.executable).parent / "hfpref"),
        "train",
        "reward_model",
        "--config",
        "recipes/reward_model/config_tiny.yaml",
        "--accelerate_config",
        "zero3_cpu",
        "--main_process_port",
        str(_free_port()),
        "--max_steps",
        "2",
        "--output_dir",
        str(out),
    ]
    done = _run(command)
    assert done.returncode == 0, done.stderr[-6000:]
    assert "hfpref reward_model: 2 processes, deepspeed zero3 (gloo)" in done.stderr
    assert _load_trained("reward_model", out)
