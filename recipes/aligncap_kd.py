"""
AlignCap KD-regularization: distil the LLM given text (acoustic prompt + caption + instruction) into the same LLM
with a LoRA adapter given SpeechTokenizer RVQ-1 speech tokens + instruction
(https://huggingface.co/papers/2410.19134, section 3.1).

accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/aligncap_kd.py \
    --config recipes/aligncap_kd/config_kd.yaml
"""

import logging

from hfpref.scripts.aligncap_kd import main, make_parser


__all__ = ["main", "make_parser"]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(*make_parser().parse_args_and_config())
