"""A newcomer's first hour (issue 21): the rough edges of a first trial, one test each, on
numpy-built checkpoints (fast lane, no torch). The plain-pip-install check is
tests/test_fresh_install.py; the docs' examples are tests/test_docs.py."""

from __future__ import annotations

import os
import shutil
import struct
import time
from pathlib import Path
from typing import Callable

import pytest

import bumpconv
from bumpconv.blob.reader import open_blob
from bumpconv.commands import usable_cpus
from bumpconv.files.extras import install_command
from tools.fixtures import tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def _with_tokenizer(model: Path, cache_dir: Path, dst: Path) -> Path:
    """A numpy-built checkpoint with the tiny byte-level tokenizer (and chat template) beside it."""
    shutil.copytree(model, dst)
    for f in tiny_tokenizer("byte-level", cache_dir).iterdir():
        shutil.copy(f, dst / f.name)
    return dst


@pytest.fixture
def with_tokenizer(synthetic: Callable[..., Path], cache_dir: Path, tmp_path: Path) -> Path:
    # unpadded rows: the engine could run it, so no warning says otherwise
    return _with_tokenizer(synthetic("llama-quant"), cache_dir, tmp_path / "src")


def _one_line_error(r, needle: str) -> None:  # noqa: ANN001 - CliResult
    assert r.code == 1, r
    assert r.err.startswith("bumpconv: error: ") and r.err.count("\n") == 1, r.err
    assert needle in r.err, r.err


# -- 4: --threads, generate(-1) ------------------------------------------------------------------

def test_threads_above_the_cpus_are_capped_with_a_warning(with_tokenizer: Path, cli,
                                                          tmp_path: Path) -> None:
    blob = tmp_path / "out" / "m.bump"
    blob.parent.mkdir()
    bumpconv.convert(with_tokenizer, blob)
    cpus = usable_cpus()
    r = cli("run", blob, "--prompt", "the cat", "-n", "2", "--threads", cpus + 62)
    assert r.code == 0, r.err
    assert r.err.splitlines()[0] == (f"bumpconv: warning: --threads {cpus + 62}: this process "
                                     f"can use {cpus} CPU(s); running {cpus} threads (more "
                                     "threads than CPUs only wait for each other)")
    r = cli("run", blob, "--prompt", "the cat", "-n", "2", "--threads", cpus)
    assert r.code == 0 and "warning" not in r.err


# -- 2, 5: --quant spelling, --dry-run --------------------------------------------------------

def test_quant_accepts_llama_cpp_spelling(synthetic: Callable[..., Path], cli,
                                          tmp_path: Path) -> None:
    r = cli("convert", synthetic("llama-quant"), tmp_path / "m.bump", "--quant", "Q4_K_M",
            "--quiet")
    assert r.code == 0, r.err
    with open_blob(tmp_path / "m.bump") as bf:
        assert bf.metadata.bumpconv.quantization.policy == "q4_k_m"
    with pytest.raises(SystemExit) as exit_:  # not a policy (the README listed it): usage
        cli("convert", synthetic("llama-quant"), tmp_path / "n.bump", "--quant", "q4_1")
    assert exit_.value.code == 2


def test_dry_run_checks_the_output_path(synthetic: Callable[..., Path], cli,
                                        tmp_path: Path) -> None:
    src = synthetic("llama-untied")
    _one_line_error(cli("convert", src, tmp_path / "nowhere" / "m.bump", "--dry-run"),
                    "directory " + str(tmp_path / "nowhere") + " does not exist")
    (tmp_path / "m.bump").write_bytes(b"mine")
    _one_line_error(cli("convert", src, tmp_path / "m.bump", "--dry-run"), "already exists")
    assert cli("convert", src, tmp_path / "m.bump", "--dry-run", "--force").code == 0
    assert (tmp_path / "m.bump").read_bytes() == b"mine"  # a dry run writes nothing


def test_dry_run_names_the_tokenizer_and_every_fallback(synthetic: Callable[..., Path],
                                                        cache_dir: Path, cli,
                                                        tmp_path: Path) -> None:
    """Rows of 128 values (SmolLM2's are 576): q4_k_m's q4_K falls back to q5_0, and the tied
    output head gets q8_0 instead of q6_K, as llama.cpp's Q4_K_M does; rows of 200 fit no
    block but fp32 (intermediate 200, padded to 208)."""
    src = _with_tokenizer(synthetic("llama-tied"), cache_dir, tmp_path / "src")
    r = cli("convert", src, tmp_path / "m.bump", "--dry-run", "--quant", "q4_k_m")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    vocab = [line for line in lines if line.split()[1:2] == ["vocab_strings"]]
    assert vocab and vocab[0].rstrip().endswith("(the source's tokenizer)")
    fallbacks = [line for line in lines if line.startswith("fallback: ")]
    assert any("get q5_0 instead of q4_k: their packed rows of 128 values are not whole q4_k "
               "blocks of 256 (schemas/quant.policy.json" in line for line in fallbacks), fallbacks
    assert any("get q8_0 instead of q6_k: their packed rows of 128" in line
               for line in fallbacks), fallbacks
    assert any("get fp32 instead of q4_k: their packed rows of 208 values are not whole q4_k "
               "blocks of 256 nor q5_0 blocks of 32" in line for line in fallbacks), fallbacks
    quiet = cli("convert", src, tmp_path / "m.bump", "--dry-run", "--quiet",
                "--quant", "q4_k_m")
    assert quiet.code == 0 and len(quiet.out.splitlines()) < 12, quiet.out
    assert quiet.out.splitlines()[-1] == lines[-1]  # the size line, the same


