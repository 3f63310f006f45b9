"""Quantizing packed chunks as they stream: each chunk's rows are split over two threads (the C
quantizer runs with the GIL released), so quantization keeps both cores busy beside the write
and hash stages, in memory bounded by the chunk."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..format.dtypes import DType
from ..native.quant import quantize

#: Threads quantizing one chunk (the machine has two cores; the write and hash stages mostly
#: wait on I/O and hashlib, which also release the GIL).
THREADS = 2


class ChunkQuantizer:
    """``quantizer(block, dtype)``: the packed fp32 rows of ``block`` as ggml blocks (uint8)."""

    def __init__(self, threads: int = THREADS) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="bumpconv-quantize")
        self._threads = threads

    def __call__(self, block: np.ndarray, dtype: DType) -> np.ndarray:
        parts = np.array_split(block, min(self._threads, len(block)))
        return np.concatenate(list(self._pool.map(lambda p: quantize(p, dtype), parts)))

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> "ChunkQuantizer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
