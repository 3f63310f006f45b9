"""The ``bumpconv`` command line: one subcommand per module in :mod:`bumpconv.commands`, listed
in workflow order so that ``--help`` reads like the workflow.

Errors a user can cause are :class:`~bumpconv.format.errors.BumpError`; they are printed as one line
``bumpconv: error: ...`` with exit status 1. Ctrl-C exits 130 after the command has cleaned up.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
import warnings

from .commands import convert, eval as eval_cmd, inspect, parity, run, verify
from .format.constants import VERSION
from .format.errors import BumpError


#: Subcommands in the order a user meets them: make a blob, look at it, prove it, use it.
SUBCOMMANDS = (convert, inspect, verify, run, parity, eval_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bumpconv",
        description="Convert Hugging Face Llama-family checkpoints to the engine's bump blob, "
                    "inspect it, and prove it right.")
    parser.add_argument("--version", action="version", version=f"bumpconv {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in SUBCOMMANDS:
        command.add_parser(sub)
    return parser


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: object = None, line: str | None = None) -> None:
    print(f"bumpconv: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # every warning of this command, each time
        warnings.showwarning = _show_warning  # library warnings are one line, like errors
        args = build_parser().parse_args(argv)  # an old option name warns while parsing
        signal.signal(signal.SIGTERM, _terminate)  # clean up partial output like Ctrl-C does
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except BumpError as exc:
        print(f"bumpconv: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bumpconv: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `bumpconv inspect x | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
