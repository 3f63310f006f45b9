"""The byte codec of a bump blob: header, dtype table and footer, packed and unpacked in one
place for the writer, the reader and ``inspect``.

Field positions come from the profile's :class:`~bumpconv.format.profile.HeaderVariant`; this
module only turns them into bytes and back. Unpacking reports what is wrong as
:class:`CodecError` messages without a file name; callers add it.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from .constants import FOOTER_MAGIC, FOOTER_SIZE
from .profile import HeaderVariant

#: struct formats of the integer field types.
_INT_FORMATS = {"version": "<I", "u32": "<I", "u64": "<Q"}


class CodecError(ValueError):
    """Bytes that do not decode; the message names the field, the caller names the file."""


@dataclass(frozen=True)
class Header:
    """A decoded header: every integer field by name, and the checksum bytes."""

    values: dict[str, int]
    checksum: bytes


def pack_header(variant: HeaderVariant, magic: str, version: int, values: dict[str, int],
                checksum: bytes) -> bytes:
    """The header of ``variant`` up to its dtype table: magic, version, the integer fields in
    ``values`` (fields not given stay zero), the checksum."""
    out = bytearray(variant.dtype_table_offset)
    for f in variant.fields:
        if f.type == "magic":
            out[f.offset:f.offset + 8] = magic.encode("ascii")
        elif f.type == "version":
            struct.pack_into("<I", out, f.offset, version)
        elif f.type in _INT_FORMATS and f.name in values:
            struct.pack_into(_INT_FORMATS[f.type], out, f.offset, values[f.name])
        elif f.type == "sha256":
            out[f.offset:f.offset + 32] = checksum
    return bytes(out)


def unpack_header(variant: HeaderVariant, raw: bytes) -> Header:
    """Decode ``raw`` (at least ``variant.dtype_table_offset`` bytes): integer fields, the
    checksum; reserved bytes must be zero and constant fields must hold their constant."""
    values: dict[str, int] = {}
    checksum = b""
    for f in variant.fields:
        if f.type in _INT_FORMATS:
            values[f.name] = struct.unpack_from(_INT_FORMATS[f.type], raw, f.offset)[0]
        elif f.type == "sha256":
            checksum = raw[f.offset:f.offset + 32]
        elif f.type == "zeros" and any(raw[f.offset:f.offset + f.nbytes]):
            raise CodecError(f"header bytes 0x{f.offset:x}..0x{f.offset + f.nbytes:x} "
                             f"({f.name}) must be zero")
        if isinstance(f.value, int) and values[f.name] != f.value:
            raise CodecError(f"header field {f.name} is {values[f.name]} (expected {f.value})")
    return Header(values, checksum)


def pack_dtype_table(codes: list[int]) -> bytes:
    """u32 count, then one byte per payload tensor."""
    return len(codes).to_bytes(4, "little") + bytes(codes)


def dtype_table_length(raw: bytes, offset: int) -> int:
    """The u32 entry count at ``offset`` of ``raw``."""
    return struct.unpack_from("<I", raw, offset)[0]


def pack_footer(metadata_json: bytes) -> bytes:
    """The BUMPV5MD trailer of a metadata document: magic, u64 size, SHA-256 of the JSON."""
    return FOOTER_MAGIC + struct.pack("<Q", len(metadata_json)) + \
        hashlib.sha256(metadata_json).digest()


@dataclass(frozen=True)
class Footer:
    """A decoded trailer: the metadata size and the SHA-256 the JSON must have."""

    metadata_size: int
    metadata_sha256: bytes

    def metadata_start(self, file_size: int) -> int:
        """Where the JSON begins in a file of ``file_size`` bytes."""
        return file_size - FOOTER_SIZE - self.metadata_size


def unpack_footer(tail: bytes) -> Footer:
    """Decode the last FOOTER_SIZE bytes of a file."""
    if len(tail) < FOOTER_SIZE or tail[:8] != FOOTER_MAGIC:
        raise CodecError(f"missing {FOOTER_MAGIC.decode()} footer "
                         "(truncated or not a complete BUMPWGT5 file)")
    (size,) = struct.unpack_from("<Q", tail, 8)
    return Footer(size, bytes(tail[16:48]))
