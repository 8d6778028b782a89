"""
GRPO fine-tuning of a decoder-only audio captioner (audio as speech tokens in the LLM's vocabulary) with TRL's
`GRPOTrainer` and hfpref rewards: a CLAP reward model, CLAP score, CIDEr-D or, offline, the synthetic world's oracle.

accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/caption_grpo.py \
    --config recipes/caption_grpo/config_synthetic.yaml
"""

import logging

from hfpref.scripts.caption_grpo import main, make_parser


__all__ = ["main", "make_parser"]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(*make_parser().parse_args_and_config())
