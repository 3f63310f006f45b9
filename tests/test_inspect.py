"""inspect: bumpconv- and engine-written blobs, integrity checks, damaged files."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest

from bumpconv.format.constants import FOOTER_MAGIC
from bumpconv.format.metadata import canonical_json
from bumpconv.blob.reader import open_blob


@pytest.fixture(scope="module")
def blobs(tiny, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tied llama in both profiles, an untied qwen3 in bumpwgt5, written once per module."""
    from bumpconv.cli import main
    d = tmp_path_factory.mktemp("blobs")
    out = {"v5": d / "tied.bump", "v3": d / "tied.v3.bump", "qwen3": d / "qwen3.bump"}
    assert main(["convert", "--profile", "bumpwgt5", str(tiny("llama-gqa-pad")), str(out["v5"]), "--quiet"]) == 0
    assert main(["convert", "--profile", "bumpwgt5", str(tiny("llama-gqa-pad")), str(out["v3"]), "--quiet",
                 "--profile", "bumpwgt3", "--context", "40"]) == 0
    assert main(["convert", "--profile", "bumpwgt5", str(tiny("qwen3")), str(out["qwen3"]), "--quiet"]) == 0
    return out


def engine_v4_hf(v5: Path, dst: Path) -> Path:
    """What the engine's v4 HF writers produce: the same header and payload, no metadata."""
    with open_blob(v5) as bf:
        end = bf.payload_end
    data = bytearray(v5.read_bytes()[:end])
    data[0:8] = b"BUMPWGT4"
    struct.pack_into("<I", data, 8, 4)
    dst.write_bytes(bytes(data))
    return dst


def engine_v4_gguf(v5: Path, dst: Path) -> Path:
    """The engine's GGUF-writer variant: num_merges/total_vocab_bytes at 0x50, checksum at
    0x58, dtype table at 0x98, vocab data after the payload."""
    with open_blob(v5) as bf:
        end = bf.payload_end
    raw = v5.read_bytes()
    body = raw[0x80:end]
    header = bytearray(raw[:0x50]) + bytearray(0x98 - 0x50)
    header[0:8] = b"BUMPWGT4"
    struct.pack_into("<I", header, 8, 4)
    struct.pack_into("<II", header, 0x50, 1234, 5678)
    header[0x58:0x78] = hashlib.sha256(body).digest()
    dst.write_bytes(bytes(header) + body + b"vocab-bytes" * 10)
    return dst


def engine_v5(v5: Path, dst: Path) -> Path:
    """An engine-written BUMPWGT5: its own JSON keys (no bumpconv section), the same footer."""
    with open_blob(v5) as bf:
        end = bf.payload_end
        assert bf.metadata is not None
        cfg = bf.metadata.config
    meta = canonical_json({"schema_version": 1, "format": "BUMPWGT5", "created_by": "engine",
                           "created_at": "2025-01-01T00:00:00Z", "template": "llama",
                           "config": {"model": "llama", "num_layers": cfg.num_layers,
                                      "embed_dim": cfg.embed_dim, "num_heads": cfg.num_heads,
                                      "num_kv_heads": cfg.num_kv_heads, "head_dim": cfg.head_dim,
                                      "intermediate_size": cfg.intermediate_size,
                                      "context_length": cfg.context_length,
                                      "rope_theta": cfg.rope_theta, "vocab_size": cfg.vocab_size,
                                      "rms_eps": 1e-5}, "quant_summary": {}})
    footer = FOOTER_MAGIC + struct.pack("<Q", len(meta)) + hashlib.sha256(meta).digest()
    dst.write_bytes(v5.read_bytes()[:end] + meta + footer)
    return dst


def test_bumpconv_blob_description(blobs, cli) -> None:
    r = cli("inspect", blobs["v5"])
    assert r.code == 0
    assert "BUMPWGT5 version 5, profile bumpwgt5, header variant hf" in r.out
    assert "layer.1.w2" in r.out and "not checked (use --check)" in r.out
    j = json.loads(cli("inspect", blobs["qwen3"], "--json").out)
    roles = [t["role"] for t in j["tensors"]]
    assert roles[:6] == ["token_emb", "ln1", "q_norm", "k_norm", "wq", "wk"] and roles[-1] == "lm_head"
    assert j["model"]["qk_norm"] is True and j["totals"]["padding_bytes"] > 0


