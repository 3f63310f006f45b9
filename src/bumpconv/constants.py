"""Format facts of the engine's bump blob, in one place (see docs/format.md).

Everything that is a byte-level fact of the format and not a per-profile choice lives here:
the dtype enums, alignment, the metadata footer. Header field offsets and tensor order are
per-profile data in ``schemas/*.layout.json``.
"""

from enum import IntEnum

#: Every padded dimension is rounded so that one row is a multiple of this many bytes.
ROW_ALIGN_BYTES = 64
#: The fixed header size of every BUMPWGT version.
HEADER_SIZE = 128

#: Trailer of BUMPWGT5: magic, u64 size of the JSON, SHA-256 of the JSON bytes.
FOOTER_MAGIC = b"BUMPV5MD"
FOOTER_SIZE = 8 + 8 + 32


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


class LegacyDType(IntEnum):
    """The engine's old enum, used by BUMPWGT3 dtype tables (and stale Q4_K=6 in v4 HF writers)."""

    FP32 = 0
    Q4_K = 6


def align_up_elems(n: int, elem_bytes: int = 4) -> int:
    """Round ``n`` elements up so that ``n * elem_bytes`` is a multiple of ROW_ALIGN_BYTES."""
    per_row = ROW_ALIGN_BYTES // elem_bytes
    return -(-n // per_row) * per_row
