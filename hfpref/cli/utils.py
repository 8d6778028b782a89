"""What the `hfpref` subcommands share: argparse types."""

import argparse


def positive_int(text: str) -> int:
    """
    An argparse type: a whole number >= 1, with a message that says so.

    Example:

    ```python
    >>> positive_int("3")
    3
    >>> positive_int("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: 0 must be at least 1

    ```
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value
