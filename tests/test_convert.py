"""convert -> verify round trips, determinism, dry-run, atomicity, and the source forms."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from bumpconv.blob.reader import open_blob
from bumpconv.conversion.source import open_source
from bumpconv.files.checkpoint import load_spec

MODELS = ["llama-tied", "llama-untied", "llama-gqa-pad", "llama3-scaled", "mistral", "qwen2", "qwen3"]
V3_OK = {"llama-tied", "llama-gqa-pad", "qwen2"}  # tied, no q/k norm, head_dim == hidden/heads


def header_checksum(path: Path) -> str:
    with open_blob(path) as bf:
        return bf.checksum.hex()


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("fmt", ["bumpwgt5", "bumpwgt3"])
def test_convert_then_verify_round_trip(name: str, fmt: str, tiny, cli, tmp_path: Path) -> None:
    src = tiny(name)
    out = tmp_path / f"{name}.bump"
    r = cli("convert", src, out, "--profile", fmt, "--quiet")
    if fmt == "bumpwgt3" and name not in V3_OK:
        assert r.code == 1 and "bumpwgt3:" in r.err and not out.exists()
        return
    assert r.code == 0, r.err
    v = cli("verify", out, "--against", src)
    assert v.code == 0, v.err
    assert "bit-identical" in v.out
    i = cli("inspect", out, "--check", "--json", *(["--config", src / "config.json"] if fmt == "bumpwgt3" else []))
    assert i.code == 0, i.err
    info = json.loads(i.out)
    assert info["checksum_status"] == "ok" and info["profile"] == fmt
    assert info["totals"]["parameters"] == sum(
        int(np.prod(t.shape)) for t in open_source(str(src)).tensors.values())


def test_metadata_carries_engine_keys_real_eps_rope_and_a_full_manifest(tiny, cli, tmp_path: Path) -> None:
    src = tiny("llama3-scaled")
    out = tmp_path / "m.bump"
    assert cli("convert", "--profile", "bumpwgt5", src, out, "--quiet").code == 0
    with open_blob(out) as bf:
        meta = bf.metadata
        assert meta is not None
        spec = load_spec(src / "config.json")
        c = meta.config
        assert (c.rms_eps, c.rope_theta) == (spec.rms_norm_eps, spec.rope.theta)
        assert c.rope_scaling == {"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
        assert meta.format == "BUMPWGT5" and meta.created_at is None
        entries = meta.bumpconv.tensors
        assert [e.name for e in entries] == [t.name for t in bf.tensors]
        assert entries[-1].name == "lm_head_weight" and entries[-1].sources == ["lm_head.weight"]
        data = out.read_bytes()
        for e in entries:
            assert f"{zlib.crc32(data[e.offset:e.offset + e.bytes]):08x}" == e.crc32
        files = {f["name"]: f for f in meta.bumpconv.source["files"]}
        st = src / "model.safetensors"
        assert files["model.safetensors"]["sha256"] == hashlib.sha256(st.read_bytes()).hexdigest()
        assert str(src).encode() not in data and str(tmp_path).encode() not in data  # no paths
        assert bf.dtype_codes == bytes(len(bf.tensors))  # one FP32 (0) entry per payload tensor


def test_output_is_deterministic_and_only_source_date_epoch_adds_a_time(
        tiny, cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tiny("qwen2")
    a, b, c = tmp_path / "a.bump", tmp_path / "b.bump", tmp_path / "c.bump"
    assert cli("convert", "--profile", "bumpwgt5", src, a, "--quiet").code == 0
    assert cli("convert", "--profile", "bumpwgt5", src, b, "--quiet").code == 0
    assert a.read_bytes() == b.read_bytes()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert cli("convert", "--profile", "bumpwgt5", src, c, "--quiet").code == 0
    with open_blob(c) as bf:
        assert bf.metadata is not None and bf.metadata.created_at == "2023-11-14T22:13:20Z"
        assert bf.checksum.hex() == header_checksum(a)


def test_bf16_sharded_and_v4_config_sources(tiny, cli, tmp_path: Path) -> None:
    fp32 = tiny("llama-untied")
    sharded = tiny("llama-untied", shard_bytes=200_000)
    v4 = tiny("llama-untied", config_layout="v4")
    bf16 = tiny("llama-untied", dtype="bfloat16")
    fp16 = tiny("llama-untied", dtype="float16")
    assert len(list(sharded.glob("*.safetensors"))) > 1
    assert "rope_theta" in json.loads((v4 / "config.json").read_text())
    outs = {}
    for tag, src in [("fp32", fp32), ("sharded", sharded), ("v4", v4), ("bf16", bf16), ("fp16", fp16)]:
        outs[tag] = tmp_path / f"{tag}.bump"
        assert cli("convert", "--profile", "bumpwgt5", src, outs[tag], "--quiet").code == 0
        assert cli("verify", outs[tag], "--against", src).code == 0
    # same weights -> same payload, whatever the file split or config layout
    assert header_checksum(outs["fp32"]) == header_checksum(outs["sharded"]) == header_checksum(outs["v4"])
    with open_blob(outs["bf16"]) as bf:
        emb = bf.array("token_emb")[:, :144]
        assert not np.any(emb.view(np.uint32) & 0xFFFF)  # exact bf16 values widened to fp32


def test_dry_run_reads_no_tensor_data_and_predicts_the_size(
        tiny, cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tiny("qwen3")
    out = tmp_path / "q.bump"

    def no_reads(*args: object, **kwargs: object) -> None:
        raise AssertionError("dry-run read tensor data")
    with monkeypatch.context() as m:
        m.setattr("bumpconv.conversion.safetensors_file.read_as_fp32", no_reads)
        m.setattr("bumpconv.conversion.source.read_as_fp32", no_reads)
        r = cli("convert", "--profile", "bumpwgt5", src, out, "--dry-run")
    assert r.code == 0 and not out.exists()
    assert "layer.1.q_norm" in r.out and "model.layers.1.self_attn.q_norm.weight" in r.out
    predicted = int(r.out.strip().splitlines()[-1].split()[1].replace(",", ""))
    assert cli("convert", "--profile", "bumpwgt5", src, out, "--quiet").code == 0
    assert out.stat().st_size == predicted


def test_context_override_is_recorded(tiny, cli, tmp_path: Path) -> None:
    out = tmp_path / "c.bump"
    assert cli("convert", "--profile", "bumpwgt5", tiny("llama-tied"), out, "--context", "77", "--quiet").code == 0
    with open_blob(out) as bf:
        assert bf.header["context_len"] == 77 and bf.header["aligned_context"] == 80
        assert bf.spec is not None and bf.spec.context_length == 77


def test_interrupt_leaves_nothing_behind(tiny, cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bumpconv.conversion.writer as writer
    real = writer.packed_chunks
    calls = {"n": 0}

    def interrupted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        yield from real(*args, **kwargs)
    monkeypatch.setattr(writer, "packed_chunks", interrupted)
    out = tmp_path / "out" / "i.bump"
    out.parent.mkdir()
    r = cli("convert", "--profile", "bumpwgt5", tiny("llama-tied"), out)
    assert r.code == 130 and "interrupted" in r.err
    assert list(out.parent.iterdir()) == []


def test_existing_output_is_kept_without_force_and_replaced_with_it(tiny, cli, tmp_path: Path) -> None:
    out = tmp_path / "x.bump"
    out.write_bytes(b"precious")
    r = cli("convert", "--profile", "bumpwgt5", tiny("llama-tied"), out)
    assert r.code == 1 and "already exists (use --force" in r.err and out.read_bytes() == b"precious"
    assert cli("convert", "--profile", "bumpwgt5", tiny("llama-tied"), out, "--force", "--quiet").code == 0
    assert out.read_bytes()[:8] == b"BUMPWGT5"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bump"]


def test_convert_path_imports_neither_torch_nor_transformers(tiny, tmp_path: Path) -> None:
    src = tiny("qwen2")
    code = ("import sys; from bumpconv.cli import main; "
            f"rc = main(['convert', {str(src)!r}, {str(tmp_path / 'o.bump')!r}, '--quiet']); "
            f"rc |= main(['verify', {str(tmp_path / 'o.bump')!r}, '--against', {str(src)!r}]); "
            f"rc |= main(['inspect', {str(tmp_path / 'o.bump')!r}, '--check']); "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
            "print(bad); sys.exit(rc or bool(bad))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_cached_repo_id_resolves_offline_with_commit_and_blob_hashes(
        tiny, cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A repo id already in the HF cache (blobs named by sha256, snapshot symlinks)."""
    src = tiny("llama-tied")
    cache = tmp_path / "hub"
    repo = cache / "models--acme--tiny-llama"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for f in ("config.json", "model.safetensors"):
        data = (src / f).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / digest).write_bytes(data)
        (snap / f).symlink_to(Path("../../blobs") / digest)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    out = tmp_path / "r.bump"
    r = cli("convert", "--profile", "bumpwgt5", "acme/tiny-llama", out, "--quiet")
    assert r.code == 0, r.err
    with open_blob(out) as bf:
        assert bf.metadata is not None
        s = bf.metadata.bumpconv.source
        assert (s["kind"], s["repo_id"], s["commit"]) == ("hf_cache", "acme/tiny-llama", commit)
        assert all(len(f["sha256"]) == 64 for f in s["files"])
    missing = cli("convert", "--profile", "bumpwgt5", "acme/not-here", tmp_path / "n.bump")
    assert missing.code == 1 and "not in the local Hugging Face cache" in missing.err


def test_progress_bar_is_off_when_not_a_terminal(tiny, cli, tmp_path: Path) -> None:
    r = cli("convert", "--profile", "bumpwgt5", tiny("llama-tied"), tmp_path / "p.bump")
    assert r.code == 0 and "\r" not in r.err and r.err.startswith("wrote ")
    assert os.path.getsize(tmp_path / "p.bump") > 0


@pytest.mark.parametrize("quiet", [False, True])
def test_progress_bar_in_bytes_on_a_terminal(quiet: bool, tiny, tmp_path: Path) -> None:
    import pty
    primary, secondary = pty.openpty()
    args = [sys.executable, "-m", "bumpconv.cli", "convert", "--profile", "bumpwgt5", str(tiny("llama-gqa-pad")),
            str(tmp_path / "t.bump")] + (["--quiet"] if quiet else [])
    proc = subprocess.run(args, stderr=secondary, stdout=subprocess.DEVNULL,
                          env={**os.environ, "COLUMNS": "", "LINES": ""})
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(primary, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(primary)
    text = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0
    if quiet:
        assert text == ""
    else:
        assert "t.bump:" in text and "B/s" in text and "%|" in text  # tqdm in bytes
