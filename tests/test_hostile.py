"""Hostile inputs and filesystem faults, one class at a time: no crash, no hang, no silent wrong
model, nothing destroyed. Every case checks the exit status, that the one-line message names the
right thing, and the filesystem afterwards (fast lane: numpy-built checkpoints, no torch).

docs/guarantees.md states the promise these tests hold the tool to.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from bumpconv.blob.reader import open_blob
from bumpconv.format.errors import BlobError
from bumpconv.run.runtime import BumpModel
from runtime_helpers import convert

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def src(synthetic: Callable[..., Path], tmp_path: Path) -> Path:
    """A private copy of a numpy-built checkpoint (untied, so it has an lm_head)."""
    dst = tmp_path / "src"
    shutil.copytree(synthetic("llama-untied"), dst)
    return dst


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An empty output directory: whatever a failed command leaves in it is a failure."""
    d = tmp_path / "out"
    d.mkdir()
    return d


def fails(r, needle: str, out_dir: Path | None = None) -> None:  # noqa: ANN001 - CliResult
    lines = r.err.strip().splitlines()
    assert r.code == 1, r
    assert lines and lines[-1].startswith("bumpconv: error: "), r.err
    assert needle in lines[-1], lines[-1]
    assert "Traceback" not in r.err
    if out_dir is not None:
        assert sorted(p.name for p in out_dir.iterdir()) == [], "something was left behind"


def bumpconv(*args: object, timeout: float = 60, stdin: bytes = b"") -> subprocess.CompletedProcess:
    """The CLI in its own process (for hangs, signals and undecodable arguments)."""
    argv = [sys.executable, "-m", "bumpconv.cli", *[a if isinstance(a, bytes) else str(a)
                                                    for a in args]]
    return subprocess.run(argv, capture_output=True, timeout=timeout, input=stdin, cwd=ROOT)


def edit_config(src: Path, **changes: object) -> None:
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(changes)
    (src / "config.json").write_text(json.dumps(cfg))


# -- data destroyed -------------------------------------------------------------------------

def test_output_that_is_an_input_is_never_overwritten(src: Path, cli) -> None:
    weights = src / "model.safetensors"
    before = weights.read_bytes()
    for target in (weights, src / "config.json"):
        fails(cli("convert", "--profile", "bumpwgt5", src, target, "--force"), "an input of this command")
    link = src / "link.bump"
    link.symlink_to(weights)
    fails(cli("convert", "--profile", "bumpwgt5", src, link, "--force"), "an input of this command")
    assert weights.read_bytes() == before


def test_concurrent_conversions_to_one_path_cannot_both_win(src: Path, out: Path) -> None:
    target = out / "m.bump"
    procs = [subprocess.Popen([sys.executable, "-m", "bumpconv.cli", "convert", "--profile", "bumpwgt5", str(src),
                               str(target), "--quiet"], stderr=subprocess.PIPE, cwd=ROOT)
             for _ in range(4)]
    results = [(p.wait(60), p.stderr.read().decode()) for p in procs]  # type: ignore[union-attr]
    assert sorted(code for code, _ in results) == [0, 1, 1, 1], results
    assert all("already exists" in err for code, err in results if code)
    assert sorted(p.name for p in out.iterdir()) == ["m.bump"]
    with open_blob(target) as bf:
        assert bf.metadata is not None and bf.metadata_sha256_ok


def test_force_never_replaces_a_device_fifo_or_directory(src: Path, cli, tmp_path: Path) -> None:
    fails(cli("convert", "--profile", "bumpwgt5", src, "/dev/null", "--force"), "not a regular file")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    fails(cli("convert", "--profile", "bumpwgt5", src, fifo, "--force"), "not a regular file")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    fails(cli("convert", "--profile", "bumpwgt5", src, tmp_path, "--force"), "is a directory")


def test_parity_dump_never_replaces_a_file_without_force(src: Path, cli, tmp_path: Path) -> None:
    dump = tmp_path / "d.npz"
    dump.write_bytes(b"keep")
    r = cli("parity", src, convert(src, tmp_path / "m.bump"), "--layer", "0", "--dump", dump)
    fails(r, "already exists")
    assert dump.read_bytes() == b"keep"


# -- hangs and runaway memory --------------------------------------------------------------

@pytest.mark.parametrize("which", ["model.safetensors", "config.json"])
def test_a_fifo_input_is_refused_not_waited_on(which: str, src: Path, out: Path) -> None:
    (src / which).unlink()
    os.mkfifo(src / which)
    r = bumpconv("convert", "--profile", "bumpwgt5", src, out / "m.bump", timeout=30)
    assert r.returncode == 1 and b"FIFO" in r.stderr, r.stderr
    assert not list(out.iterdir())


