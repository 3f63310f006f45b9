"""Opening the files bumpconv reads: regular files only, never a FIFO, device or directory.

An input is opened with ``O_NONBLOCK`` (so a FIFO in place of ``config.json`` or a blob cannot
block the open) and checked with ``fstat`` on the descriptor itself (so what is checked is what
is read, with no window for a swap between a ``stat`` and an ``open``). Every failure is the
caller's error type, naming the file.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from ..format.errors import BumpError


def open_regular(path: Path, error: type[BumpError], what: str = "file") -> int:
    """A read-only descriptor of ``path``, which must be a regular file (symlinks followed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise error(f"{path}: not found") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, not a {what}") from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket, or a FIFO with no writer on some systems
            raise error(f"{path}: is not a regular file") from None
        raise error(f"{path}: cannot open ({exc.strerror})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"{path}: is {_kind(mode)}, not a regular {what}")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: Path, error: type[BumpError], what: str = "file",
                 limit: int = 64 << 20) -> bytes:
    """The whole content of a small regular file, refusing one larger than ``limit``."""
    fd = open_regular(path, error, what)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise error(f"{path}: {size:,} bytes is more than a {what} can be "
                        f"(limit {limit:,})")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise error(f"{path}: grew past {limit:,} bytes while being read")
    return data


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name the same existing file (same device and inode)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
