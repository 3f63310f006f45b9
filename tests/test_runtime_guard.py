"""The runtime and a file that changes under it, a damaged metadata block, and per-position cost
(fast lane: no torch; the blobs come from the cached tiny checkpoints)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from bumpconv.format.errors import BlobError
from bumpconv.blob.reader import open_blob
from bumpconv.run.runtime import BumpModel
from runtime_helpers import convert


@pytest.fixture
def blob(synthetic: Callable[..., Path], tmp_path: Path) -> Path:
    return convert(synthetic("llama-untied"), tmp_path / "m.bump")


def test_truncated_while_running_is_an_error_not_a_crash(blob: Path) -> None:
    with BumpModel.open(blob) as m:
        m.forward([1, 2, 3])
        os.truncate(blob, os.path.getsize(blob) // 3)
        with pytest.raises(BlobError, match="truncated while in use"):
            m.forward([4], start_pos=3)
        with pytest.raises(BlobError, match="truncated while in use"):  # and stays unusable
            m.prefill([1])


def test_rewritten_in_place_while_running_is_an_error(blob: Path) -> None:
    with BumpModel.open(blob) as m:
        first = m.prefill([1, 2, 3])
        time.sleep(0.01)
        with open(blob, "r+b") as f:  # same size, new content: no signal, a new mtime
            f.seek(os.path.getsize(blob) // 2)
            f.write(b"\x7f" * 64)
        with pytest.raises(BlobError, match="modified while in use"):
            m.prefill([1, 2, 3])
    assert first.shape[-1] > 0


def test_replaced_by_rename_keeps_running_the_old_file(blob: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.bump"
    shutil.copy(blob, other)
    with BumpModel.open(blob) as m:
        before = m.prefill([1, 2, 3])
        os.replace(other, blob)  # the mapping keeps the old inode
        after = m.prefill([1, 2, 3])
    assert (before == after).all()


def test_metadata_that_fails_its_hash_is_refused_at_open(blob: Path) -> None:
    with open_blob(blob) as bf:
        start = bf.payload_end
    data = bytearray(blob.read_bytes())
    at = data.index(b'"rope_theta":', start) + len(b'"rope_theta":')
    data[at] = ord("9") if data[at] != ord("9") else ord("8")  # a different theta, same length
    blob.write_bytes(bytes(data))
    with pytest.raises(BlobError, match="does not match its footer hash"):
        BumpModel.open(blob)


def test_per_position_state_grows_with_use_not_with_the_context(synthetic, tmp_path: Path) -> None:
    src = synthetic("llama-tied")
    huge = tmp_path / "huge.bump"
    assert convert(src, huge, extra=("--context", str(1 << 22))) == huge
    start = time.perf_counter()
    with BumpModel.open(huge) as m:
        opened = time.perf_counter() - start
        assert m.spec.context_length == 1 << 22
        assert m.positions_allocated == 0
        m.prefill(list(range(10)))
        assert 10 <= m.positions_allocated <= 256
        for t in range(300):
            m.decode(t % 50)
        assert 310 <= m.positions_allocated <= 1024
        logits = m.prefill([1, 2, 3])
    with BumpModel.open(convert(src, tmp_path / "small.bump")) as small:
        assert (small.prefill([1, 2, 3]) == logits).all()  # the cache's growth changes nothing
    assert opened < 2.0


def test_truncated_during_a_forward_pass_is_an_error_not_sigbus(blob: Path) -> None:
    """cp over the path truncates the inode the runtime maps: a forward pass in flight then
    reads pages past the new end. The SIGBUS guard turns that into an error."""
    errors: list[BaseException] = []
    passes = [0]

    def run() -> None:
        try:
            with BumpModel.open(blob, threads=2) as m:
                while True:
                    m.prefill(list(range(1, 240)))
                    passes[0] += 1
        except BlobError as exc:
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    while passes[0] < 3:
        time.sleep(0.001)
    os.truncate(blob, 200)
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert len(errors) == 1 and "truncated while in use" in str(errors[0])


def test_a_mapped_tensor_view_of_a_truncated_file_reads_zeros_then_refuses(blob: Path) -> None:
    with open_blob(blob) as bf:
        name = bf.tensors[-1].name
        view = bf.array(name)
        before = float(np.abs(view).sum())
        os.truncate(blob, 4096)
        after = float(np.abs(view).sum())  # SIGBUS without the guard
        del view
        with pytest.raises(BlobError, match="changed while it was being read"):
            bf.raise_if_changed()
    assert before > 0 and after == 0
