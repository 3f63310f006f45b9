"""A model directory is the engine's unit: ``convert SRC DIR`` writes DIR/weights.bump with the
engine's sidecars, committed as one (a kill at any moment leaves the old directory or the new
one, never a blob without its sidecars or sidecars without their blob, and success is reported
only for a complete one); a ``.bump`` path is the blob alone; two models never share sidecars.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bumpconv.files import atomic

MODEL_FILES = ["config.json", "weights.bump", "weights_manifest.json", "weights_manifest.map"]
BUMPCONV = [sys.executable, "-c", "import sys; from bumpconv.cli import main; "
                                  "sys.exit(main(sys.argv[1:]))"]


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in directory.iterdir() if p.is_file()}


def test_a_directory_output_is_the_blob_and_its_sidecars(synthetic, cli, tmp_path: Path) -> None:
    out = tmp_path / "model"
    r = cli("convert", synthetic("qwen3-engine"), out, "--quiet")
    assert r.code == 0, r.err
    assert listing(out) == MODEL_FILES and listing(tmp_path) == ["model"]
    manifest = json.loads((out / "weights_manifest.json").read_text())
    assert manifest["weights_path"] == "weights.bump"
    assert manifest["entries"][-1]["name"] == "output.weight"  # the engine's head name (B6)
    r = cli("inspect", out, "--check")
    assert r.code == 0 and "ok   engine sidecars" in r.out and "ok   engine traps" in r.out


def test_a_bump_path_is_the_blob_alone_and_says_so(synthetic, cli, tmp_path: Path) -> None:
    src = synthetic("llama-quant")
    r = cli("convert", src, tmp_path / "m.bump")
    assert r.code == 0, r.err
    assert listing(tmp_path) == ["m.bump"]
    assert "the blob alone, without the engine's sidecars" in r.err
    assert f"convert {src} DIR` writes a model directory" in r.err
    r = cli("convert", src, tmp_path / "n.bump", "--engine-sidecars")
    assert r.code == 1 and "come only with a model directory" in r.err
    r = cli("convert", src, tmp_path / "d", "--no-engine-sidecars")
    assert r.code == 1 and "for the blob alone give a .bump path" in r.err
    assert listing(tmp_path) == ["m.bump"]


def test_an_existing_directory_is_replaced_only_with_force_and_only_when_it_is_a_model(
        synthetic, cli, tmp_path: Path) -> None:
    out = tmp_path / "model"
    out.mkdir()  # an empty directory is a new one
    assert cli("convert", synthetic("llama-quant"), out, "--quiet").code == 0
    first = digests(out)
    r = cli("convert", synthetic("qwen3-engine"), out, "--quiet")
    assert r.code == 1 and "already exists (use --force to replace it)" in r.err
    assert digests(out) == first
    (out / ".ck_build").mkdir()  # what the engine's ck_run_v7 builds inside: stale once replaced
    (out / ".ck_build" / "libmodel.so").write_bytes(b"compiled offsets of the old blob")
    r = cli("convert", synthetic("qwen3-engine"), out, "--quiet", "--force")
    assert r.code == 0, r.err
    second = digests(out)
    assert listing(out) == MODEL_FILES  # the old build went with the old blob
    assert all(second[name] != first[name] for name in MODEL_FILES)
    assert cli("inspect", out, "--check").code == 0
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging left
    (out / "notes.txt").write_text("mine")
    r = cli("convert", synthetic("llama-quant"), out, "--quiet", "--force")
    assert r.code == 1 and "holds 'notes.txt', which bumpconv did not write" in r.err
    assert digests(out) == {**second, "notes.txt": digests(out)["notes.txt"]}


def test_two_models_never_share_sidecars_and_check_names_sidecars_of_another_blob(
        synthetic, cli, tmp_path: Path) -> None:
    """The old failure: a second conversion into one directory, then --force, gave the first
    blob the second one's sidecars while inspect --check said all was well."""
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli("convert", synthetic("llama-quant"), a, "--quiet").code == 0
    assert cli("convert", synthetic("qwen3-engine"), b, "--quiet").code == 0
    assert digests(a) != digests(b)
    r = cli("convert", synthetic("qwen3-engine"), a / "other.bump", "--quiet")  # into a's dir
    assert r.code == 0 and listing(a) == sorted([*MODEL_FILES, "other.bump"])
    r = cli("inspect", a / "other.bump", "--check")
    assert r.code == 1
    assert "FAIL engine sidecars: weights_manifest.json beside the blob describes weights.bump, " \
           "not other.bump" in r.out
    assert cli("inspect", a, "--check").code == 0
    r = cli("convert", synthetic("qwen3-engine"), a / "weights.bump", "--force", "--quiet")
    assert r.code == 1 and "is the blob that" in r.err and f"{a} --force replaces" in r.err
    assert cli("inspect", a, "--check").code == 0  # untouched
    shutil.copy(b / "weights.bump", a / "weights.bump")  # a blob that is not theirs
    r = cli("inspect", a, "--check")
    assert r.code == 1 and "FAIL engine sidecars: weights_manifest.json: entry" in r.out


