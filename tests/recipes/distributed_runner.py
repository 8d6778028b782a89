"""
Runs one hfpref script's `main` under `accelerate launch` (as its recipe does), then writes what every process holds:
`<output_dir>/rank<k>.safetensors` with the process's model weights after training (`rank<k>-start.safetensors`: when
`Trainer.train` began), and `<output_dir>/rank<k>.json` with its view of the process group. Used by tests/recipes/test_distributed.py; not a test module itself.

    accelerate launch --config_file recipes/accelerate_configs/multi_cpu.yaml tests/recipes/distributed_runner.py \
        <script> --config <yaml>
"""

import importlib
import json
import sys
from pathlib import Path


def main():
    import torch.distributed as dist
    from safetensors.torch import save_file
    from transformers import Trainer

    def weights(model):
        return {
            k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()
        }  # tied weights: copies

    train = Trainer.train

    def train_and_record_start(self, *args, **kwargs):
        out = Path(self.args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file(weights(self.model), str(out / f"rank{self.args.process_index}-start.safetensors"))
        return train(self, *args, **kwargs)

    Trainer.train = train_and_record_start
    script, argv = sys.argv[1], sys.argv[2:]
    module = importlib.import_module(f"hfpref.scripts.{script}")
    result = module.main(*module.make_parser().parse_args_and_config(argv))
    trainer = result[0] if isinstance(result, tuple) else result
    model = trainer.accelerator.unwrap_model(trainer.model)
    rank = trainer.args.process_index
    out = Path(trainer.args.output_dir)
    save_file(weights(model), str(out / f"rank{rank}.safetensors"))
    view = {
        "rank": rank,
        "output_dir": str(out),
        "world_size": trainer.args.world_size,
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "global_step": trainer.state.global_step,
        "gradient_accumulation_steps": trainer.args.gradient_accumulation_steps,
    }
    (out / f"rank{rank}.json").write_text(json.dumps(view))


if __name__ == "__main__":
    main()
