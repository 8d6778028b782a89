"""
How hfpref runs on several processes: which engine a launch asked for, that engine made to really run on a machine
without a GPU (DeepSpeed ZeRO and FSDP2 on gloo, as on GPUs), one line saying what runs, and the helpers that frozen
models and parameter-reading regularisers need under ZeRO-3.

`accelerate launch` tells the processes what it was configured for through environment variables
(`ACCELERATE_USE_DEEPSPEED`, `ACCELERATE_DEEPSPEED_ZERO_STAGE`, `ACCELERATE_USE_FSDP`, `FSDP_VERSION`, `WORLD_SIZE`).
On a machine without an accelerator, accelerate and transformers do not honour them: `use_cpu` turns every engine
into plain DDP, and without it the processes never join a process group. [`prepare_launch`] (called by hfpref's
argument parser before the `TrainingArguments` exist) makes each engine run as configured:

- DDP: `use_cpu=True` (transformers joins CPU processes into one gloo group only then);
- DeepSpeed: `DS_ACCELERATOR=cpu` and `ddp_backend="gloo"` (DeepSpeed's CPU accelerator, gloo collectives);
- FSDP2: `ddp_backend="gloo"`, and accelerate's state is told it runs FSDP (it only does so for GPU types).

A launch that asked `accelerate launch` for several processes but got one is refused (see [`check_launch`]).
"""

import contextlib
import copy
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path


logger = logging.getLogger(__name__)


