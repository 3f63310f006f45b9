"""Output files that appear only when complete and never replace what they must not: every file
bumpconv writes (blobs, parity dumps) goes through :func:`atomic_output`, and an output of
several files (a model directory: the blob and the engine's sidecars) through
:func:`atomic_directory`, which makes them appear together or not at all.

* The data goes to an unnamed temporary file (``O_TMPFILE``) in the destination's directory,
  so a process killed even by SIGKILL leaves nothing behind. Where the filesystem cannot make
  one, a named ``.NAME.PID.XXXX.partial`` is used instead, and partials left by processes that
  no longer exist are removed (with a warning naming each) the next time.
* Without ``force`` the finished file is *linked* into place, which fails if the name exists:
  two conversions to the same path cannot both succeed, and an existing file is never
  replaced. With ``force`` it is renamed over the old one (atomic on POSIX).
* The destination may not be a directory, a device, a FIFO or a socket (even with ``force``),
  nor one of the inputs it is made from; free space is checked against the exact size first.
* A directory is staged whole as a hidden ``.NAME.PID.XXXX.partial`` directory beside its
  destination and renamed into place in one step (a new or empty destination), or swapped with
  the old one by ``renameat2(RENAME_EXCHANGE)`` (``force``), whose content is then removed. A
  kill at any moment leaves either the old directory or the new one, never a mix; a killed
  process's staging directory is removed the next time, like a file's partial. SIGINT and
  SIGTERM arriving during the swap are held until it is done.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import secrets
import shutil
import signal
import stat
import tempfile
import threading
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


def check_destination(dest: Path, force: bool, inputs: Sequence[Path] = (),
                      owned: frozenset[str] | None = None) -> None:
    """What :func:`atomic_output` (or, given the names a model directory ``owned``,
    :func:`atomic_directory`) refuses about ``dest`` before writing: ``convert --dry-run`` asks
    it without writing."""
    parent = dest.parent if str(dest.parent) else Path(".")
    if owned is None:
        _check_destination(dest, parent, force, inputs)
    else:
        _check_directory(dest, parent, force, owned, inputs)


#: What --force may replace: a directory bumpconv wrote (these names) plus what the engine's own
#: drivers build inside it; a directory holding anything else is never replaced.
REPLACEABLE = frozenset({".ck_build", ".ck_build_v8"})


@contextmanager
def atomic_directory(dest: Path, force: bool, owned: frozenset[str],
                     inputs: Sequence[Path] = ()) -> Iterator[Path]:
    """Yield an empty hidden staging directory beside ``dest``; when the block completes, the
    staging directory becomes ``dest`` in one rename (or one exchange with the old ``dest``
    under ``force``); on any exception (KeyboardInterrupt included) nothing is left.

    ``owned``: the names bumpconv writes into such a directory; ``force`` replaces an existing
    directory only when it holds nothing else (besides the engine's build directories).
    ``inputs`` may not lie inside ``dest``."""
    parent = dest.parent if str(dest.parent) else Path(".")
    replacing = _check_directory(dest, parent, force, owned, inputs)
    _remove_stale_partials(dest, parent)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{os.getpid()}.", suffix=".partial",
                                        dir=parent))
        os.chmod(staging, 0o777 & ~_umask())
    except OSError as exc:
        raise OutputError(f"{dest}: cannot create a directory in {parent} "
                          f"({exc.strerror})") from None
    try:
        yield staging
        _fsync_dir(staging)
        with _interrupts_held():
            old = _swap_into_place(staging, dest, replacing)
            _fsync_dir(parent)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise OutputError(f"{dest}: write failed ({exc.strerror})") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _check_directory(dest: Path, parent: Path, force: bool, owned: frozenset[str],
                     inputs: Sequence[Path]) -> bool:
    """Whether ``dest`` exists with content to replace; OutputError when it may not be."""
    if not parent.is_dir():
        raise OutputError(f"{dest}: directory {parent} does not exist")
    if dest.is_symlink():
        raise OutputError(f"{dest}: is a symbolic link; give the directory it points to")
    real = dest.resolve()
    for source in inputs:
        if real in Path(source).resolve().parents:
            raise OutputError(f"{dest}: holds {source}, an input of this command; write into "
                              "another directory")
    try:
        mode = os.stat(dest).st_mode
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise OutputError(f"{dest}: cannot check the output path ({exc.strerror})") from None
    if not stat.S_ISDIR(mode):
        raise OutputError(f"{dest}: exists and is not a directory")
    names = sorted(os.listdir(dest))
    if not names:
        return False
    foreign = [n for n in names if n not in owned and n not in REPLACEABLE]
    if foreign:
        raise OutputError(f"{dest}: holds {foreign[0]!r}, which bumpconv did not write; a model "
                          "directory is written whole (give a new directory, e.g. "
                          f"{dest / 'model'}), and --force replaces only a model directory ("
                          + ", ".join(sorted(owned)) + ")")
    if not force:
        raise OutputError(f"{dest}: already exists (use --force to replace it)")
    return True


def _swap_into_place(staging: Path, dest: Path, replacing: bool) -> Path | None:
    """Put ``staging`` at ``dest``; returns where the old content now is (to be removed)."""
    if not replacing:
        try:
            os.rename(staging, dest)  # atomic; replaces an empty directory, never a full one
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise OutputError(f"{dest}: was filled while this command ran; use --force to "
                                  "replace it") from None
            raise
        return None
    if _exchange(staging, dest):
        return staging
    old = _partial_name(dest, dest.parent if str(dest.parent) else Path("."))
    os.rename(dest, old)  # no exchange here: a moment without dest, never a mixed one
    os.rename(staging, dest)
    return old


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2`` with RENAME_EXCHANGE); False where the
    C library or the filesystem cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err))


@contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while the block runs (the commit of a directory), then deliver
    the first one that came: an interruption happens before the commit or after it, never in
    the middle. Signal handlers can only be set from the main thread; elsewhere this holds
    nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if caught:
            signal.raise_signal(caught[0])


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
    """Remove ``.NAME.PID.*.partial`` files (and staging directories) of ``dest`` whose process
    no longer exists."""
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for entry in entries:
        m = _PARTIAL.match(entry.name)
        if not m or m["name"] != dest.name or _alive(int(m["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
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
