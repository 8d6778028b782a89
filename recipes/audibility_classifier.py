"""
Train the audibility classifier that guides captioners towards audible captions (Classifier-Guided Captioning
Across Modalities, https://huggingface.co/papers/2501.03183): a 2-label DistilBERT fine-tuned on audible vs
non-audible sentences (the shipped seed set by default, or a file from `hfpref audibility-data`).

accelerate launch --config_file recipes/accelerate_configs/cpu.yaml hfpref/scripts/audibility_classifier.py \
    --config recipes/audibility_classifier/config_distilbert.yaml
"""

import logging

from hfpref.scripts.audibility_classifier import main, make_parser


__all__ = ["main", "make_parser"]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(*make_parser().parse_args_and_config())
