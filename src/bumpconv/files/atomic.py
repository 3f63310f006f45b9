"""Output files that appear only when complete: every file bumpconv writes goes through here.

Data goes to a temporary file beside the destination, which is fsynced and renamed into place;
any error or Ctrl-C removes the temporary file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..format.errors import OutputError


@contextmanager
def atomic_output(dest: Path, force: bool) -> Iterator[int]:
    """Yield an fd of a temporary file beside ``dest``; on success fsync and rename it into
    place, on any exception (KeyboardInterrupt included) delete it."""
    if dest.is_dir():
        raise OutputError(f"{dest}: is a directory")
    if dest.exists() and not force:
        raise OutputError(f"{dest}: already exists (use --force to overwrite)")
    parent = dest.parent if str(dest.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{dest}: directory {parent} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=parent)
    except OSError as exc:
        raise OutputError(f"{dest}: cannot create a file in {parent} ({exc.strerror})") from None
    done = False
    try:
        yield fd
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.chmod(tmp, 0o644 & ~_umask())  # mkstemp makes 0600; a finished blob is a normal file
        os.replace(tmp, dest)
        done = True
        _fsync_dir(parent)
    except OSError as exc:
        raise OutputError(f"{dest}: write failed ({exc.strerror})") from None
    finally:
        if fd >= 0:
            os.close(fd)
        if not done:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    dfd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_all(fd: int, data: memoryview | bytes) -> None:
    """``os.write`` until every byte is written (it may write less than asked)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
