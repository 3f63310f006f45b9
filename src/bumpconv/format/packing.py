"""Packing: the stack/reshape/transpose rule of a layout slot, applied forwards and backwards.

Two forms of the same rule:

* :func:`pack` / :func:`unpack` work on whole arrays with plain numpy; they are the readable
  statement of the rule and what ``verify`` and the tests use.
* :func:`row_map` describes the packed tensor as rows, each filled from one contiguous run of
  one source; the streaming writer uses it to pack a tensor of any size in bounded memory.
  Tests check that both forms agree with the element rules in docs/format.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import LayoutError
from .profile import TensorSlot


def _box(slot: TensorSlot) -> tuple[slice, ...]:
    assert slot.box is not None
    return tuple(slice(0, b) for b in slot.box)


def _view(slot: TensorSlot) -> tuple[int, ...]:
    assert slot.box is not None
    return slot.view or slot.box


def _axes(slot: TensorSlot) -> tuple[int, ...]:
    return slot.axes or tuple(range(len(_view(slot))))


def logical_from_sources(slot: TensorSlot, sources: list[np.ndarray]) -> np.ndarray:
    """Stack the sources, reshape to the view, transpose: the unpadded packed data (box)."""
    x = sources[0] if len(sources) == 1 else np.stack(sources)
    return x.reshape(_view(slot)).transpose(_axes(slot))


def sources_from_logical(slot: TensorSlot, logical: np.ndarray) -> list[np.ndarray]:
    """The exact inverse of :func:`logical_from_sources` (views where numpy allows)."""
    assert slot.source_shape is not None
    x = logical.transpose(np.argsort(_axes(slot)))
    if len(slot.sources) == 1:
        return [x.reshape(slot.source_shape)]
    return list(x.reshape((len(slot.sources), *slot.source_shape)))


def pack(slot: TensorSlot, sources: list[np.ndarray]) -> np.ndarray:
    """The packed fp32 tensor in its padded shape, zeros outside the data box (the data with
    the slot's baked offset added, in fp32)."""
    out = np.zeros(slot.shape, dtype=np.float32)
    if slot.box is not None:
        out[_box(slot)] = with_offset(slot, logical_from_sources(slot, sources))
    return out


def with_offset(slot: TensorSlot, values: np.ndarray) -> np.ndarray:
    """``values`` (source values of ``slot``) as the slot stores them: plus its baked offset,
    added in fp32 as transformers adds it (``1.0 + w.float()``)."""
    if not slot.offset:
        return values
    return np.asarray(values, dtype=np.float32) + np.float32(slot.offset)


def source_values(slot: TensorSlot, packed: np.ndarray) -> list[np.ndarray]:
    """The source tensors a packed tensor stands for: :func:`unpack`, with a baked offset taken
    off again in fp32. For Gemma's (1 + w) stored as b = fl(1 + w) this is fl(b - 1), which
    transformers turns back into exactly b whenever b >= 0.5 (then b - 1 is exact: Sterbenz),
    so a model given these values multiplies by the blob's own factors."""
    values = unpack(slot, packed)
    if not slot.offset:
        return values
    return [np.asarray(v, dtype=np.float32) - np.float32(slot.offset) for v in values]


def unpack(slot: TensorSlot, packed: np.ndarray) -> list[np.ndarray]:
    """The source tensors recovered from a packed tensor (inverse of :func:`pack`; a baked
    offset stays in: compare them with :func:`with_offset` of the sources)."""
    if slot.box is None:
        return []
    return sources_from_logical(slot, packed.reshape(slot.shape)[_box(slot)])


def first_nonzero_padding(slot: TensorSlot, packed: np.ndarray,
                          block_rows: int = 4096) -> tuple[int, ...] | None:
    """Index of the first non-zero element outside the data box, or None when all padding is 0.

    Scans blocks of the leading axis so a memory-mapped tensor of any size is checked in
    bounded memory.
    """
    x = packed.reshape(slot.shape)
    box = slot.box or (0,) * len(slot.shape)
    if box == slot.shape:
        return None
    for a in range(0, slot.shape[0], block_rows):
        block = x[a:a + block_rows]
        mask = block != 0
        inner = max(0, min(box[0] - a, block.shape[0]))
        if inner and all(box[1:]):
            mask[(slice(0, inner), *(slice(0, b) for b in box[1:]))] = False
        hits = np.argwhere(mask)
        if len(hits):
            return (int(hits[0][0]) + a, *(int(i) for i in hits[0][1:]))
    return None


@dataclass(frozen=True)
class RowMap:
    """The packed tensor as ``rows x width`` (width = last padded dim).

    Logical row ``i`` (in data-box order) lands in packed row ``pad_rows[i]``, columns
    ``[0, run)``, and is read from source ``src_index[i]`` at flat element ``src_start[i]``.
    Packed rows not listed, and columns ``>= run``, are zero.
    """

    rows: int
    width: int
    run: int
    pad_rows: np.ndarray
    src_index: np.ndarray
    src_start: np.ndarray


def row_map(slot: TensorSlot) -> RowMap:
    """Derive the row form of a slot's rule by pushing row offsets through the same transform."""
    rows, width = math.prod(slot.shape[:-1]), slot.shape[-1]
    if slot.box is None:
        empty = np.zeros(0, dtype=np.int64)
        return RowMap(rows, width, 0, empty, empty, empty)
    view, axes, box = _view(slot), _axes(slot), slot.box
    starts = (np.arange(math.prod(view[:-1]), dtype=np.int64) * view[-1]).reshape(view[:-1])
    starts = starts.transpose(axes[:-1]).ravel()
    assert slot.source_shape is not None
    per_source = math.prod(slot.source_shape)
    if len(box) == 1:
        pad_rows = np.zeros(1, dtype=np.int64)
    else:
        grid = np.indices(box[:-1]).reshape(len(box) - 1, -1)
        pad_rows = np.ravel_multi_index(tuple(grid), slot.shape[:-1]).astype(np.int64)
    return RowMap(rows, width, box[-1], pad_rows, starts // per_source, starts % per_source)


def arithmetic_runs(src_index: np.ndarray, src_start: np.ndarray) -> list[tuple[int, int, int]]:
    """Split rows into maximal runs ``(begin, end, stride)`` from one source with a constant
    element stride, so each run is one strided read instead of one read per row."""
    n = len(src_start)
    runs: list[tuple[int, int, int]] = []
    i = 0
    while i < n:
        if i + 1 == n or src_index[i + 1] != src_index[i]:
            runs.append((i, i + 1, 0))
            i += 1
            continue
        stride = int(src_start[i + 1] - src_start[i])
        ok = (np.diff(src_start[i:]) == stride) & (src_index[i + 1:] == src_index[i])
        bad = np.flatnonzero(~ok)
        end = i + 1 + (int(bad[0]) if len(bad) else n - i - 1)
        runs.append((i, end, stride))
        i = end
    return runs


@dataclass(frozen=True)
class MatrixView:
    """Where element ``(r, c)`` of a slot's logical tensor ``[rows][cols]`` sits in its packed
    form (a vector has ``cols == 1``), in packed elements:
    ``(r // row_seg) * row_seg_stride + (r % row_seg) * ld + (c // col_seg) * col_seg_stride +
    c % col_seg``.

    The logical tensor is the sources stacked along rows: ``q_proj [H*D, E]``, ``o_proj
    [E, H*D]``, gate and up ``[2*I, E]``. This is how the runtime reads a tensor in place: the
    per-head blocks of wq are row segments of D rows ``AD*AE`` apart, the per-head blocks of wo
    are column segments of D columns ``AE*AD`` apart, and so on, all derived from the rule.
    """

    rows: int
    cols: int
    ld: int
    row_seg: int
    row_seg_stride: int
    col_seg: int
    col_seg_stride: int


def matrix_view(slot: TensorSlot) -> MatrixView:
    """Derive the :class:`MatrixView` of a slot from its rule (stack, reshape, transpose).

    The view's axes are split into row axes and trailing column axes (whose extents multiply to
    the source's column count); after merging axes that are contiguous in the packed tensor,
    each side may have at most two (a segment and the segments), and the innermost column axis
    must be contiguous.
    """
    assert slot.box is not None and slot.source_shape is not None
    view, axes = _view(slot), _axes(slot)
    if len(slot.shape) != len(axes):
        raise LayoutError(f"{slot.name}: packed shape {list(slot.shape)} does not have the "
                          f"rank of its rule ({len(axes)})")
    rows = len(slot.sources) * slot.source_shape[0]
    cols = math.prod(slot.source_shape[1:])
    packed = [math.prod(slot.shape[i + 1:]) for i in range(len(slot.shape))]
    strides = [packed[axes.index(j)] for j in range(len(view))]
    split, extent = len(view), 1
    while extent < cols and split > 0:
        split -= 1
        extent *= view[split]
    if extent != cols or math.prod(view[:split]) != rows:
        raise LayoutError(f"{slot.name}: its rule's view {list(view)} does not split into "
                          f"rows ({rows}) and columns ({cols})")
    row_axes = _merged(list(zip(view[:split], strides[:split])))
    col_axes = _merged(list(zip(view[split:], strides[split:])))
    if len(row_axes) > 2 or len(col_axes) > 2 or (col_axes and col_axes[-1][1] != 1):
        raise LayoutError(f"{slot.name}: its rule cannot be read as a segmented matrix")
    (row_seg, ld), row_outer = (row_axes[-1] if row_axes else (1, 0)), row_axes[:-1]
    col_seg = col_axes[-1][0] if col_axes else 1
    return MatrixView(rows, cols, ld, row_seg, row_outer[0][1] if row_outer else 0,
                      col_seg, col_axes[0][1] if len(col_axes) == 2 else 0)


def _merged(axes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(extent, stride) axes, outer to inner, with size-1 axes dropped and neighbours that are
    contiguous (outer stride == inner stride * inner extent) merged into one."""
    out: list[tuple[int, int]] = []
    for size, stride in axes:
        if size == 1:
            continue
        if out and out[-1][1] == stride * size:
            out[-1] = (out[-1][0] * size, stride)
        else:
            out.append((size, stride))
    return out


def quant_row(slot: TensorSlot) -> int:
    """How many packed values one quantized row holds: the blocks run along it.

    Normally the last packed axis. When the axes before it continue the same matrix row with no
    padding between them, the row is the whole matrix row instead: engine-v7's wo ``[AE][H][AD]``
    with ``AD == D`` is one row of ``H*D`` values, the input dimension llama.cpp and the engine
    quantize along (so a K-quant fits ``H*D = 256`` even when ``D = 64``). A row with padding
    inside (``AD > D``) stays one head long: a block never spans a gap."""
    width = slot.shape[-1]
    if slot.box is None or slot.source_shape is None or len(slot.shape) < 2:
        return width
    view = matrix_view(slot)
    if view.col_seg == view.cols == view.ld and view.cols % width == 0:
        return view.cols
    return width
