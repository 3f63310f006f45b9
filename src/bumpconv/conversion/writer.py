"""Execute a plan: stream every tensor from the source into the blob, atomically.

The pieces, each in its own module: :mod:`.stream` packs one tensor as chunks of rows read
straight from the source; :mod:`.pipeline` writes and hashes those chunks on two threads;
:mod:`bumpconv.files.atomic` makes the file appear only when complete; the header, dtype table
and footer bytes come from :mod:`bumpconv.format.codec`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files.atomic import atomic_output, write_all
from ..files.progress import progress_bar
from ..format.codec import pack_footer, pack_header
from ..format.dtypes import DType
from ..format.errors import ConfigError, LayoutError, SourceError
from ..format.packing import quant_row
from .manifest import created_at, metadata_bytes, output_size
from .pipeline import Emitter
from .quantize import ChunkQuantizer
from .plan import KEEP, Plan
from .stream import CHUNK_BYTES, packed_chunks
from .tensor_source import BlockSource, TensorSource


@dataclass(frozen=True)
class WriteResult:
    path: Path
    size: int
    checksum: str
    tensor_crc32: dict[str, str]


def header_bytes(plan: Plan, checksum: bytes) -> bytes:
    """The header of the profile's written variant for this plan."""
    return pack_header(plan.header, plan.profile.magic, plan.profile.version,
                       plan.header_values(), checksum)


def _first_nonfinite(names: tuple[str, ...], source: TensorSource, block: int = 1 << 20) -> str:
    """Where the first NaN or infinity of some source tensor is (a second, slow pass, taken
    only once one has been seen)."""
    for name in names:
        info = source.tensors[name]
        for start in range(0, info.numel, block):
            values = source.read(name, start, min(block, info.numel - start))
            bad = np.flatnonzero(~np.isfinite(values))
            if len(bad):
                index = [int(i) for i in np.unravel_index(start + int(bad[0]), info.shape)]
                return (f"{info.file}: tensor {name!r} holds {values[bad[0]]} at {index}; "
                        "refusing to convert a non-finite weight (--allow-nonfinite keeps it)")
    raise AssertionError("a packed chunk was non-finite but no source value is")


def write_blob(plan: Plan, source: TensorSource, dest: Path, force: bool = False,
               progress: bool = False, allow_nonfinite: bool = False) -> WriteResult:
    """Write ``plan`` for ``source`` to ``dest`` atomically; returns size and checksums.

    Every packed chunk is checked for NaN and infinity as it streams past (a trained model has
    none; a blob with them runs, printing one token forever): one is an error naming the source
    tensor and the element, unless ``allow_nonfinite``."""
    try:
        created_at()
    except ValueError:
        raise ConfigError("SOURCE_DATE_EPOCH must be an integer number of seconds") from None
    kept = source if isinstance(source, BlockSource) else None
    if plan.quant == KEEP and kept is None:
        raise LayoutError(f"{source.root}: the plan keeps quantized blocks (--quant keep) but "
                          "this source has none to keep (only a GGUF file has)")
    bar = progress_bar(plan.payload_end, dest.name, progress)
    size = output_size(plan, source)
    with atomic_output(dest, force, size=size, inputs=source.input_files()) as fd, \
            ThreadPoolExecutor(1) as background:
        # the source's SHA-256 (provenance) is computed beside the conversion
        provenance = background.submit(source.provenance) if plan.profile.writes_metadata else None
        write_all(fd, header_bytes(plan, bytes(32)))
        emitter = Emitter(fd, CHUNK_BYTES, bar)
        arrays = source.tokenizer[0].by_name() if plan.carries_tokenizer and source.tokenizer else {}
        quantizer = ChunkQuantizer() if plan.quant is not None else None
        try:
            emitter.emit(None, plan.dtype_table(), None)
            for t in plan.tensors:
                emitter.emit(t.name, b"", None)  # every tensor gets a digest, even an empty one
                if t.slot.content == "tokenizer":
                    emitter.emit(t.name, arrays[t.name], None)
                    continue
                if kept is not None and plan.quant == KEEP and t.dtype != DType.FP32:
                    emitter.emit(t.name, kept.kept_rows(t.slot, t.dtype), None)  # as they are
                    continue
                row = quant_row(t.slot) if t.dtype != DType.FP32 else t.slot.shape[-1]
                for block, buf in packed_chunks(t.slot, source, CHUNK_BYTES, emitter.take,
                                                row // t.slot.shape[-1]):
                    if not allow_nonfinite and not np.isfinite(block).all():
                        raise SourceError(_first_nonfinite(t.slot.sources, source))
                    if t.dtype != DType.FP32:
                        assert quantizer is not None
                        block = quantizer(block.reshape(-1, row), t.dtype)
                    emitter.emit(t.name, block, buf)
        except BaseException:
            emitter.close()
            raise
        finally:
            bar.close()
            if quantizer is not None:
                quantizer.close()
        checksum, per_tensor = emitter.finish()
        if provenance is not None:
            blob = metadata_bytes(plan, checksum, per_tensor, provenance.result(), source)
            write_all(fd, blob + pack_footer(blob))
        os.pwrite(fd, header_bytes(plan, bytes.fromhex(checksum)), 0)
        size = os.lseek(fd, 0, os.SEEK_END)
    return WriteResult(dest, size, checksum, per_tensor)
