"""Write and hash packed chunks on two threads while the caller packs the next one.

``os.write`` and ``hashlib`` release the GIL, so packing (numpy, preadv), writing and hashing
overlap on two cores. Each stage is a one-worker :class:`~concurrent.futures.ThreadPoolExecutor`,
which keeps its items in order; a fixed pool of chunk buffers bounds memory: a buffer is reused
only once both stages are done with it.

Per-tensor digests are CRC32 (see :class:`bumpconv.format.digests.Crc32`); measured on
SmolLM2-135M fp32, a per-tensor SHA-256 stream instead took the write from 0.65 s to 0.90 s.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import sys
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from ..files.atomic import write_all
from ..files.progress import Progress
from ..format.digests import Crc32

#: Chunk buffers in flight: one being packed, the others being written and hashed.
BUFFERS = 6
#: Written bytes between writeback kicks: the disk writes while we convert, instead of the
#: whole file landing on the final fsync.
SYNC_BYTES = 64 << 20


def _writeback_starter() -> Callable[[int, int, int], object] | None:
    """Linux ``sync_file_range(fd, off, len, SYNC_FILE_RANGE_WRITE)``: start writing a range
    to disk without waiting for it (fdatasync would stall the write stage). None elsewhere;
    the final fsync alone then makes the file durable."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return lambda fd, offset, length: fn(fd, offset, length, 2)  # 2 = SYNC_FILE_RANGE_WRITE


_START_WRITEBACK = _writeback_starter()


class Emitter:
    """Streams chunks to ``fd`` in order, hashing the whole (SHA-256) and each tensor (CRC32)."""

    def __init__(self, fd: int, chunk_bytes: int, bar: Progress) -> None:
        self.fd, self.bar = fd, bar
        self.total = hashlib.sha256()
        self.per_tensor: dict[str, Crc32] = {}
        self._unsynced = 0
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="bumpconv-write")
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="bumpconv-hash")
        self._free = [np.empty(chunk_bytes // 4, dtype=np.float32) for _ in range(BUFFERS)]
        self._in_flight: deque[tuple[np.ndarray | None, Future, Future]] = deque()

    def take(self, elements: int) -> np.ndarray:
        """A free buffer of at least ``elements`` fp32 values (waits for the oldest chunk in
        flight when none is free)."""
        while not self._free:
            self._retire()
        buf = self._free.pop()
        return buf if buf.size >= elements else np.empty(elements, dtype=np.float32)

    def emit(self, tensor: str | None, data: np.ndarray | bytes, buf: np.ndarray | None) -> None:
        """Queue ``data`` (a view of ``buf``, or plain bytes) for writing and hashing; ``tensor``
        names the tensor whose CRC32 it extends."""
        view = memoryview(data).cast("B")
        if tensor is not None:
            self.per_tensor.setdefault(tensor, Crc32())
        self._in_flight.append((buf, self._writer.submit(self._write, view),
                                self._hasher.submit(self._hash, tensor, view)))
        if len(self._in_flight) > BUFFERS:
            self._retire()

    def _retire(self) -> None:
        buf, wrote, hashed = self._in_flight.popleft()
        wrote.result()  # re-raises a stage's error here, in the caller's thread
        hashed.result()
        if buf is not None:
            self._free.append(buf)

    def _write(self, data: memoryview) -> None:
        write_all(self.fd, data)
        self.bar.update(len(data))
        self._unsynced += len(data)
        if self._unsynced >= SYNC_BYTES and _START_WRITEBACK is not None:
            end = os.lseek(self.fd, 0, os.SEEK_CUR)
            _START_WRITEBACK(self.fd, end - self._unsynced, self._unsynced)
            self._unsynced = 0

    def _hash(self, tensor: str | None, data: memoryview) -> None:
        self.total.update(data)
        if tensor is not None:
            self.per_tensor[tensor].update(data)

    def finish(self) -> tuple[str, dict[str, str]]:
        """Wait for every chunk; re-raise a stage's error; return the checksum and the
        per-tensor digests."""
        try:
            while self._in_flight:
                self._retire()
        finally:
            self.close()
        return self.total.hexdigest(), {k: h.hexdigest() for k, h in self.per_tensor.items()}

    def close(self) -> None:
        """Stop both stages (after an error: drop what is queued)."""
        for pool in (self._writer, self._hasher):
            pool.shutdown(wait=True, cancel_futures=True)
