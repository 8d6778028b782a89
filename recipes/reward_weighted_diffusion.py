"""
BATON's reward-weighted fine-tuning of a text-to-audio diffusion model (https://huggingface.co/papers/2402.00744):
human- and reward-model-labelled (prompt, audio) pairs mixed 1:1, weighted by the binary reward model, plus a
denoising loss on the original training data; the model card carries the before / after evaluation table.

accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/reward_weighted_diffusion.py \
    --config recipes/reward_weighted_diffusion/config_baton.yaml
"""

import logging

from hfpref.scripts.reward_weighted_diffusion import main, make_parser


__all__ = ["main", "make_parser"]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(*make_parser().parse_args_and_config())
