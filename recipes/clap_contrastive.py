"""Fit a CLAP contrastively on (audio, caption) pairs, or adapt a pretrained one to a domain.

Offline, this fits the tiny CLAP that the quickstart then uses as a reward; online, it adapts
`laion/clap-htsat-unfused` to a Hub or local dataset.

    accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/clap_contrastive.py --config recipes/clap_contrastive/config_synthetic.yaml
"""

import logging

from hfpref.scripts.clap_contrastive import main, make_parser


__all__ = ["main", "make_parser"]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(*make_parser().parse_args_and_config())
