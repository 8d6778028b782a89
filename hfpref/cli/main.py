"""
The `hfpref` command line: the parser assembled from one module per command group. Every module registers its
subcommands with `add_<command>_parser(subparsers)` and imports what a command needs inside the command, so
`hfpref --help` stays fast and loads no model library.
"""

import argparse
import logging
import sys

from .annotate import add_annotate_parser
from .audibility_data import add_audibility_data_parser
from .data import add_embed_parser, add_synth_parser
from .loop import add_loop_parser
from .metrics import add_agreement_parser, add_eval_parser
from .pairs import add_pairs_parser
from .quickstart import add_quickstart_parser
from .train import add_train_parser
from .tta import add_tta_generate_parser


# In the order of `hfpref --help`: data, the main job, training, evaluation, preference data.
COMMAND_PARSERS = [
    add_synth_parser,
    add_embed_parser,
    add_quickstart_parser,
    add_loop_parser,
    add_train_parser,
    add_eval_parser,
    add_agreement_parser,
    add_pairs_parser,
    add_tta_generate_parser,
    add_audibility_data_parser,
    add_annotate_parser,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hfpref",
        description="Preference training for audio-language models (reward models, RL fine-tuning, DPO).",
        epilog="`hfpref <command> --help` lists a command's options.",
        allow_abbrev=False,
    )
    subparsers = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    for add_parser in COMMAND_PARSERS:
        add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """
    Run `hfpref` on `argv` (default: `sys.argv[1:]`); without a command it prints the help.

    Example:

    ```python
    >>> main([])  # doctest: +ELLIPSIS
    usage: hfpref [-h] COMMAND ...
    ...
    0

    ```
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # `hfpref train <method>` hands the flags it does not know to the script and accelerate; any other command
    # refuses them, as parse_args would.
    args, unknown = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if unknown and not getattr(args, "script_flags", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args.argv = argv
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