@pytest.mark.parametrize("make, variant, magic", [
    (engine_v4_hf, "hf", "BUMPWGT4"), (engine_v4_gguf, "gguf", "BUMPWGT4"), (engine_v5, "hf", "BUMPWGT5")])
def test_engine_written_files_are_identified(make, variant: str, magic: str, blobs, cli,
                                             tmp_path: Path) -> None:
    path = make(blobs["v5"], tmp_path / "engine.bump")
    r = cli("inspect", path, "--check", "--json")
    assert r.code == 0, r.err + r.out
    j = json.loads(r.out)
    assert (j["magic"], j["header_variant"]) == (magic, variant)
    assert j["written_by"].startswith("engine" if magic == "BUMPWGT5" else "not recorded")
    assert [t["name"] for t in j["tensors"]] == [t["name"] for t in json.loads(
        cli("inspect", blobs["v5"], "--json").out)["tensors"]]
    assert j["checksum_status"] == "ok"


def test_bumpwgt3_without_and_with_config(blobs, tiny, cli) -> None:
    r = cli("inspect", blobs["v3"], "--check", "--json")
    j = json.loads(r.out)
    assert r.code == 0 and j["profile"] == "bumpwgt3" and j["model"] is None
    assert "inferred from sizes: KV=1, AI=208" in j["notes"]
    assert len(j["tensors"]) == 14 * 2 + 4 and j["header"]["context_len"] == 40
    withcfg = json.loads(cli("inspect", blobs["v3"], "--json", "--config",
                             tiny("llama-gqa-pad") / "config.json").out)
    assert withcfg["model"]["num_kv_heads"] == 1 and withcfg["model"]["context_length"] == 40