# -- 5: the engine tokenizer notes --------------------------------------------------------------

def test_engine_tokenizer_notes_only_when_asked(with_tokenizer: Path, cli,
                                                tmp_path: Path) -> None:
    blob = tmp_path / "out" / "m.bump"
    blob.parent.mkdir()
    r = cli("convert", with_tokenizer, blob)
    assert r.code == 0 and "engine tokenizer" not in r.err and "warning" not in r.err, r.err
    r = cli("convert", with_tokenizer, blob, "--force", "--quiet", "--verbose")
    assert r.code == 0 and r.err.count("bumpconv: note: engine tokenizer:") >= 2, r.err
    summary = cli("inspect", blob, "--summary")
    engine = [line for line in summary.out.splitlines() if line.startswith("engine")]
    assert len(engine) == 1 and "inspect --verbose" in engine[0]
    verbose = cli("inspect", blob, "--summary", "--verbose")
    assert verbose.out.count("engine    engine tokenizer:") >= 2
    assert "warning" not in summary.out + verbose.out


# -- 7: hostile inputs ----------------------------------------------------------------------------

def _set_layers(path: Path, layers: int) -> None:
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 16, layers)  # BUMPWGT3's num_layers (schemas/bumpwgt3...)
    path.write_bytes(bytes(data))


def test_a_bumpwgt3_header_claiming_100000_layers_fails_fast(synthetic: Callable[..., Path],
                                                              cli, tmp_path: Path) -> None:
    """The damaged header of the hostile corpus: inspect spun for minutes expanding 1.4M
    tensors per candidate layout; the dtype table's length refuses it first. A table as long
    as the layer count needs, in a file too small for it, is refused as fast."""
    src = synthetic("llama-tied")
    v3 = tmp_path / "v3.bump"
    bumpconv.convert(src, v3, profile="bumpwgt3", context=8192)
    with open_blob(v3, config=src / "config.json") as bf:
        assert {f.name: f.offset for f in bf.variant.fields}["num_layers"] == 16
    _set_layers(v3, 100_000)
    start = time.perf_counter()
    _one_line_error(cli("inspect", v3), "the dtype table has 32 entries, but "
                                        "num_layers=100,000 needs 1,400,004")
    consistent = tmp_path / "big.bump"
    head = bytearray(v3.read_bytes()[:128])
    layers = 70_000
    table = struct.pack("<I", 14 * layers + 4) + bytes(14 * layers + 4)
    consistent.write_bytes(bytes(head) + table + bytes(500_000))
    _set_layers(consistent, layers)
    _one_line_error(cli("inspect", consistent), "fit no kv-head count and intermediate size "
                                                "with the header's num_layers=70,000")
    assert time.perf_counter() - start < 10


def test_a_dangling_symlink_output_is_named(synthetic: Callable[..., Path], cli,
                                            tmp_path: Path) -> None:
    src = synthetic("llama-quant")
    link = tmp_path / "m.bump"
    link.symlink_to(tmp_path / "gone" / "target.bump")
    for args in ((), ("--dry-run",)):
        _one_line_error(cli("convert", src, link, "--quiet", *args),
                        f"{link}: is a symbolic link to {tmp_path / 'gone' / 'target.bump'}, "
                        "which does not exist")
    assert link.is_symlink() and sorted(p.name for p in tmp_path.iterdir()) == ["m.bump"]
    r = cli("convert", src, link, "--quiet", "--force", "--no-engine-sidecars")
    assert r.code == 0, r.err
    assert not link.is_symlink() and link.read_bytes()[:8] == b"BUMPWGT5"


# -- 2: the install command a missing extra's error names -------------------------------------

def test_missing_extras_name_an_install_command_for_this_checkout() -> None:
    """This checkout is installed from its directory (make install: pip install -e .), so the
    command names it; tests/test_fresh_install.py runs parity without torch to see it."""
    assert install_command("reference") == (
        f"pip install '{ROOT}[reference]' --extra-index-url "
        "https://download.pytorch.org/whl/cpu")
    assert install_command("plot") == f"pip install '{ROOT}[plot]'"
    assert os.path.isfile(ROOT / "pyproject.toml")
