"""
Supervised fine-tuning of an audio captioner (Whisper architecture by default) on (audio, caption)
pairs with `Seq2SeqTrainer`: how the baseline captioner for RL is made.

accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/caption_sft.py \
    --config recipes/caption_sft/config_synthetic.yaml
"""

import logging

from hfpref.scripts.caption_sft import main, make_parser


__all__ = ["main", "make_parser"]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(*make_parser().parse_args_and_config())
