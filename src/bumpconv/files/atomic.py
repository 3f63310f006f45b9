"""Output files that appear only when complete and never replace what they must not: every file
bumpconv writes (blobs, sidecars, parity dumps) goes through :func:`atomic_output`.

* The data goes to an unnamed temporary file (``O_TMPFILE``) in the destination's directory,
  so a process killed even by SIGKILL leaves nothing behind. Where the filesystem cannot make
  one, a named ``.NAME.PID.XXXX.partial`` is used instead, and partials left by processes that
  no longer exist are removed (with a warning naming each) the next time.
* Without ``force`` the finished file is *linked* into place, which fails if the name exists:
  two conversions to the same path cannot both succeed, and an existing file is never
  replaced. With ``force`` it is renamed over the old one (atomic on POSIX).
* The destination may not be a directory, a device, a FIFO or a socket (even with ``force``),
  nor one of the inputs it is made from; free space is checked against the exact size first.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import secrets
import stat
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..format.errors import OutputError
from .inputs import same_file

_PARTIAL = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.partial$")


@contextmanager
def atomic_output(dest: Path, force: bool, size: int | None = None,
                  inputs: Sequence[Path] = ()) -> Iterator[int]:
    """Yield a writable fd of a temporary file beside ``dest``; when the block completes, fsync
    it and put it in place; on any exception (KeyboardInterrupt included) leave no trace.

    ``size`` (the exact output size, when known) is checked against the free space first;
    ``inputs`` are the files the output is made from, which it may never replace."""
    parent = dest.parent if str(dest.parent) else Path(".")
    _check_destination(dest, parent, force, inputs)
    fd, named = _temporary(dest, parent)
    done = False
    try:
        if size is not None:
            _check_space(dest, parent, size)
        yield fd
        os.fsync(fd)
        _place(fd, named, dest, parent, force)
        done = True
        _fsync_dir(parent)
    except OSError as exc:
        raise OutputError(f"{dest}: write failed ({exc.strerror})") from None
    finally:
        os.close(fd)
        if named is not None and not done:
            _unlink(named)


def check_destination(dest: Path, force: bool, inputs: Sequence[Path] = ()) -> None:
    """What :func:`atomic_output` refuses about ``dest`` before writing (``convert --dry-run``
    asks it without writing)."""
    _check_destination(dest, dest.parent if str(dest.parent) else Path("."), force, inputs)


def _check_destination(dest: Path, parent: Path, force: bool, inputs: Sequence[Path]) -> None:
    if not parent.is_dir():
        raise OutputError(f"{dest}: directory {parent} does not exist")
    try:
        mode = os.stat(dest).st_mode
    except FileNotFoundError:
        if os.path.islink(dest) and not force:  # a dangling link: linking a name over it fails
            raise OutputError(f"{dest}: is a symbolic link to {os.readlink(dest)}, which does "
                              "not exist; write to the target's path, or --force to replace "
                              "the link with the file") from None
        return
    except OSError as exc:
        raise OutputError(f"{dest}: cannot check the output path ({exc.strerror})") from None
    if stat.S_ISDIR(mode):
        raise OutputError(f"{dest}: is a directory")
    if not stat.S_ISREG(mode):
        raise OutputError(f"{dest}: is not a regular file (a device, FIFO or socket); "
                          "bumpconv never replaces one")
    for source in inputs:
        if same_file(dest, source):
            raise OutputError(f"{dest}: is {source}, an input of this command; refusing to "
                              "overwrite it")
    if not force:
        raise OutputError(f"{dest}: already exists (use --force to overwrite)")


def _check_space(dest: Path, parent: Path, size: int) -> None:
    try:
        st = os.statvfs(parent)
    except OSError:
        return  # no figure to check against; a full disk is still reported on write
    free = st.f_bavail * st.f_frsize
    if free < size:
        raise OutputError(f"{dest}: needs {size:,} bytes but {parent} has {free:,} free")


def _temporary(dest: Path, parent: Path) -> tuple[int, Path | None]:
    """An unnamed file in ``parent`` (None for its name) when the filesystem makes one and can
    later give it a name, else a named partial. The naming is probed on a second, empty
    unnamed file: a file linked once cannot be linked again after it is unlinked."""
    tmpfile = getattr(os, "O_TMPFILE", 0)
    if tmpfile:
        try:
            fd = os.open(parent, tmpfile | os.O_RDWR | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise OutputError(f"{dest}: cannot create a file in {parent} "
                                  f"({exc.strerror})") from None
        else:
            if _can_name_unnamed_files(parent, dest):
                return fd, None
            os.close(fd)
    _remove_stale_partials(dest, parent)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.{os.getpid()}.", suffix=".partial",
                                    dir=parent)
        os.fchmod(fd, 0o644 & ~_umask())  # mkstemp makes 0600; a finished file is a normal one
    except OSError as exc:
        raise OutputError(f"{dest}: cannot create a file in {parent} ({exc.strerror})") from None
    return fd, Path(name)


def _place(fd: int, named: Path | None, dest: Path, parent: Path, force: bool) -> None:
    """Give the finished file its name: a link that cannot replace anything, or (``force``) a
    rename over the old file."""
    if named is None:  # an O_TMPFILE file is given its name by linkat
        if not force:
            if not _link_fd(fd, dest):
                if dest.exists():
                    raise OutputError(f"{dest}: already exists (created while this command "
                                      "ran; use --force to overwrite)")
                raise OutputError(f"{dest}: cannot give the finished file its name")
            return
        named = _partial_name(dest, parent)
        if not _link_fd(fd, named):
            raise OutputError(f"{dest}: cannot give the finished file a name in {parent}")
    if force:
        os.replace(named, dest)
    else:
        _link_new(named, dest)
        _unlink(named)


def _can_name_unnamed_files(parent: Path, dest: Path) -> bool:
    probe_fd = os.open(parent, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o644)
    try:
        probe = _partial_name(dest, parent)
        if not _link_fd(probe_fd, probe):
            return False
        _unlink(probe)
        return True
    finally:
        os.close(probe_fd)


def _partial_name(dest: Path, parent: Path) -> Path:
    return parent / f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.partial"


_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000


def _link_fd(fd: int, dest: Path) -> bool:
    """Give an open (O_TMPFILE) file the name ``dest``, which must not exist: ``linkat`` with
    AT_EMPTY_PATH (needs CAP_DAC_READ_SEARCH), else through its /proc/self/fd link (the usual
    unprivileged way, which some sandboxes refuse). False when neither works."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.linkat(fd, b"", _AT_FDCWD, os.fsencode(dest), _AT_EMPTY_PATH) == 0:
            return True
    except (OSError, AttributeError):
        pass
    try:
        os.link(f"/proc/self/fd/{fd}", dest, follow_symlinks=True)
    except OSError:
        return False
    return True


def _link_new(source: str | Path, dest: Path) -> None:
    try:
        os.link(source, dest, follow_symlinks=True)
    except FileExistsError:
        raise OutputError(f"{dest}: already exists (created while this command ran; use "
                          "--force to overwrite)") from None


def _remove_stale_partials(dest: Path, parent: Path) -> None:
    """Remove ``.NAME.PID.*.partial`` files of ``dest`` whose process no longer exists."""
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for entry in entries:
        m = _PARTIAL.match(entry.name)
        if not m or m["name"] != dest.name or _alive(int(m["pid"])):
            continue
        _unlink(entry)
        warnings.warn(f"removed {entry}, a partial output left by a process that no longer "
                      "runs", stacklevel=3)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
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