def test_a_fifo_blob_or_config_is_refused(synthetic, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    v3 = convert(synthetic("llama-tied"), tmp_path / "v3.bump", "bumpwgt3")  # needs its config
    for args in (("inspect", fifo), ("run", fifo, "--prompt", "x"),
                 ("inspect", v3, "--config", fifo), ("run", v3, "--prompt", "x", "--config", fifo)):
        r = bumpconv(*args, timeout=30)
        assert r.returncode == 1 and b"FIFO" in r.stderr, (args, r.stderr)


def _set_header(path: Path, **values: int) -> None:
    """Overwrite header fields of a valid blob."""
    with open_blob(path) as bf:
        fields = {f.name: f for f in bf.variant.fields}
    data = bytearray(path.read_bytes())
    for name, value in values.items():
        f = fields[name]
        struct.pack_into("<I" if f.type == "u32" else "<Q", data, f.offset, value)
    path.write_bytes(bytes(data))


def test_huge_layer_or_head_counts_in_a_blob_fail_fast(src: Path, cli, tmp_path: Path,
                                                       synthetic) -> None:
    v5 = convert(src, tmp_path / "m.bump")
    _set_header(v5, num_layers=2**32 - 1)
    start = time.perf_counter()
    fails(cli("inspect", v5), "num_layers=4294967295")
    v3 = convert(synthetic("llama-tied"), tmp_path / "v3.bump", "bumpwgt3")
    _set_header(v3, num_heads=2**30, head_dim=0)
    fails(cli("inspect", v3), "num_heads")
    assert time.perf_counter() - start < 10


def test_huge_layer_count_in_a_config_fails_fast(src: Path, cli, out: Path) -> None:
    edit_config(src, num_hidden_layers=1_000_000_000)
    start = time.perf_counter()
    fails(cli("convert", "--profile", "bumpwgt5", src, out / "m.bump"), "num_hidden_layers=1000000000 needs", out)
    assert time.perf_counter() - start < 10


# -- a different model, silently -----------------------------------------------------------

@pytest.mark.parametrize("changes,needle", [
    ({"rms_norm_eps": True}, "'rms_norm_eps' must be a finite positive number"),
    ({"rms_norm_eps": "1e-5"}, "'rms_norm_eps' must be a finite positive number"),
    ({"tie_word_embeddings": "yes"}, "'tie_word_embeddings' must be true or false"),
    ({"num_attention_heads": 4.0}, "'num_attention_heads' must be an integer"),
    ({"rope_parameters": {"rope_type": "linear", "factor": 0, "rope_theta": 1e4}},
     "'factor' must be a finite positive number"),
    ({"rope_parameters": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
                          "high_freq_factor": 1.0, "original_max_position_embeddings": 16,
                          "rope_theta": 5e5}}, "low_freq_factor < high_freq_factor"),
    ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "'rope_scaling'"),
    ({"rope_theta": 123.0}, "disagree"),
])
def test_config_values_transformers_would_refuse_are_refused(changes: dict, needle: str,
                                                             src: Path, cli, out: Path) -> None:
    edit_config(src, **changes)
    fails(cli("convert", "--profile", "bumpwgt5", src, out / "m.bump"), needle, out)


def test_non_json_numbers_in_a_config_are_refused(src: Path, cli, out: Path) -> None:
    text = (src / "config.json").read_text()
    cfg = json.loads(text)
    theta = cfg["rope_parameters"]["rope_theta"]
    (src / "config.json").write_text(text.replace(json.dumps(theta), "Infinity"))
    fails(cli("convert", "--profile", "bumpwgt5", src, out / "m.bump"), "Infinity is not a JSON value", out)


def test_non_finite_weights_are_refused_naming_tensor_and_element(src: Path, cli,
                                                                  out: Path) -> None:
    tensors = load_file(src / "model.safetensors")
    tensors["model.layers.1.mlp.down_proj.weight"][3, 7] = np.nan
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    fails(cli("convert", "--profile", "bumpwgt5", src, out / "m.bump"),
          "tensor 'model.layers.1.mlp.down_proj.weight' holds nan at [3, 7]", out)
    assert cli("convert", "--profile", "bumpwgt5", src, out / "m.bump", "--allow-nonfinite", "--quiet").code == 0


