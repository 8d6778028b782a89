"""
RL fine-tuning of a seq2seq audio captioner against a reward (SCST / RLOO / PPO-clip), as in
"Aligning Audio Captions with Human Preferences": the CLAP reward model's score with a length penalty.

accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/caption_rl.py \
    --config recipes/caption_rl/config_scst.yaml
"""

import logging

from hfpref.scripts.caption_rl import main, make_parser


__all__ = ["main", "make_parser"]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(*make_parser().parse_args_and_config())
