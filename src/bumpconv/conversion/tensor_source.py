"""What the converter needs of a source, whichever file format it reads: the contract that
:class:`.source.Source` (a Hugging Face checkpoint) and :class:`.gguf_source.GGUFSource` (a GGUF
file) both fulfil, and the :class:`Provenance` record both return.

The planner, writer, manifest, sidecar writer and verifier are typed by :class:`TensorSource`,
not by either class: they must not depend on which format the weights came from, and the two
source modules must not import each other for a shared type (``source.py`` opens a GGUF
through ``gguf_source.py``, one way only). :class:`BlockSource` adds what only a source of
quantized blocks offers: ``--quant keep``, its blocks copied as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ..format.dtypes import DType
from ..format.profile import TensorSlot
from ..format.spec import ModelSpec
from ..format.tokenizer_meta import TokenizerMeta
from ..format.vocab import VocabArrays
from .safetensors_file import TensorInfo


@dataclass(frozen=True)
class Provenance:
    """What the output was made from: file names and SHA-256s, or a cache repo id and commit.

    Paths are deliberately absent: the same weights must give the same blob wherever they live.
    """

    kind: str
    files: tuple[tuple[str, int, str | None], ...]
    repo_id: str | None = None
    commit: str | None = None

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "kind": self.kind,
            "files": [{"name": n, "bytes": b, "sha256": h} for n, b, h in self.files],
        }
        if self.repo_id:
            out.update(repo_id=self.repo_id, commit=self.commit)
        return out


@runtime_checkable
class TensorSource(Protocol):
    """An opened source: its spec, its tensors under Hugging Face names, element-range reads
    as fp32, the tokenizer's arrays when opened with it, and where it came from."""

    #: the directory (checkpoint) or file (GGUF) named in messages
    root: Path
    spec: ModelSpec
    #: HF name -> dtype, shape and place; what the planner lays out
    tensors: dict[str, TensorInfo]
    #: the tokenizer's arrays and record, when asked for and the source has a tokenizer
    tokenizer: tuple[VocabArrays, TokenizerMeta] | None

    def read(self, name: str, start: int, count: int,
             out: np.ndarray | None = None) -> np.ndarray:
        """Elements ``[start, start+count)`` of tensor ``name`` as fp32, into ``out`` if given."""
        ...

    def read_raw(self, name: str, start: int, count: int) -> np.ndarray:
        """The same elements as stored (bf16/f16 stay narrow; ``safetensors_file.widen``)."""
        ...

    def read_all(self, name: str) -> np.ndarray:
        """A whole tensor as fp32 in its own shape."""
        ...

    def input_files(self) -> list[Path]:
        """Every file the conversion reads (an output may never be one of them)."""
        ...

    def provenance(self, hash_files: bool = True) -> Provenance:
        """File names, sizes and SHA-256s (hashed when ``hash_files``)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> TensorSource: ...

    def __exit__(self, *exc: object) -> None: ...


@runtime_checkable
class BlockSource(TensorSource, Protocol):
    """A source of quantized blocks the blob can hold as they are (``--quant keep``)."""

    def kept_dtype(self, slot: TensorSlot) -> DType:
        """The dtype ``slot`` gets under ``--quant keep``, or a LayoutError naming the tensor."""
        ...

    def kept_rows(self, slot: TensorSlot, dtype: DType) -> np.ndarray:
        """The packed tensor ``slot`` as the source's own blocks, rows ``[rows][bytes]``."""
        ...