def test_bumpwgt3_offsets_and_sizes_match_the_formulas(blobs) -> None:
    L, V, E, H, KV, T = 2, 517, 144, 2, 1, 40  # llama-gqa-pad: head_dim 72, intermediate 200
    AE, AD, AI = 144, 80, 208
    raw = blobs["v3"].read_bytes()
    assert raw[:8] == b"BUMPWGT3"
    fields = struct.unpack_from("<IIIIIIII", raw, 8)
    assert fields == (3, 1, L, V, E, T, H, E // H)
    assert struct.unpack_from("<QQQ", raw, 0x28) == (AE, AD, 48)
    assert raw[0x40:0x60] == hashlib.sha256(raw[0x80:]).digest() and raw[0x60:0x80] == bytes(32)
    assert struct.unpack_from("<I", raw, 0x80)[0] == 14 * L + 4
    per_layer = (2 * AE + H * AD * AE + H * AD + 2 * (KV * AD * AE + KV * AD) + H * AE * AD + AE
                 + 2 * AI * AE + 2 * AI + AE * AI + AE)
    assert len(raw) == 0x84 + 14 * L + 4 + 4 * (V * AE + T * AE + L * per_layer + 2 * AE)
    pos = 0x84 + 14 * L + 4 + 4 * V * AE
    assert raw[pos:pos + 4 * T * AE] == bytes(4 * T * AE)  # pos_emb is all zeros
    with open_blob(blobs["v3"]) as bf:
        t = bf.by_name
        assert t["pos_emb"].offset == pos
        assert t["layer.0.ln1_gamma"].offset == pos + 4 * T * AE
        assert t["layer.1.ln1_gamma"].offset == t["layer.0.ln1_gamma"].offset + 4 * per_layer
        for zero in ("layer.0.bq", "layer.0.bo", "layer.1.b1", "final_bias"):
            assert not bf.array(zero).any()


def test_v3_keeps_real_qwen2_biases(tiny, cli, tmp_path: Path) -> None:
    out = tmp_path / "q.bump"
    assert cli("convert", tiny("qwen2"), out, "--profile", "bumpwgt3", "--quiet").code == 0
    with open_blob(out) as bf:
        assert bf.array("layer.0.bq").any() and not bf.array("layer.0.bo").any()


def flip(path: Path, offset: int, dst: Path) -> Path:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    dst.write_bytes(bytes(data))
    return dst


def test_verify_names_the_corrupted_tensor(blobs, cli, tmp_path: Path) -> None:
    with open_blob(blobs["v5"]) as bf:
        target = bf.by_name["layer.1.wo"]
    bad = flip(blobs["v5"], target.offset + 100, tmp_path / "bad.bump")
    r = cli("inspect", bad, "--check")
    assert r.code == 1
    assert "FAIL header checksum" in r.out and "first 'layer.1.wo'" in r.out


def test_nonzero_padding_is_reported(blobs, cli, tmp_path: Path) -> None:
    with open_blob(blobs["v3"]) as bf:
        pos = bf.by_name["pos_emb"].offset
    bad = flip(blobs["v3"], pos + 3, tmp_path / "pad.bump")
    r = cli("inspect", bad, "--check")
    assert r.code == 1 and "tensor 'pos_emb' has a non-zero value" in r.out


def damaged(blob: Path, tmp: Path) -> list[tuple[str, Path]]:
    raw = blob.read_bytes()
    with open_blob(blob) as bf:
        end = bf.payload_end
    cases = [(f"truncated-{n}", raw[:n]) for n in (0, 7, 100, 0x84, 0x90, end // 2, end - 1, end + 5,
                                                   len(raw) - 49, len(raw) - 1)]
    cases += [("magic", b"BUMPWGT9" + raw[8:]),
              ("version", raw[:8] + struct.pack("<I", 9) + raw[12:]),
              ("layers", raw[:0x10] + struct.pack("<I", 3) + raw[0x14:]),
              ("model-type", raw[:0x0C] + struct.pack("<I", 7) + raw[0x10:]),
              ("reserved", raw[:0x70] + b"\x01" + raw[0x71:]),
              ("embed", raw[:0x18] + struct.pack("<I", 1 << 30) + raw[0x1C:]),
              ("aligned", raw[:0x30] + struct.pack("<Q", 150) + raw[0x38:]),
              ("kv", raw[:0x28] + struct.pack("<I", 0) + raw[0x2C:]),
              ("table-len", raw[:0x80] + struct.pack("<I", 0xFFFFFFF) + raw[0x84:]),
              ("table-code", raw[:0x84] + b"\x63" + raw[0x85:]),
              ("json", raw[:end + 10] + b"\xff" + raw[end + 11:]),
              ("footer-size", raw[:-40] + struct.pack("<Q", 1 << 40) + raw[-32:])]
    out = []
    for name, data in cases:
        p = tmp / f"{name}.bump"
        p.write_bytes(data)
        out.append((name, p))
    return out


def test_damaged_blobs_give_one_line_errors(blobs, cli, tmp_path: Path) -> None:
    for name, path in damaged(blobs["v5"], tmp_path):
        r = cli("inspect", path, "--check")
        lines = r.err.strip().splitlines()
        assert r.code == 1, name
        if lines:  # structural damage: refused on open
            assert len(lines) == 1 and lines[0].startswith(f"bumpconv: error: {path}"), (name, r.err)
        else:  # opened, but integrity checks fail
            assert "FAIL" in r.out, name


def test_not_a_bump_file(cli, tmp_path: Path) -> None:
    p = tmp_path / "x.bump"
    p.write_bytes(b"\x1b[31mEVIL" + bytes(200))
    r = cli("inspect", p)
    assert r.code == 1 and "not a bump file" in r.err and "\x1b" not in r.err
    assert "not found" in cli("inspect", tmp_path / "missing.bump").err


def test_verify_against_the_wrong_model_is_a_clear_error(blobs, tiny, cli) -> None:
    r = cli("verify", blobs["v5"], "--against", tiny("qwen3"))
    assert r.code == 1 and r.err.count("\n") == 1


def test_verify_finds_a_changed_element(blobs, tiny, cli, tmp_path: Path) -> None:
    with open_blob(blobs["v5"]) as bf:
        t = bf.by_name["layer.0.wk"]
    data = bytearray(blobs["v5"].read_bytes())
    # element wk[0][3][5] = k_proj[3, 5]; AE = 144 floats per row
    off = t.offset + 4 * (3 * 144 + 5)
    data[off:off + 4] = struct.pack("<f", 12.5)
    bad = tmp_path / "changed.bump"
    bad.write_bytes(bytes(data))
    from bumpconv.conversion.source import open_source
    from bumpconv.blob.verify import verify_against
    from bumpconv.format.errors import VerifyError
    with open_source(str(tiny("llama-gqa-pad"))) as src, open_blob(bad) as bf2:
        with pytest.raises(VerifyError, match=r"'layer.0.wk' differs from source "
                                              r"'model.layers.0.self_attn.k_proj.weight' at \[3, 5\]: blob 12.5"):
            verify_against(bf2, src)
    r = cli("verify", bad, "--against", tiny("llama-gqa-pad"))
    assert r.code == 1 and "header checksum failed" in r.err  # checksums are checked first