def accelerator_available() -> bool:
    """Whether torch sees a GPU or another accelerator (CUDA/ROCm, XPU, MPS)."""
    import torch

    if torch.cuda.is_available():
        return True
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        return True
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "false").strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class Engine:
    """
    The engine of a launch, read from the environment `accelerate launch` (or `torchrun`) sets.

    Attributes:
        kind (`str`): `"single"` (one process), `"ddp"`, `"deepspeed"` or `"fsdp"`.
        world_size (`int`): processes launched (`WORLD_SIZE`).
        zero_stage (`int`, *optional*): DeepSpeed's ZeRO stage.
        fsdp_version (`int`, *optional*): 1 or 2.
    """

    kind: str
    world_size: int
    zero_stage: int | None = None
    fsdp_version: int | None = None

    @classmethod
    def from_env(cls) -> "Engine":
        world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if _env_flag("ACCELERATE_USE_DEEPSPEED"):
            stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
            if stage is None:  # a DeepSpeed JSON config file instead of accelerate's fields
                stage = _zero_stage_of_config_file(os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE"))
            return cls("deepspeed", world_size, zero_stage=int(stage) if stage not in (None, "") else None)
        if _env_flag("ACCELERATE_USE_FSDP"):
            return cls("fsdp", world_size, fsdp_version=int(os.environ.get("FSDP_VERSION", "1") or 1))
        return cls("ddp" if world_size > 1 else "single", world_size)

    @property
    def name(self) -> str:
        """`"deepspeed zero3"`, `"fsdp2"`, `"ddp"` or `"single process"`."""
        if self.kind == "deepspeed":
            return f"deepspeed zero{self.zero_stage}" if self.zero_stage is not None else "deepspeed"
        if self.kind == "fsdp":
            return f"fsdp{self.fsdp_version}"
        return "single process" if self.kind == "single" else self.kind


def _zero_stage_of_config_file(path: str | None) -> int | None:
    if not path or not Path(path).is_file():
        return None
    import json

    try:
        return json.loads(Path(path).read_text()).get("zero_optimization", {}).get("stage")
    except (ValueError, AttributeError):
        return None


def _launcher_requested_processes() -> int | None:
    """`--num_processes N` of the `accelerate launch` (or `hfpref train`) that started this process, its parent (Linux)."""
    try:
        argv = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    accelerate = "accelerate.commands.launch" in argv[:4] or (
        "launch" in argv and any(Path(part).name == "accelerate" for part in argv[:3])
    )
    hfpref_train = any(Path(part).name == "hfpref" or part == "hfpref.cli" for part in argv[:3]) and "train" in argv
    if not (accelerate or hfpref_train):
        return None
    for i, part in enumerate(argv):
        value = None
        if part == "--num_processes" and i + 1 < len(argv):
            value = argv[i + 1]
        elif part.startswith("--num_processes="):
            value = part.split("=", 1)[1]
        if value is not None:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def check_launch(engine: Engine) -> None:
    """
    Refuse a launch that asked for several processes and started one: `accelerate launch --num_processes 2` without
    `--multi_gpu` (or a config file), and `accelerate launch --cpu --num_processes 2`, run the script once, alone, with
    half the global batch the user planned for.
    """
    requested = _launcher_requested_processes()
    if requested is not None and requested > engine.world_size:
        raise RuntimeError(
            f"`accelerate launch --num_processes {requested}` started {engine.world_size} process(es): without "
            "`--multi_gpu` (or a config file with a distributed_type), and always with `--cpu`, accelerate runs the "
            "script once, alone. On a machine without a GPU use "
            "`--config_file recipes/accelerate_configs/multi_cpu.yaml` (DDP; or zero2_cpu.yaml, zero3_cpu.yaml, "
            "fsdp2_cpu.yaml); with GPUs add `--multi_gpu` or use ddp.yaml."
        )


def prepare_launch(engine: Engine | None = None) -> dict:
    """
    Make the launch's engine run as configured on this machine (see the module docstring); returns the
    `TrainingArguments` defaults it needs (`use_cpu` for DDP on CPU, `ddp_backend="gloo"` for DeepSpeed and FSDP on
    CPU). On a machine with a GPU, or for one process, nothing changes and `{}` is returned.
    """
    engine = engine or Engine.from_env()
    check_launch(engine)
    if engine.kind == "deepspeed":
        _teach_deepspeed_scalar_parameters()
    if engine.kind == "fsdp":
        _teach_fsdp2_models_without_embeddings()
    if engine.world_size < 2 or accelerator_available():
        return {}
    if engine.kind == "ddp":
        return {"use_cpu": True}
    if engine.kind == "deepspeed":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        if os.environ["DS_ACCELERATOR"] != "cpu":
            raise RuntimeError(
                f"DS_ACCELERATOR={os.environ['DS_ACCELERATOR']} on a machine without a GPU: unset it (hfpref sets "
                "'cpu') to run DeepSpeed on the CPU"
            )
        _teach_peft_trainable_tokens_on_cpu()
        return {"ddp_backend": "gloo"}
    if engine.fsdp_version != 2:
        raise RuntimeError(
            f"FSDP{engine.fsdp_version} does not run on CPU; use fsdp_version: 2 "
            "(recipes/accelerate_configs/fsdp2_cpu.yaml)"
        )
    _teach_accelerate_fsdp_on_cpu()
    return {"ddp_backend": "gloo"}


def _teach_peft_trainable_tokens_on_cpu() -> None:
    """
    Under ZeRO-3, PEFT gathers the embedding rows of trainable tokens (hfpref's speech and audio tokens) on rank 0 and
    broadcasts them, into a buffer it puts on CUDA ("right now, only CUDA is implemented"); on CPU the buffer is on
    the CPU, the rest is PEFT's.
    """
    try:
        from peft.tuners.trainable_tokens.layer import TrainableTokensLayer
    except ImportError:
        return
    if getattr(TrainableTokensLayer._collect_token_weights, "_hfpref_cpu", False):
        return

    def _collect_token_weights(self, weight, rows, embed_dim):
        import torch
        import torch.distributed as dist
        from peft.utils.integrations import gather_params_ctx

        with gather_params_ctx([weight], modifier_rank=None):
            if dist.get_rank() == 0:
                token_weights = weight[rows].clone()
            else:
                token_weights = torch.empty((len(rows), embed_dim), dtype=weight.dtype, device="cpu")
        dist.broadcast(token_weights, src=0)
        return token_weights

    _collect_token_weights._hfpref_cpu = True
    TrainableTokensLayer._collect_token_weights = _collect_token_weights


def _teach_fsdp2_models_without_embeddings() -> None:
    """
    accelerate's FSDP2 preparation asks the model for its input and output embeddings and expects `None` when there
    are none; transformers raises `NotImplementedError` instead for models without token embeddings (CLAP, the CLAP
    reward model): for the preparation only, such a model answers `None`.
    """
    import accelerate.accelerator

    prepare = accelerate.accelerator.fsdp2_prepare_model
    if getattr(prepare, "_hfpref_embeddings", False):
        return

    def fsdp2_prepare_model(accelerator, model):
        answered = []
        for name in ("get_input_embeddings", "get_output_embeddings"):
            try:
                getattr(model, name, lambda: None)()
            except NotImplementedError:
                setattr(model, name, lambda: None)
                answered.append(name)
        try:
            return prepare(accelerator, model)
        finally:
            for name in answered:
                model.__dict__.pop(name, None)

    fsdp2_prepare_model._hfpref_embeddings = True
    accelerate.accelerator.fsdp2_prepare_model = fsdp2_prepare_model


def _teach_accelerate_fsdp_on_cpu() -> None:
    """
    accelerate's `AcceleratorState` switches to FSDP only for GPU-like distributed types; on CPU with a gloo group it
    stays at `NO` and the model would be prepared as a plain module. This makes it take the plugin as on a GPU.
    """
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    if getattr(AcceleratorState.__init__, "_hfpref_fsdp_cpu", False):
        return
    init = AcceleratorState.__init__

    def __init__(self, *args, fsdp_plugin=None, **kwargs):
        init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if (
            fsdp_plugin is not None
            and self.distributed_type == DistributedType.NO
            and self.num_processes > 1
            and self.device.type == "cpu"
        ):
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    __init__._hfpref_fsdp_cpu = True
    AcceleratorState.__init__ = __init__


def _teach_deepspeed_scalar_parameters() -> None:
    """
    DeepSpeed broadcasts (ZeRO-1/2), partitions and gathers for saving (ZeRO-3) each parameter through
    `p.data.view(torch.uint8)`, which
    fails for a 0-dim parameter (`self.dim() cannot be 0 to view Float as Byte`), e.g. CLAP's learned logit scales:
    such parameters are given one dimension for the call, and keep their shape (ZeRO-3 gathers them back into it).
    """
    import torch
    from deepspeed.runtime.engine import DeepSpeedEngine
    from deepspeed.runtime.zero.partition_parameters import GatheredParameters, Init

    if getattr(DeepSpeedEngine._broadcast_model, "_hfpref_scalars", False):
        return
    broadcast_model, zero_init_param = DeepSpeedEngine._broadcast_model, Init._zero_init_param
    gathered_exit = GatheredParameters._exit

    def _broadcast_model(self):
        scalars = [p for p in self.module.parameters() if p.dim() == 0]
        for p in scalars:
            p.data = p.data.reshape(1)
        try:
            broadcast_model(self)
        finally:
            for p in scalars:
                p.data = p.data.reshape(())

    def _zero_init_param(self, param):
        if param.dim() != 0:
            return zero_init_param(self, param)
        param.data = param.data.reshape(1)
        zero_init_param(self, param)
        param.ds_shape = torch.Size([])

    def _exit(self, *exc):  # a gathered parameter modified on one rank is broadcast before it is partitioned again
        for p in getattr(self, "params", None) or []:
            if p.dim() == 0:
                p.data = p.data.reshape(1)
        return gathered_exit(self, *exc)

    _broadcast_model._hfpref_scalars = True
    GatheredParameters._exit = _exit
    DeepSpeedEngine._broadcast_model = _broadcast_model
    Init._zero_init_param = _zero_init_param


def launch_line(method: str, training_args) -> str:
    """`hfpref <method>: <N> processes, <engine> (<backend>)`, from the engine and the initialised process group."""
    import torch.distributed as dist

    engine = Engine.from_env()
    world_size = training_args.world_size
    backend = dist.get_backend() if dist.is_available() and dist.is_initialized() else "no process group"
    name = engine.name if world_size > 1 or engine.kind != "ddp" else "single process"
    noun = "process" if world_size == 1 else "processes"
    return f"hfpref {method}: {world_size} {noun}, {name} ({backend})"


def announce_launch(method: str, training_args) -> str:
    """Print [`launch_line`] once (main process), at any log level, and return it."""
    line = launch_line(method, training_args)
    if training_args.process_index == 0:
        print(line, file=sys.stderr, flush=True)
    return line


# ZeRO-3


def zero3_enabled() -> bool:
    """Whether transformers will build models under `deepspeed.zero.Init` (a ZeRO-3 launch)."""
    try:
        from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
    except ImportError:
        return False
    return bool(is_deepspeed_zero3_enabled())


@contextlib.contextmanager
def zero3_init_disabled():
    """
    Load models whole, outside `deepspeed.zero.Init`, inside this block: once ZeRO-3 is configured, transformers
    partitions every `from_pretrained` over the processes, which a frozen auxiliary model (CLAP, a reward model, a
    teacher, a VAE) must not be, since no DeepSpeed engine ever gathers it. Frozen models are small next to what is
    trained and are kept whole on every process, as TRL keeps its reward models outside the engine.
    """
    try:
        from transformers.integrations import deepspeed as hf_deepspeed
    except ImportError:
        yield
        return
    ref = hf_deepspeed._hf_deepspeed_config_weak_ref
    config = ref() if ref is not None else None
    if config is None:
        yield
        return
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed.set_hf_deepspeed_config(config)


def is_zero3_partitioned(model) -> bool:
    """Whether the model's parameters are DeepSpeed ZeRO-3 partitioned (`ds_id` on its parameters)."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


@contextlib.contextmanager
def gathered_parameters(params):
    """The whole parameters inside the block under ZeRO-3 (read-only); a no-op otherwise."""
    params = [p for p in params if hasattr(p, "ds_id")]
    if not params:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        yield


def frozen_copy(model):
    """
    A frozen, whole copy of `model` (eval mode, no gradients), e.g. a KL reference. Under ZeRO-3 a partitioned model
    cannot be deep-copied: the copy is a [`whole_copy`] of the gathered weights.
    """
    if not is_zero3_partitioned(model):
        return copy.deepcopy(model).eval().requires_grad_(False)
    with gathered_parameters(model.parameters()):
        state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    reference = whole_copy(model, state)
    if getattr(model, "generation_config", None) is not None:
        reference.generation_config = copy.deepcopy(model.generation_config)
    return reference.to(next(iter(state.values())).device).eval().requires_grad_(False)


def gather_whole_for_forward(modules) -> None:
    """
    Under ZeRO-3, gather each of `modules` whole (its submodules' parameters too) for its forward, as DeepSpeed does
    for its "leaf" modules: ZeRO-3 gathers a parameter only for the forward of the module that owns it, so a module
    whose forward reads a submodule's weight without calling the submodule (Qwen2-Audio's audio encoder adds
    `embed_positions.weight` to its input) otherwise reads it partitioned, empty. Call it before the model is
    prepared (DeepSpeed reads the flag when it registers its hooks); a no-op outside ZeRO-3.
    """
    if not zero3_enabled():
        return
    from deepspeed.utils.z3_leaf_module import set_z3_leaf_module

    for module in modules:
        set_z3_leaf_module(module, True)


# FSDP2


def shard_separately(model, modules, fsdp_plugin=None) -> None:
    """
    Make each of `modules` (submodules of `model`) its own FSDP2 unit when accelerate wraps the model by class names
    (`TRANSFORMER_BASED_WRAP`): a submodule called on its own, outside the root's forward (a captioner's audio encoder
    run once per batch, then decoded from; an audio LLM's projector and input embeddings), finds its own parameters
    unsharded only if it is a unit. A module whose class other modules of `model` share (an audio LLM's input
    embeddings, an `nn.Embedding` as the audio encoder's positions are) is given a subclass of its own first, so that
    it alone is wrapped. `fsdp_plugin`: the launch's FSDP plugin, whose explicit class list (if any) is extended too.
    """
    chosen = {id(module) for module in modules}
    for module in modules:
        cls = type(module)
        if any(type(other) is cls and id(other) not in chosen for other in model.modules()):
            module.__class__ = type(f"Separately{cls.__name__}", (cls,), {"__module__": cls.__module__})
    names = [type(module).__name__ for module in modules]
    current = list(getattr(model, "_no_split_modules", None) or [])
    model._no_split_modules = current + [name for name in names if name not in current]
    explicit = getattr(fsdp_plugin, "transformer_cls_names_to_wrap", None)
    if explicit:
        fsdp_plugin.transformer_cls_names_to_wrap = list(explicit) + [n for n in names if n not in explicit]


def init_fsdp_root(model) -> None:
    """
    Initialise FSDP2's root state of `model` before one of its units runs on its own: otherwise the first unit called
    takes itself for the root and the root's forward then fails. A no-op for anything but an FSDP2 root.
    """
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return
    if isinstance(model, FSDPModule):
        model._get_fsdp_state()._lazy_init()


def vectorise_scalar_parameters(model) -> list[str]:
    """
    FSDP2 refuses 0-dim parameters (`fully_shard doesn't support scalar parameters`), e.g. CLAP's learned logit scales:
    each becomes a 1-element vector holding the same value (the model computes the same, by broadcasting). Returns
    their state-dict names, for [`restore_scalar_parameters`] to give a saved state dict its original shapes.
    """
    import torch

    names = []
    for module_name, module in model.named_modules():
        for name, parameter in list(module.named_parameters(recurse=False)):
            if parameter.dim() == 0:
                vector = torch.nn.Parameter(parameter.detach().reshape(1), requires_grad=parameter.requires_grad)
                setattr(module, name, vector)
                names.append(f"{module_name}.{name}" if module_name else name)
    return names


def restore_scalar_parameters(state_dict: dict, names: list[str]) -> dict:
    """`state_dict` with the parameters [`vectorise_scalar_parameters`] turned into vectors made scalars again."""
    for name in names:
        if name in state_dict and tuple(state_dict[name].shape) == (1,):
            state_dict[name] = state_dict[name].reshape(())
    return state_dict


def whole_copy(model, state_dict: dict):
    """
    A plain (unpartitioned, unsharded) model of `model`'s class and config, with its adapters, holding `state_dict`:
    what a model partitioned by ZeRO-3 or sharded by FSDP2 is saved from, `state_dict` being the engine's gathered
    weights (`accelerator.get_state_dict`). For models whose `save_pretrained` takes no `state_dict` (diffusers').
    """
    cls = next(c for c in type(model).__mro__ if not c.__name__.startswith("FSDP"))
    with zero3_init_disabled():
        plain = cls.from_config(model.config) if hasattr(cls, "from_config") else cls(model.config)
    for name, config in (getattr(model, "peft_config", None) or {}).items():
        plain.add_adapter(config, adapter_name=name)
    plain.load_state_dict(state_dict)
    return plain


def apply_peft(model, peft_config):
    """
    `peft.get_peft_model(model, peft_config)`; a model that is whole (not partitioned by ZeRO-3's `zero.Init`) gets
    its adapter outside ZeRO-3 too: PEFT otherwise takes the model for partitioned and gathers its embedding rows
    for trainable tokens the way only CUDA supports. Under ZeRO-3 the trainable-token layers get the embedding weight
    they read registered with DeepSpeed.
    """
    from peft import get_peft_model

    if is_zero3_partitioned(model):
        model = get_peft_model(model, peft_config)
    else:
        with zero3_init_disabled():
            model = get_peft_model(model, peft_config)
    if zero3_enabled():
        _register_trainable_token_weights(model)
    return model


def _register_trainable_token_weights(model) -> None:
    """
    PEFT's trainable-token layer reads the weight of the embedding it wraps in its own forward, before calling the
    embedding: ZeRO-3 gathers a parameter only for the forward of the module that owns it, so the weight is registered
    as an external parameter of the layer too (DeepSpeed then gathers it for the layer's forward).
    """
    from deepspeed.runtime.zero.partition_parameters import register_external_parameter

    for module in model.modules():
        base = getattr(module, "base_layer", None)
        if type(module).__name__ == "TrainableTokensLayer" and getattr(base, "weight", None) is not None:
            register_external_parameter(module, base.weight)


def peft_before_trl(model, peft_config):
    """
    `(model, peft_config)` to hand a TRL trainer: under ZeRO-3 a whole model gets its adapter here
    ([`apply_peft`]) and TRL gets the `PeftModel` (TRL would apply it inside ZeRO-3); otherwise unchanged.
    """
    if peft_config is None or not zero3_enabled() or is_zero3_partitioned(model):
        return model, peft_config
    return apply_peft(model, peft_config), None
