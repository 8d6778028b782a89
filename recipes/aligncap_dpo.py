"""
AlignCap PO-regularization: DPO with LoRA (reference = adapter disabled) on judged pairs of the KD student's
beam-search captions (https://huggingface.co/papers/2410.19134, section 3.2).

accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/aligncap_dpo.py \
    --config recipes/aligncap_dpo/config_dpo.yaml
"""

import logging

from hfpref.scripts.aligncap_dpo import main, make_parser


__all__ = ["main", "make_parser"]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(*make_parser().parse_args_and_config())
