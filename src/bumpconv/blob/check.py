"""The self-check of a blob: its checksums, per-tensor CRC32s and zero padding.

"Check" is the word for this self-consistency test, which needs nothing but the file
(``inspect --check``, ``BumpModel.open(check=True)``); "verify" is the content comparison
against the source checkpoint (``bumpconv verify --against SRC``, :mod:`.verify`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from ..format.digests import Crc32
from ..format.dtypes import DType
from ..format.errors import BlobError
from ..format.packing import first_nonzero_padding
from ..format.engine_directory import BLOB_NAME
from .reader import BumpFile
from .engine_traps import Trap, check_engine_directory
from .engine_files_check import sidecar_problems

_BLOCK = 8 << 20


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class CheckReport:
    path: Path
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def first_failure(self) -> Check | None:
        return next((c for c in self.checks if not c.ok), None)

    def raise_on_failure(self) -> None:
        bad = self.first_failure()
        if bad is not None:
            raise BlobError(f"{self.path}: {bad.name} failed: {bad.detail}")


def checksum_range(bf: BumpFile) -> tuple[int, int]:
    """The byte range the header checksum covers, per the profile."""
    end = bf.payload_end if bf.profile.checksum_covers == "payload_end" else bf.size
    return bf.table_offset, end


def check_blob(bf: BumpFile, padding: bool = True) -> CheckReport:
    """Recompute every checksum the file carries; optionally check that all padding is zero."""
    report = CheckReport(bf.path)
    start, end = checksum_range(bf)
    total = hashlib.sha256()
    per = {t.name: Crc32() for t in bf.tensors if t.crc32}
    spans = [(t.offset, t.offset + t.nbytes, per[t.name]) for t in bf.tensors if t.name in per]
    view = memoryview(bytearray(_BLOCK))
    pos, si = start, 0
    while pos < end:
        n = bf.read_into(view[:min(_BLOCK, end - pos)], pos)
        if not n:
            raise BlobError(f"{bf.path}: file shrank while being checked")
        chunk = view[:n]
        total.update(chunk)
        while si < len(spans) and spans[si][1] <= pos:
            si += 1
        j = si
        while j < len(spans) and spans[j][0] < pos + n:
            a, b, h = spans[j]
            h.update(chunk[max(a, pos) - pos:min(b, pos + n) - pos])
            j += 1
        pos += n
    digest = total.digest()
    report.checks.append(Check(
        "header checksum", digest == bf.checksum,
        f"SHA-256 of bytes [0x{start:x}, 0x{end:x}) is {digest.hex()[:16]}..., "
        f"header says {bf.checksum.hex()[:16]}..."))
    if bf.metadata_sha256_ok is not None:
        report.checks.append(Check("metadata hash", bf.metadata_sha256_ok,
                                   "SHA-256 of the metadata JSON vs the footer"))
    if bf.metadata is not None:
        recorded = bf.metadata.bumpconv.payload_sha256
        report.checks.append(Check("metadata payload_sha256", recorded == digest.hex(),
                                   f"metadata records {recorded[:16]}..."))
        bad = [t.name for t in bf.tensors if t.name in per and per[t.name].hexdigest() != t.crc32]
        report.checks.append(Check(
            "tensor CRC32s", not bad,
            f"{len(bad)} tensor(s) differ from the manifest, first {bad[0]!r}" if bad
            else f"{len(per)} tensors match the manifest"))
    if padding:
        report.checks.append(_padding_check(bf))
    sidecars = sidecar_problems(bf)
    if sidecars is not None:
        problems = sidecars.problems
        report.checks.append(Check("engine sidecars", not problems, problems[0] if problems
                                   else f"{', '.join(sidecars.found)} describe this blob"))
        if sidecars.names_blob:  # the engine would build this blob from them, right or wrong
            hf_order = bf.metadata is not None  # bumpconv writes Q/K rows in HF order
            report.checks += engine_checks(check_engine_directory(bf.path.parent, hf_order))
    bf.raise_if_changed()
    return report


def engine_checks(traps: list[Trap] | None) -> list[Check]:
    """One failed check per engine trap, or one passed check when there is none."""
    if traps is None:
        return []
    if not traps:
        return [Check("engine traps", True, "none of the engine's traps "
                                            "(schemas/engine.policy.json)")]
    return [Check(f"engine trap: {t.kind}", False, t.detail) for t in traps]


def _padding_check(bf: BumpFile) -> Check:
    checked = 0
    for t in bf.tensors:
        if t.dtype != DType.FP32:
            continue
        where = first_nonzero_padding(t.slot, bf.array(t.name))
        checked += 1
        if where is not None:
            return Check("zero padding", False, f"tensor {t.name!r} has a non-zero value at "
                                                f"padding index {list(where)}")
    return Check("zero padding", True, f"padding of {checked} fp32 tensors is zero")


def check_engine_only(path: Path) -> CheckReport | None:
    """The engine checks of a model directory whose blob bumpconv's reader does not read (one
    the engine's own converters wrote); None when ``path`` is not such a directory."""
    directory = path if path.is_dir() else path.parent
    if not path.is_dir() and path.name != BLOB_NAME:
        return None
    traps = check_engine_directory(directory)
    if traps is None:
        return None
    return CheckReport(directory, engine_checks(traps))
