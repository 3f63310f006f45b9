"""One module per subcommand. Each defines ``add_parser(subparsers)``, which registers the
subcommand and sets ``func`` to its handler ``(args) -> exit status``.

A module here is named for its verb, so two share a name with the stage module that does the
work (``commands/convert.py`` -> ``conversion/convert.py``, ``commands/verify.py`` ->
``blob/verify.py``): the pair is one verb seen from the command line (arguments, printing, exit
status) and from the library (the work, also behind ``bumpconv.api``), and the package in the
path tells them apart.

The argument types the subcommands share live here (this package module is not a subcommand).
"""

import argparse
import os
import warnings


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


class OldName(argparse.Action):
    """An option's old spelling (``--format`` for ``--profile``): still accepted, with a
    warning naming the new one, and left out of --help and the docs."""

    def __init__(self, option_strings: list[str], dest: str, new: str, nargs: int | None = None,
                 const: object = None, **kwargs: object) -> None:
        self.new = new
        kwargs["help"] = argparse.SUPPRESS
        super().__init__(option_strings, dest, nargs=nargs, const=const,
                         **kwargs)  # type: ignore[arg-type]

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        warnings.warn(f"{option_string} is the old name of {self.new}", stacklevel=2)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: a container's or taskset's limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def capped_threads(requested: int | None) -> int | None:
    """``--threads N`` for the C runtime, at most the CPUs this process may use.

    More is capped with a warning rather than refused: the user asked for speed, and the
    runtime's pool has every thread take a share of each step, so a thread without a CPU of its
    own makes each step wait for a time slice (SmolLM2-135M fp32 decode on 2 CPUs, two
    alternating rounds on a busy machine: 2 threads 18.1 and 35.8 tok/s, 64 threads 1.6 and
    1.3). The Python API keeps the count it is given (tests run more threads than CPUs on
    purpose, to show the results do not depend on it)."""
    cpus = usable_cpus()
    if requested is None or requested <= cpus:
        return requested
    warnings.warn(f"--threads {requested}: this process can use {cpus} CPU(s); running "
                  f"{cpus} threads (more threads than CPUs only wait for each other)",
                  stacklevel=2)
    return cpus
