"""Damaged blobs and bad tensor tables: a clear BlobError, never a crash (these tests also run
against the ASan + UBSan build of the extension, `make -C native asan-test`).

Most damage is caught by the Python reader before C sees anything; the table tests hand C a
wrong table directly, to prove its own bound checks.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Iterator

import pytest

from bumpconv.format.errors import BlobError
from bumpconv.blob.reader import open_blob
from bumpconv.format.dtypes import DType
from bumpconv.format.profile import PlacedTensor
from bumpconv.format.spec import ModelSpec
from bumpconv.run.runtime import BumpModel
from runtime_helpers import convert

HEADER = 128


@pytest.fixture(scope="module")
def v5(synthetic: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """qwen3: metadata JSON and footer, q/k norms, untied lm_head."""
    return convert(synthetic("qwen3"), tmp_path_factory.mktemp("damage") / "qwen3.bump")


@pytest.fixture(scope="module")
def v3(synthetic: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """qwen2 as bumpwgt3: no metadata, biases, pos_emb."""
    return convert(synthetic("qwen2"), tmp_path_factory.mktemp("damage") / "qwen2.bump", "bumpwgt3")


def opens_and_runs(path: Path, check: bool = False, config: Path | None = None) -> bool:
    """True when the blob opens and a forward runs; False on BlobError. Anything else (another
    exception, or a crash of the process) fails the test."""
    try:
        with BumpModel.open(path, config=config, check=check) as m:
            m.forward([1, 2, 3])
    except BlobError:
        return False
    return True


def variants(data: bytes, out: Path, edits: Iterator[tuple[str, bytes]]
             ) -> Iterator[tuple[str, Path]]:
    """Each edited copy written to ``out`` in turn (one file, rewritten)."""
    for label, blob in edits:
        out.write_bytes(blob)
        yield label, out


def flipped(data: bytes, offsets: list[int]) -> Iterator[tuple[str, bytes]]:
    for off in offsets:
        d = bytearray(data)
        d[off] ^= 0xFF
        yield f"flip@{off}", bytes(d)


def cut_points(path: Path) -> list[int]:
    """Truncation lengths at every structural boundary of the file, and inside each part."""
    with open_blob(path) as bf:
        table = bf.table_offset + 4 + len(bf.dtype_codes)
        cuts = {0, 1, 7, 8, 12, 64, HEADER - 1, HEADER, HEADER + 3, HEADER + 4, table - 1, table,
                table + 1, bf.payload_end - 1, bf.payload_end, bf.payload_end + 1, bf.size - 49,
                bf.size - 48, bf.size - 47, bf.size - 40, bf.size - 9, bf.size - 1}
        for t in bf.tensors[:6] + bf.tensors[-3:]:
            cuts |= {t.offset + 1, t.offset + t.nbytes // 2, t.offset + t.nbytes - 1}
        return sorted(c for c in cuts if 0 <= c < bf.size)


@pytest.mark.parametrize("which", ["v5", "v3"])
def test_every_truncation_is_refused(which: str, v5: Path, v3: Path, synthetic,
                                     tmp_path: Path) -> None:
    path = {"v5": v5, "v3": v3}[which]
    config = synthetic("qwen2") / "config.json" if which == "v3" else None
    data = path.read_bytes()
    cuts = cut_points(path)
    assert len(cuts) > 30
    for label, p in variants(data, tmp_path / "cut.bump",
                             ((f"cut@{n}", data[:n]) for n in cuts)):
        assert not opens_and_runs(p, config=config), label


def test_header_flips_are_refused_or_harmless(v5: Path, tmp_path: Path) -> None:
    data = v5.read_bytes()
    with open_blob(v5) as bf:
        checksum_at = next(f.offset for f in bf.variant.fields if f.type == "sha256")
    outcomes = {}
    for label, p in variants(data, tmp_path / "hdr.bump", flipped(data, list(range(HEADER)))):
        outcomes[label] = opens_and_runs(p)
        if checksum_at <= int(label.split("@")[1]) < checksum_at + 32:
            assert not opens_and_runs(p, check=True), label
    # magic, version and every dimension are structural: flipping them must be refused
    for off in list(range(12)) + list(range(16, checksum_at)):
        assert not outcomes[f"flip@{off}"], off


def test_dtype_table_flips_are_refused(v5: Path, v3: Path, synthetic, tmp_path: Path) -> None:
    for path, config in ((v5, None), (v3, synthetic("qwen2") / "config.json")):
        data = path.read_bytes()
        with open_blob(path, config=config) as bf:
            start, count = bf.table_offset, len(bf.dtype_codes)
        offsets = list(range(start, start + 4 + count))
        for label, p in variants(data, tmp_path / "table.bump", flipped(data, offsets)):
            assert not opens_and_runs(p, config=config), f"{path.name} {label}"


def test_metadata_and_footer_flips_never_pass_verify(v5: Path, tmp_path: Path) -> None:
    data = v5.read_bytes()
    with open_blob(v5) as bf:
        json_start = bf.payload_end
    step = max(1, (len(data) - 48 - json_start) // 60)
    json_offsets = list(range(json_start, len(data) - 48, step))
    offsets = json_offsets + list(range(len(data) - 48, len(data)))
    for label, p in variants(data, tmp_path / "meta.bump", flipped(data, offsets)):
        opens_and_runs(p)  # either outcome is fine without verify; a crash is not
        assert not opens_and_runs(p, check=True), label


def test_payload_flips_open_and_run_but_fail_verify(v5: Path, tmp_path: Path) -> None:
    data = v5.read_bytes()
    with open_blob(v5) as bf:
        offsets = [t.offset + t.nbytes // 3 for t in bf.tensors[::5]]
    for label, p in variants(data, tmp_path / "payload.bump", flipped(data, offsets)):
        assert opens_and_runs(p), label
        assert not opens_and_runs(p, check=True), label


@pytest.mark.parametrize("make", [
    lambda d: d + b"\0" * 64,                  # trailing bytes
    lambda d: b"BUMPWGT9" + d[8:],             # wrong magic
    lambda d: b"",                             # empty
    lambda d: d[:HEADER] + d[HEADER + 64:],    # bytes missing in the middle
])
def test_malformed_files_are_refused(make: Callable[[bytes], bytes], v5: Path,
                                     tmp_path: Path) -> None:
    p = tmp_path / "bad.bump"
    p.write_bytes(make(v5.read_bytes()))
    assert not opens_and_runs(p)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert not opens_and_runs(tmp_path / "absent.bump")
    assert not opens_and_runs(tmp_path)


# -- a wrong table handed straight to C --------------------------------------------------

def good_table(path: Path) -> tuple[list[PlacedTensor], ModelSpec]:
    with open_blob(path) as bf:
        assert bf.spec is not None
        return list(bf.tensors), bf.spec


def edit(table: list[PlacedTensor], name: str, index: int = 4, **changes: object
         ) -> list[PlacedTensor]:
    out = list(table)
    if name == "drop":
        del out[index]
    elif name == "duplicate":
        out.append(out[index])
    elif name == "slot":
        out[index] = dataclasses.replace(out[index], slot=dataclasses.replace(out[index].slot,
                                                                              **changes))
    else:
        out[index] = dataclasses.replace(out[index], **changes)
    return out


@pytest.mark.parametrize("name,changes,message", [
    ("offset", dict(offset=1 << 40), "past the end"),
    ("offset", dict(offset=(1 << 64) - 8), "past the end"),
    ("nbytes", dict(nbytes=8), "do not hold"),
    ("slot", dict(shape=(5, 48, 144)), "do not hold"),
    ("slot", dict(shape=(4, 48)), "rank"),
    ("slot", dict(box=(3, 40, 128), source_shape=(120, 128)), "logical shape"),
    ("slot", dict(layer=7), "layer 7 is out of range"),
    ("slot", dict(layer=None), "layer -1 is out of range"),
    ("drop", {}, "is missing"),
    ("duplicate", {}, "appears twice"),
])
def test_c_bound_checks_a_bad_table(name: str, changes: dict, message: str, v5: Path) -> None:
    table, spec = good_table(v5)
    assert table[4].slot.role == "wq"
    with pytest.raises(BlobError, match=message):
        BumpModel.from_table(v5, spec, edit(table, name, **changes))


def test_c_refuses_a_view_reaching_past_the_tensor(v5: Path) -> None:
    """A wq whose packed shape is one head too small: the bytes match the shape, but the
    view of H heads reaches past it."""
    table, spec = good_table(v5)
    wq = table[4]
    small = dataclasses.replace(wq.slot, shape=(wq.slot.shape[0] - 1, *wq.slot.shape[1:]))
    table[4] = dataclasses.replace(wq, slot=small, nbytes=4 * small.numel)
    with pytest.raises(BlobError, match="view reaches"):
        BumpModel.from_table(v5, spec, table)


def test_c_requires_optional_groups_whole(v5: Path) -> None:
    """qwen3 has q/k norms and an untied head: dropping one member of a group is refused,
    dropping the whole group is a model without it."""
    table, spec = good_table(v5)
    no_k_norm = [t for t in table if t.slot.role != "k_norm"]
    with pytest.raises(BlobError, match="k_norm .*missing"):
        BumpModel.from_table(v5, spec, no_k_norm)
    one_layer = [t for t in table if not (t.slot.role == "q_norm" and t.slot.layer == 1)]
    with pytest.raises(BlobError, match="q_norm \\(layer 1\\) is missing"):
        BumpModel.from_table(v5, spec, one_layer)
    no_head = [t for t in table if t.slot.role != "lm_head"]
    with BumpModel.from_table(v5, spec, no_head) as m:  # read as a tied model
        m.forward([1, 2, 3])


def test_c_checks_the_settings(v5: Path) -> None:
    table, spec = good_table(v5)
    cases = [({"num_kv_heads": 3}, "does not divide"), ({"hidden_size": 0}, "hidden=0"),
             ({"head_dim": 41}, "logical shape|odd"), ({"rms_norm_eps": 0.0}, "rms_eps"),
             ({"context_length": 1 << 30}, "context")]
    for update, message in cases:
        with pytest.raises(BlobError, match=message):
            BumpModel.from_table(v5, spec.model_copy(update=update), table)


def test_refused_roles_dtypes_and_values(v5: Path) -> None:
    """Python refuses what the C table cannot represent; C refuses a dtype its kernels do not
    read."""
    table, spec = good_table(v5)
    for name, changes, message in (("offset", dict(offset=-1), "does not fit"),
                                   ("dtype", dict(dtype=DType.BF16), "dtype 1 is not one"),
                                   ("slot", dict(role="pos_emb"), "not one the runtime reads")):
        with pytest.raises(BlobError, match=message):
            BumpModel.from_table(v5, spec, edit(table, name, **changes))