def test_no_model_directory_for_a_padded_layout(synthetic, cli, tmp_path: Path) -> None:
    """The engine reads every matrix unpadded; bumpconv's engine layout pads rows to 64 bytes.
    Measured with the engine's runtime on the tiny llama-tied (I = 200 -> 208) and
    llama-gqa-pad (D = 72 -> 80): top-1 0-0.5 % against transformers. No directory then."""
    r = cli("convert", synthetic("llama-gqa-pad"), tmp_path / "model")
    assert r.code == 1 and "no model directory for the engine: the engine reads every matrix " \
                           "unpadded" in r.err
    assert "(not a multiple of 16: D = 72, I = 200)" in r.err
    r = cli("convert", synthetic("llama-gqa-pad"), tmp_path / "m.bump")
    assert r.code == 0 and "the engine's runtime cannot run this model" in r.err
    assert listing(tmp_path) == ["m.bump"]


def test_an_output_directory_never_swallows_its_input(synthetic, cli, tmp_path: Path) -> None:
    src = tmp_path / "ckpt"
    shutil.copytree(synthetic("llama-quant"), src)
    before = digests(src)
    for out in (src, tmp_path):
        r = cli("convert", src, out, "--force", "--quiet")
        assert r.code == 1 and "an input of this command" in r.err, r.err
    assert digests(src) == before


def test_an_interruption_before_the_commit_leaves_nothing(synthetic, cli, monkeypatch,
                                                          tmp_path: Path) -> None:
    from bumpconv.conversion import convert as convert_module
    real = convert_module.write_blob

    def interrupted(*args, **kwargs):
        real(*args, **kwargs)  # the blob complete in the staging directory, then Ctrl-C
        raise KeyboardInterrupt
    monkeypatch.setattr(convert_module, "write_blob", interrupted)
    r = cli("convert", synthetic("llama-quant"), tmp_path / "model", "--quiet")
    assert r.code == 130 and "interrupted" in r.err
    assert listing(tmp_path) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_the_swap_is_held_until_the_directory_is_whole(
        signum: int, synthetic, cli, monkeypatch, tmp_path: Path) -> None:
    """SIGTERM/SIGINT between the exchange and the removal of the old content: the new
    directory is whole, then the signal is delivered (exit 130, "interrupted")."""
    out = tmp_path / "model"
    assert cli("convert", synthetic("llama-quant"), out, "--quiet").code == 0
    real = atomic._swap_into_place

    def swap_then_signal(staging: Path, dest: Path, replacing: bool) -> Path | None:
        old = real(staging, dest, replacing)
        os.kill(os.getpid(), signum)
        time.sleep(0.05)  # a handler that raised would have raised by now
        return old
    monkeypatch.setattr(atomic, "_swap_into_place", swap_then_signal)
    r = cli("convert", synthetic("qwen3-engine"), out, "--quiet", "--force")
    assert r.code == 130 and "interrupted" in r.err
    assert listing(out) == MODEL_FILES and listing(tmp_path) == ["model"]
    assert cli("inspect", out, "--check").code == 0
    manifest = json.loads((out / "weights_manifest.json").read_text())
    assert manifest["template"] == {"name": "qwen3"}  # the new model


@pytest.mark.fuzz
def test_a_conversion_killed_at_any_moment_leaves_a_whole_directory_or_none(
        synthetic, tmp_path: Path) -> None:
    """Real conversions (a subprocess, quantizing, replacing an existing model directory with
    --force) killed by SIGKILL, SIGTERM or SIGINT at delays spread over a whole run: afterwards
    the directory is the old model or the new one, each whole and passing inspect --check, and
    exit status 0 (success reported) only with the new one. A SIGKILLed run's hidden staging
    directory is removed by the next conversion."""
    out = tmp_path / "model"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def run(src: Path, delay: float | None, signum: int = signal.SIGKILL) -> int:
        proc = subprocess.Popen([*BUMPCONV, "convert", str(src), str(out), "--force", "--quiet",
                                 "--quant", "q4_k_m"], env=env, stderr=subprocess.DEVNULL)
        if delay is not None:
            time.sleep(delay)
            proc.send_signal(signum)
        proc.wait(timeout=60)
        return proc.returncode

    sources = (synthetic("qwen3-engine"), synthetic("llama-quant"))
    wholes, took = [], 0.0
    for src in sources:
        started = time.monotonic()
        assert run(src, None) == 0 and cli_check(out) == 0
        took = max(took, time.monotonic() - started)
        wholes.append(digests(out))
    current, kept = 1, 0  # each kill converts the other model over the current one
    signals = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)
    for k in range(24):
        target = 1 - current
        code = run(sources[target], took * (k // 3 + 1) / 8, signals[k % 3])
        visible = [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")]
        assert visible == ["model"] and listing(out) == MODEL_FILES
        now = digests(out)
        assert now in (wholes[current], wholes[target]), f"a mixed directory after kill {k}"
        assert code != 0 or now == wholes[target]  # success is reported only when it is whole
        kept += now == wholes[current]
        current = wholes.index(now)
    assert run(sources[1 - current], None) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # stale staging removed
    assert kept  # some kill landed before the commit


def cli_check(out: Path) -> int:
    return subprocess.run([*BUMPCONV, "inspect", str(out), "--check"], capture_output=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}).returncode
