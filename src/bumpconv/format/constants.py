"""Byte-level facts of the bump blob that are not per-profile choices (see docs/format.md).

Header field offsets and tensor order are per-profile data in ``schemas/*.profile.json``; dtype
codes and block sizes are in :mod:`bumpconv.format.dtypes`.
"""

from importlib.metadata import version

#: The package version, as recorded in the metadata a blob carries (``created_by``).
VERSION = version("bumpconv")

#: Every padded dimension is rounded so that one row is a multiple of this many bytes.
ROW_ALIGN_BYTES = 64
#: The fixed header size of every BUMPWGT version.
HEADER_SIZE = 128

#: Trailer of BUMPWGT5: magic, u64 size of the JSON, SHA-256 of the JSON bytes.
FOOTER_MAGIC = b"BUMPV5MD"
FOOTER_SIZE = 8 + 8 + 32


def align_up_elems(n: int, elem_bytes: int = 4) -> int:
    """Round ``n`` elements up so that ``n * elem_bytes`` is a multiple of ROW_ALIGN_BYTES."""
    per_row = ROW_ALIGN_BYTES // elem_bytes
    return -(-n // per_row) * per_row
