"""One module per subcommand. Each defines ``add_parser(subparsers)``, which registers the
subcommand and sets ``func`` to its handler ``(args) -> exit status``.

The argument types the subcommands share live here (this package module is not a subcommand).
"""

import argparse


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1, with a message that names the bad value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0, with a message that names the bad value."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value
