"""
Train a CLAP reward model on preference data: pairwise (Bradley-Terry, RLHF audio captioning) or
binary feedback (BCE/MSE, BATON). CLAP is frozen, so every clip and caption is embedded once
(through the on-disk cache) and the MLP head trains on the cached vectors.

accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/reward_model.py \
    --config recipes/reward_model/config_fense_bt.yaml
"""

import logging

from hfpref.scripts.reward_model import main, make_parser


__all__ = ["main", "make_parser"]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(*make_parser().parse_args_and_config())
