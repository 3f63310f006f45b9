"""Element types of a bump blob: the engine's dtype enums and each type's block geometry.

One home for "what is a dtype": its code in the file, its name in metadata and manifests, and
how many bytes hold how many elements (ggml's block layouts for the quantized types). Everything
that sizes, reads or writes a tensor derives from :data:`BLOCKS`.

Spelling: bumpconv's own names say ``fp32``/``fp16``/``bf16`` (the engine's, as in
:class:`DType`). ``F32``/``F16``/``BF16`` appear only as other formats' dtype tags (safetensors
headers, ggml types), and ``--quant f32`` is llama.cpp's word for an unquantized output
(``convert_hf_to_gguf --outtype f32``), kept so that llama.cpp users type what they know.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class DType(IntEnum):
    """The engine's current dtype enum (after it inserted Q4_1). bumpwgt5 writes these codes."""

    FP32 = 0
    BF16 = 1
    FP16 = 2
    INT8 = 3
    INT4 = 4
    Q4_0 = 5
    Q4_1 = 6
    Q4_K = 7
    Q6_K = 8
    Q8_0 = 9
    Q8_K = 10
    Q5_0 = 11
    Q5_1 = 12
    Q5_K = 13
    # bumpconv's extension codes, outside the engine's enum (which has none for these): the
    # engine-v7 tokenizer arrays are i32 and u8. The engine's runtime ignores the dtype table.
    I32 = 0x80
    U8 = 0x81

    @property
    def label(self) -> str:
        """The lower-case name used in metadata, manifests and on the command line."""
        return self.name.lower()

    @property
    def block(self) -> "Block":
        return BLOCKS[self]

    def nbytes(self, elements: int) -> int:
        """Bytes of ``elements`` values; they must be a whole number of blocks."""
        b = BLOCKS[self]
        if elements % b.elements:
            raise ValueError(f"{elements} elements is not a whole number of {self.name} blocks "
                             f"({b.elements} elements each)")
        return elements // b.elements * b.nbytes


class LegacyDType(IntEnum):
    """The engine's old enum, used by BUMPWGT3 dtype tables (and stale Q4_K=6 in v4 HF writers)."""

    FP32 = 0
    Q4_K = 6

    @property
    def current(self) -> DType:
        """The same type in the current enum."""
        return DType[self.name]


@dataclass(frozen=True)
class Block:
    """``nbytes`` bytes hold ``elements`` consecutive values of one row (ggml's block layouts)."""

    nbytes: int
    elements: int


#: Bytes per block and elements per block of every dtype code.
BLOCKS: dict[DType, Block] = {
    DType.FP32: Block(4, 1), DType.BF16: Block(2, 1), DType.FP16: Block(2, 1),
    DType.INT8: Block(1, 1), DType.INT4: Block(1, 2), DType.Q4_0: Block(18, 32),
    DType.Q4_1: Block(20, 32), DType.Q4_K: Block(144, 256), DType.Q6_K: Block(210, 256),
    DType.Q8_0: Block(34, 32), DType.Q8_K: Block(292, 256), DType.Q5_0: Block(22, 32),
    DType.Q5_1: Block(24, 32), DType.Q5_K: Block(176, 256),
    DType.I32: Block(4, 1), DType.U8: Block(1, 1),
}


def dtype_named(label: str) -> DType:
    """The DType whose :attr:`DType.label` is ``label`` (KeyError otherwise)."""
    return DType[label.upper()]
