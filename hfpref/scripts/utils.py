"""
What every hfpref script shares: the argument parser.

[`HfprefParser`] is TRL's `TrlParser` (dataclasses from the command line and a `--config` YAML) plus one thing a
multi-process launch on CPU needs: `accelerate launch --multi_gpu --num_processes 2 recipes/<script>.py ...` (or
`--config_file recipes/accelerate_configs/multi_cpu.yaml`, or `torchrun --nproc_per_node 2`) on a machine without an
accelerator starts 2 processes, but transformers' `TrainingArguments` only joins them into one gloo process group with
`use_cpu=True`; otherwise each process trains alone on all the data, silently. The parser turns `use_cpu` on for
such launches and refuses a config that turns it off.
"""

import logging
import os

from transformers import TrainingArguments
from trl import TrlParser


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


def cpu_multiprocess_launch() -> int:
    """The world size of a multi-process launch on a machine without an accelerator (`WORLD_SIZE > 1`), else 0."""
    world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    return world_size if world_size > 1 and not accelerator_available() else 0


class HfprefParser(TrlParser):
    """
    `TrlParser` that makes multi-process CPU launches train as one data-parallel job (see the module docstring).

    Example:
    ```python
    >>> from hfpref.trainers import CaptionRLConfig
    >>> parser = HfprefParser((CaptionRLConfig,))
    >>> parser.parse_args_and_config(["--output_dir", "out"])[0].use_cpu in (True, False)
    True

    ```
    """

    def parse_args_and_config(self, args=None, return_remaining_strings=False, fail_with_unknown_args=True):
        world_size = cpu_multiprocess_launch()
        if world_size:
            # A default, below whatever the YAML or the command line says; an explicit `use_cpu: false` is refused
            # after parsing.
            self.set_defaults(use_cpu=True)
        parsed = super().parse_args_and_config(
            args, return_remaining_strings=return_remaining_strings, fail_with_unknown_args=fail_with_unknown_args
        )
        if world_size:
            for value in parsed:
                if isinstance(value, TrainingArguments) and not value.use_cpu:
                    raise ValueError(
                        f"{world_size} processes were launched (WORLD_SIZE={world_size}) on a machine without a GPU, "
                        "but the config sets use_cpu: false, so each process would train alone on all the data; "
                        "remove use_cpu from the config (or set it to true) to train them as one gloo process group"
                    )
                if isinstance(value, TrainingArguments):
                    logger.info("CPU multi-process launch: %d processes, gloo backend", value.world_size)
        return parsed
