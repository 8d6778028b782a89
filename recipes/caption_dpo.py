"""
DPO of an audio captioner (an audio LLM such as Qwen2-Audio, with LoRA on its LLM; or a seq2seq captioner) on
(audio, chosen caption, rejected caption) pairs: AlignCap's preference step on a captioner that reads the audio.

accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/caption_dpo.py \
    --config recipes/caption_dpo/config_tiny.yaml
"""

import logging

from hfpref.scripts.caption_dpo import main, make_parser


__all__ = ["main", "make_parser"]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(*make_parser().parse_args_and_config())