def test_metadata_that_fails_its_hash_is_refused_by_run(src: Path, tmp_path: Path) -> None:
    blob = convert(src, tmp_path / "m.bump")
    data = bytearray(blob.read_bytes())
    at = data.index(b'"rms_eps":') + len(b'"rms_eps":')
    data[at] = ord("2") if data[at] != ord("2") else ord("3")
    blob.write_bytes(bytes(data))
    r = bumpconv("run", blob, "--prompt", "x")
    assert r.returncode == 1 and b"footer hash" in r.stderr, r.stderr


def test_safetensors_metadata_must_map_strings_to_strings(src: Path, cli, out: Path) -> None:
    raw = (src / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header["__metadata__"] = []
    text = json.dumps(header, separators=(",", ":")).encode()
    (src / "model.safetensors").write_bytes(raw[:8] + text.ljust(n) + raw[8 + n:])
    fails(cli("convert", "--profile", "bumpwgt5", src, out / "m.bump"), "__metadata__ must map strings to strings", out)


# -- tracebacks as the interface -----------------------------------------------------------

def _json_bombs() -> dict[str, str]:
    return {"nested": "[" * 100_000 + "]" * 100_000, "long int": "1" * 5000,
            "not utf-8": "\udcff"}


def _write_json_text(path: Path, text: str) -> None:
    path.write_bytes(text.encode("utf-8", "surrogateescape"))


@pytest.mark.parametrize("bomb", sorted(_json_bombs()))
@pytest.mark.parametrize("where", ["config.json", "index", "safetensors header",
                                   "generation_config.json"])
def test_malicious_json_anywhere_is_one_clear_error(bomb: str, where: str, src: Path, cli,
                                                    out: Path, tmp_path: Path) -> None:
    value = _json_bombs()[bomb]
    if where == "config.json":
        cfg = (src / "config.json").read_text()
        _write_json_text(src / "config.json", cfg.replace('"vocab_size": 517',
                                                          f'"vocab_size": {value}'))
        fails(cli("convert", "--profile", "bumpwgt5", src, out / "m.bump"), "config.json", out)
    elif where == "index":
        _write_json_text(src / "model.safetensors.index.json", '{"weight_map": ' + value + "}")
        fails(cli("convert", "--profile", "bumpwgt5", src, out / "m.bump"), "model.safetensors.index.json", out)
    elif where == "safetensors header":
        body = ('{"x": ' + value + "}").encode("utf-8", "surrogateescape")
        (src / "model.safetensors").write_bytes(struct.pack("<Q", len(body)) + body)
        fails(cli("convert", "--profile", "bumpwgt5", src, out / "m.bump"), "model.safetensors", out)
    else:  # read by `run` for the stop tokens
        blob = convert(src, tmp_path / "m.bump")
        tok = tmp_path / "tok"
        tok.mkdir()
        _write_tokenizer(tok)
        _write_json_text(tok / "generation_config.json", '{"eos_token_id": ' + value + "}")
        fails(cli("run", blob, "--prompt", "a b", "--tokenizer", tok, "-n", "2"),
              "generation_config.json")


def _write_tokenizer(directory: Path) -> None:
    """A word-level tokenizer whose ids fit the synthetic models' vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {w: i for i, w in enumerate(["[UNK]", "a", "b", "c", "the", "cat"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(directory / "tokenizer.json"))


def test_metadata_naming_an_unknown_model_is_a_blob_error(src: Path, tmp_path: Path) -> None:
    from bumpconv.format.codec import pack_footer
    blob = convert(src, tmp_path / "m.bump")
    with open_blob(blob) as bf:
        start = bf.payload_end
    data = blob.read_bytes()
    meta = json.loads(data[start:-48])
    meta["config"]["model"] = "gpt2"
    text = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    blob.write_bytes(data[:start] + text + pack_footer(text))
    with pytest.raises(BlobError, match="not a model bumpconv runs"):
        open_blob(blob)


@pytest.mark.parametrize("context", ["4294967296", "0", "-5"])
def test_a_context_the_header_cannot_carry_is_refused(context: str, src: Path, cli,
                                                      out: Path) -> None:
    fails(cli("convert", "--profile", "bumpwgt5", src, out / "m.bump", "--context", context), "--context", out)


def test_undecodable_prompt_and_paths_are_errors(src: Path, tmp_path: Path) -> None:
    blob = convert(src, tmp_path / "m.bump")
    plain = tmp_path / "tok"
    plain.mkdir()
    _write_tokenizer(plain)
    tok = tmp_path / b"tok-\xff".decode("utf-8", "surrogateescape")
    plain.rename(tok)
    r = bumpconv("run", blob, "--prompt", b"a \xff b", "--tokenizer", os.fsencode(tok), "-n", "2")
    assert r.returncode == 1 and b"--prompt is not valid UTF-8" in r.stderr, r.stderr
    r = bumpconv("run", blob, "--prompt", "a b", "--tokenizer", os.fsencode(tok), "-n", "2")
    assert r.returncode == 0, r.stderr  # a valid tokenizer in an undecodable directory works


def test_a_non_string_shard_name_is_named(src: Path, cli, out: Path) -> None:
    (src / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"model.norm.weight": 7}}))
    fails(cli("convert", "--profile", "bumpwgt5", src, out / "m.bump"), "mapped to a bad shard name 7", out)


# -- left behind, and what it costs ---------------------------------------------------------

def test_sigkill_during_convert_leaves_nothing(synthetic, out: Path) -> None:
    big = synthetic("llama-untied")
    for delay in (0.05, 0.15, 0.3):
        p = subprocess.Popen([sys.executable, "-m", "bumpconv.cli", "convert", "--profile", "bumpwgt5", str(big),
                              str(out / "m.bump"), "--quiet", "--force"], cwd=ROOT)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait(30)
        left = sorted(p.name for p in out.iterdir())
        assert left in ([], ["m.bump"]), left  # nothing, or the finished file
        if left:
            with open_blob(out / "m.bump") as bf:
                assert bf.metadata_sha256_ok
            (out / "m.bump").unlink()


def test_stale_partials_of_dead_processes_are_removed_and_named(src: Path, cli, out: Path,
                                                                monkeypatch) -> None:
    monkeypatch.delattr(os, "O_TMPFILE")  # a filesystem without unnamed temporary files
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = out / f".m.bump.{dead}.abcd1234.partial"
    stale.write_bytes(b"x" * 100)
    r = cli("convert", "--profile", "bumpwgt5", src, out / "m.bump", "--quiet")
    assert r.code == 0, r
    assert f"bumpconv: warning: removed {stale}" in r.err
    assert sorted(p.name for p in out.iterdir()) == ["m.bump"]


def test_free_space_is_checked_before_writing(synthetic, cli, out: Path) -> None:
    r = cli("convert", synthetic("llama-tied"), out / "m.bump", "--profile", "bumpwgt3",
            "--context", "1000000000")
    fails(r, "free", out)


# -- misleading errors ----------------------------------------------------------------------

def test_an_unknown_dtype_code_is_named(src: Path, cli, tmp_path: Path) -> None:
    blob = convert(src, tmp_path / "m.bump")
    with open_blob(blob) as bf:
        at = bf.table_offset + 4 + 3
    data = bytearray(blob.read_bytes())
    data[at] = 99
    blob.write_bytes(bytes(data))
    fails(cli("inspect", blob), "dtype table entry 3 has the unknown code 99")


def test_a_duplicated_header_key_is_named(src: Path, cli, out: Path) -> None:
    raw = (src / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    text = raw[8:8 + n].decode()
    first = text[1:text.index("},") + 2]  # the first tensor entry, repeated
    dup = ("{" + first + text[1:]).encode()
    (src / "model.safetensors").write_bytes(struct.pack("<Q", len(dup)) + dup + raw[8 + n:])
    fails(cli("convert", "--profile", "bumpwgt5", src, out / "m.bump"), "duplicate key", out)


def test_a_blob_swapped_during_open_runs_what_was_checked(src: Path, tmp_path: Path) -> None:
    """The runtime maps the descriptor the reader validated, not the path a second time."""
    blob = convert(src, tmp_path / "m.bump")
    other = tmp_path / "other.bump"
    other.write_bytes(b"BUMPWGT9" + b"\0" * 200)
    with open_blob(blob) as bf:
        os.replace(other, blob)
        with BumpModel.from_blob(bf) as m:
            assert m.forward([1, 2]).shape[0] == 2


def test_sigterm_during_convert_cleans_up(synthetic, out: Path) -> None:
    p = subprocess.Popen([sys.executable, "-m", "bumpconv.cli", "convert",
                          str(synthetic("llama-untied")), str(out / "m.bump"), "--quiet"],
                         stderr=subprocess.PIPE, cwd=ROOT)
    timer = threading.Timer(0.1, p.send_signal, (signal.SIGTERM,))
    timer.start()
    code = p.wait(30)
    timer.cancel()
    assert code in (0, 130, -signal.SIGTERM)  # -15: terminated before the handler was set
    assert sorted(x.name for x in out.iterdir()) in ([], ["m.bump"])
