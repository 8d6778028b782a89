"""
Runs hfpref scripts' `main` one after another in one `accelerate launch` (as their recipes do; one launch pays the
imports once), then writes, per script, what every process holds:

- `<output_dir>/rank<k>.json`: the process's view of the launch (world size, rank, backend, the engine accelerate
  prepared the model with, how many of the trained parameters' elements the process holds, the training log);
- `<output_dir>/final.safetensors` (rank 0): the whole trained weights, gathered through the engine
  (`accelerator.get_state_dict`), and `<output_dir>/start.safetensors`: the weights when `Trainer.train` began;
- for caption_rl, `<output_dir>/rollouts_rank<k>.pt`: per training micro-batch of the process, in order, its optimizer
  step, model inputs, sampled captions (the `Rollout`'s fields) and the rewards scored in it (samples, then greedy
  captions), what a bare reference loop replays.

    accelerate launch --config_file recipes/accelerate_configs/zero3_cpu.yaml tests/recipes/distributed_runner.py \
        caption_sft=<yaml> reward_model=<yaml> ...

Used by tests/recipes/test_distributed.py; not a test module itself.
"""

import contextlib
import gc
import importlib
import json
import sys
from pathlib import Path


def _whole(state: dict) -> dict:
    return {k: v.detach().cpu().clone().contiguous() for k, v in state.items()}  # tied weights: copies


def _held_elements(model) -> tuple[int, int]:
    """(elements of the parameters this process holds, elements of the whole parameters)."""
    held = whole = 0
    for p in model.parameters():
        if hasattr(p, "ds_tensor"):  # DeepSpeed ZeRO-3 partition
            held += p.ds_tensor.numel()
            whole += p.ds_numel
        elif hasattr(p, "to_local"):  # FSDP2 DTensor shard
            held += p.to_local().numel()
            whole += p.numel()
        else:
            held += p.numel()
            whole += p.numel()
    return held, whole


def _trainable_names(trainer) -> list[str]:
    """State-dict names of the trained parameters (as in `accelerator.get_state_dict`)."""
    model = trainer.accelerator.unwrap_model(trainer.model_wrapped)
    return sorted(name for name, p in model.named_parameters() if p.requires_grad)


@contextlib.contextmanager
def recorded_rollouts():
    """Within it, `CaptionRLTrainer` keeps a record per training micro-batch (see the module docstring) in the list."""
    import torch

    from hfpref.trainers.caption_rl import caption_rl_trainer as module

    trainer_class = module.CaptionRLTrainer
    decode, score, training_step = module.decode, trainer_class.score, trainer_class.training_step
    records, current = [], {}

    def recording_training_step(self, model, inputs, num_items_in_batch=None):
        tensors = {k: v.detach().cpu().clone() for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        current.update(step=self.state.global_step, inputs=tensors, rewards=[])
        try:
            return training_step(self, model, inputs, num_items_in_batch)
        finally:
            records.append(dict(current))
            current.clear()

    def recording_decode(*args, **kwargs):
        rollout = decode(*args, **kwargs)
        if current and kwargs.get("do_sample"):
            current["samples"] = {
                k: v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v for k, v in vars(rollout).items()
            }
        return rollout

    def recording_score(self, completions, columns):
        totals, components = score(self, completions, columns)
        if current:
            current["rewards"].append(totals.clone())
        return totals, components

    module.decode, trainer_class.score = recording_decode, recording_score
    trainer_class.training_step = recording_training_step
    try:
        yield records
    finally:
        module.decode, trainer_class.score, trainer_class.training_step = decode, score, training_step


def run(script: str, config: str) -> None:
    import torch
    import torch.distributed as dist
    from safetensors.torch import save_file
    from transformers import Trainer

    from hfpref.utils.distributed import gathered_parameters

    train = Trainer.train

    def train_and_record_start(self, *args, **kwargs):
        out = Path(self.args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        with gathered_parameters(self.model.parameters()):
            start = _whole(self.model.state_dict())
        if self.args.process_index == 0:
            save_file(start, str(out / "start.safetensors"))
        return train(self, *args, **kwargs)

    Trainer.train = train_and_record_start
    try:
        module = importlib.import_module(f"hfpref.scripts.{script}")
        with recorded_rollouts() if script == "caption_rl" else contextlib.nullcontext([]) as rollouts:
            result = module.main(*module.make_parser().parse_args_and_config(["--config", config]))
    finally:
        Trainer.train = train
    trainer = result[0] if isinstance(result, tuple) else result
    accelerator = trainer.accelerator
    state = accelerator.get_state_dict(trainer.model_wrapped)  # collective: every rank calls it
    held, whole = _held_elements(trainer.model_wrapped)
    rank = trainer.args.process_index
    out = Path(trainer.args.output_dir)
    if rank == 0:
        save_file(_whole(state), str(out / "final.safetensors"))
    if rollouts:
        torch.save(rollouts, out / f"rollouts_rank{rank}.pt")
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    view = {
        "script": script,
        "rank": rank,
        "output_dir": str(out),
        "world_size": trainer.args.world_size,
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "distributed_type": str(accelerator.distributed_type).split(".")[-1],
        "zero_stage": plugin.zero_stage if plugin is not None else None,
        "fsdp_version": getattr(getattr(accelerator.state, "fsdp_plugin", None), "fsdp_version", None),
        "trainable": _trainable_names(trainer),
        "held_elements": held,
        "whole_elements": whole,
        "global_step": trainer.state.global_step,
        "gradient_accumulation_steps": trainer.args.gradient_accumulation_steps,
        "log_history": trainer.state.log_history,
    }
    (out / f"rank{rank}.json").write_text(json.dumps(view, default=str))
    del trainer, result, state
    gc.collect()
    if dist.is_initialized():
        dist.barrier()


def main():
    for item in sys.argv[1:]:
        script, config = item.split("=", 1)
        run(script, config)


if __name__ == "__main__":
    main()
