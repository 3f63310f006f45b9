"""The streaming packer: one packed tensor as consecutive blocks of rows, read straight from the
source, in memory bounded by the chunk size whatever the model size.

How the index arithmetic works, walked through with WO (packed ``[H][AE][AD]`` from
``o_proj [E, H*D]``, rule ``view [E, H, D], axes [1, 0, 2]``):

1. :func:`~bumpconv.format.packing.row_map` sees the packed tensor as ``rows = H*AE`` rows of
   ``width = AD`` floats; each row holds ``run = D`` data values followed by zero padding.
   Logical row ``i = h*E + e`` (rows in data-box order ``[H][E]``) is the ``D`` values
   ``o_proj[e, h*D : (h+1)*D]``: it starts at flat source element ``src_start[i] = e*H*D +
   h*D`` and lands in packed row ``pad_rows[i] = h*AE + e`` (rows ``E..AE-1`` of each head
   block are padding).
2. :func:`~bumpconv.format.packing.arithmetic_runs` groups logical rows whose source starts
   advance by a constant stride: within head ``h``, consecutive ``e`` are ``H*D`` elements
   apart, so WO is ``H`` runs of ``E`` rows with stride ``H*D`` (a dense tensor such as wq is
   one run whose stride equals its row length).
3. :func:`packed_chunks` cuts the packed rows into chunks of ``CHUNK_BYTES``. For the chunk of
   packed rows ``[a, b)`` a binary search in ``pad_rows`` gives the logical rows ``[i0, i1)``
   that land in it; each run overlapping them is copied with :func:`_fill_rows`.
4. :func:`_fill_rows` copies rows ``[s, e)`` of one run: a dense run is read straight into the
   output buffer with one ``preadv``; a strided run (WO's stride ``H*D`` is larger than its
   ``run`` of ``D``) is read as a span of ``(count-1)*stride + run`` source elements and viewed
   with ``as_strided`` as ``count`` rows of ``run`` values, ``stride`` apart, which are widened
   to fp32 into packed rows ``pad_rows[s:e] - a``, columns ``[0, D)``. Only the columns used
   are widened.

A strided source of at most ``WHOLE_SOURCE_LIMIT`` bytes is read once, whole, and every head is
cut from that copy; a larger one is re-read per run in spans of at most ``CHUNK_BYTES``, so the
largest buffer is fixed whatever the model size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..format.profile import TensorSlot
from ..format.packing import RowMap, arithmetic_runs, row_map
from .safetensors_file import widen
from .tensor_source import TensorSource

#: Output bytes per pipeline step: large enough for few syscalls, small enough that a chunk is
#: still in the 2 MiB L2 cache when the hash stage reads it (measured fastest of 0.5-8 MiB).
CHUNK_BYTES = 2 << 20
#: A source read with a row stride (WO: one head's columns at a time) is read whole, once, when
#: its stored size is at most this; a larger one is re-read per head in bounded spans. This
#: caps the only per-tensor buffer, so peak memory has a fixed bound whatever the model size.
WHOLE_SOURCE_LIMIT = 32 << 20


def _fresh(elements: int) -> np.ndarray:
    return np.empty(elements, dtype=np.float32)


def packed_chunks(slot: TensorSlot, source: TensorSource, chunk_bytes: int = CHUNK_BYTES,
                  take: Callable[[int], np.ndarray] = _fresh,
                  row_group: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The packed tensor as consecutive 2-D row blocks (fp32, padding zero).

    Yields ``(block, buffer)``: ``block`` is a view of ``buffer``, which came from ``take`` and
    may be recycled by the caller once the block has been consumed. Each block holds a multiple
    of ``row_group`` rows (a quantized row that spans several packed rows is never cut).
    """
    rm = row_map(slot)
    rows_per_chunk = max(1, chunk_bytes // (rm.width * 4) // row_group) * row_group
    runs = arithmetic_runs(rm.src_index, rm.src_start) if rm.run else []
    whole: dict[int, np.ndarray] = {}
    if any(stride > rm.run for _, _, stride in runs):
        sizes = [source.tensors[n].nbytes for n in slot.sources]
        if max(sizes) <= WHOLE_SOURCE_LIMIT:
            whole = {k: source.read_raw(n, 0, source.tensors[n].numel)
                     for k, n in enumerate(slot.sources)}
    max_span = max(rm.run, chunk_bytes // 4)
    run_i = 0
    for a in range(0, rm.rows, rows_per_chunk):
        b = min(rm.rows, a + rows_per_chunk)
        buf = take((b - a) * rm.width)
        out = buf[:(b - a) * rm.width].reshape(b - a, rm.width)
        i0, i1 = (int(x) for x in np.searchsorted(rm.pad_rows, [a, b]))
        if not (rm.run == rm.width and i1 - i0 == b - a):
            out.fill(0)  # some rows or columns of this block are padding
        while run_i < len(runs) and runs[run_i][1] <= i0:
            run_i += 1
        j = run_i
        while j < len(runs) and runs[j][0] < i1:
            begin, end, stride = runs[j]
            s, e = max(begin, i0), min(end, i1)
            step = max(1, (max_span - rm.run) // stride + 1) if stride else 1
            for k in range(s, e, step):
                _fill_rows(out, a, rm, k, min(e, k + step), stride, slot, source, whole)
            j += 1
        if slot.offset and i1 > i0:  # a baked offset: added to the data, never the padding
            out[rm.pad_rows[i0:i1] - a, :rm.run] += np.float32(slot.offset)
        yield out, buf


def _fill_rows(out: np.ndarray, first_row: int, rm: RowMap, s: int, e: int, stride: int,
               slot: TensorSlot, source: TensorSource, whole: dict[int, np.ndarray]) -> None:
    """Copy logical rows [s, e) of one arithmetic run into ``out``."""
    k = int(rm.src_index[s])
    start = int(rm.src_start[s])
    count = e - s
    span = (count - 1) * stride + rm.run
    p0 = int(rm.pad_rows[s]) - first_row
    dense = rm.run == rm.width and (count == 1 or stride == rm.run) \
        and int(rm.pad_rows[e - 1]) - first_row == p0 + count - 1
    if dense and k not in whole:
        source.read(slot.sources[k], start, span, out=out[p0:p0 + count].reshape(-1))
        return
    seg = whole[k][start:start + span] if k in whole else source.read_raw(slot.sources[k], start, span)
    size = seg.itemsize
    rows = as_strided(seg, shape=(count, rm.run), strides=(stride * size, size), writeable=False)
    out[rm.pad_rows[s:e] - first_row, :rm.run] = widen(rows)  # widen only the columns used


