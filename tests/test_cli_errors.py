"""Every bad input: one clear line naming the file/tensor/key, exit 1, nothing left behind."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Callable

import pytest


def _header(path: Path) -> tuple[int, dict]:
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return n, json.loads(raw[8:8 + n])


def _rewrite_header(path: Path, edit: Callable[[dict], None]) -> None:
    """Edit the JSON header in place, keeping its byte length (padded with spaces)."""
    raw = path.read_bytes()
    n, header = _header(path)
    edit(header)
    text = json.dumps(header, separators=(",", ":")).encode()
    assert len(text) <= n
    path.write_bytes(raw[:8] + text.ljust(n) + raw[8 + n:])


def truncate(src: Path) -> str:
    st = src / "model.safetensors"
    os.truncate(st, st.stat().st_size - 100)
    return "truncated"


def header_past_eof(src: Path) -> str:
    st = src / "model.safetensors"
    raw = st.read_bytes()
    st.write_bytes(struct.pack("<Q", len(raw) * 2) + raw[8:])
    return "runs past the end of the file"


def non_json_header(src: Path) -> str:
    st = src / "model.safetensors"
    raw = st.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    st.write_bytes(raw[:8] + b"{" + b"x" * (n - 1) + raw[8 + n:])
    return "header: not valid JSON"


def overlap(src: Path) -> str:
    def edit(h: dict) -> None:  # two same-size tensors claim the same bytes
        h["model.layers.0.post_attention_layernorm.weight"]["data_offsets"] = \
            h["model.layers.0.input_layernorm.weight"]["data_offsets"]
    _rewrite_header(src / "model.safetensors", edit)
    return "overlaps the tensor before it"


def unknown_dtype(src: Path) -> str:
    _rewrite_header(src / "model.safetensors",
                    lambda h: h["model.norm.weight"].update(dtype="F99"))
    return "tensor 'model.norm.weight': unknown dtype 'F99'"


def missing_tensor(src: Path) -> str:
    def edit(h: dict) -> None:
        h["model.norm.weightX"] = h.pop("model.norm.weight")
    _rewrite_header(src / "model.safetensors", edit)
    return "'model.norm.weight' (needed for final_ln_weight) is missing"


def extra_tensor(src: Path) -> str:
    st = src / "model.safetensors"
    raw = st.read_bytes()
    n, header = _header(st)
    data = raw[8 + n:]
    header["model.layers.0.mlp.surprise.weight"] = {
        "dtype": "F32", "shape": [2], "data_offsets": [len(data), len(data) + 8]}
    text = json.dumps(header).encode()
    st.write_bytes(struct.pack("<Q", len(text)) + text + data + b"\0" * 8)
    return "tensor 'model.layers.0.mlp.surprise.weight' is not used"


def bad_shape(src: Path) -> str:
    cfg = json.loads((src / "config.json").read_text())
    cfg["intermediate_size"] = 192
    (src / "config.json").write_text(json.dumps(cfg))
    return "has shape [200, 144] but the config implies [192, 144]"


def missing_key(src: Path) -> str:
    cfg = json.loads((src / "config.json").read_text())
    del cfg["rms_norm_eps"]
    (src / "config.json").write_text(json.dumps(cfg))
    return "required key 'rms_norm_eps' is missing"


def bad_arch(src: Path) -> str:
    cfg = json.loads((src / "config.json").read_text())
    cfg["model_type"] = "falcon"
    (src / "config.json").write_text(json.dumps(cfg))
    return "architecture 'falcon' is not supported (supported: llama, mistral, qwen2, qwen3, gemma3_text, gemma3)"


def tie_contradiction(src: Path) -> str:
    cfg = json.loads((src / "config.json").read_text())
    cfg["tie_word_embeddings"] = True
    (src / "config.json").write_text(json.dumps(cfg))
    return "tie_word_embeddings=true but the checkpoint has lm_head.weight"


def tie_absent_without_head(src: Path) -> str:
    """HF's default is untied: a config without the key needs lm_head.weight (engine bug 6.3)."""
    cfg = json.loads((src / "config.json").read_text())
    del cfg["tie_word_embeddings"]
    (src / "config.json").write_text(json.dumps(cfg))

    def edit(h: dict) -> None:
        h["model.norm.weight_"] = h.pop("lm_head.weight")
    _rewrite_header(src / "model.safetensors", edit)
    return "tie_word_embeddings is absent (HF default: false) but the checkpoint has no lm_head.weight"


def no_config(src: Path) -> str:
    (src / "config.json").unlink()
    return "config.json: not found"


CASES = [truncate, header_past_eof, non_json_header, overlap, unknown_dtype, missing_tensor,
         extra_tensor, bad_shape, missing_key, bad_arch, tie_contradiction, tie_absent_without_head,
         no_config]


def assert_clean_failure(r, needle: str, out_dir: Path) -> None:  # type: ignore[no-untyped-def]
    lines = r.err.strip().splitlines()
    assert r.code == 1, r
    assert len(lines) == 1 and lines[0].startswith("bumpconv: error: "), r.err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in r.err
    assert [p.name for p in out_dir.iterdir()] == [], "something was left behind"


@pytest.mark.parametrize("damage", CASES, ids=[c.__name__ for c in CASES])
def test_bad_source(damage: Callable[[Path], str], tiny_copy, cli, tmp_path: Path) -> None:
    src = tiny_copy("llama-untied")
    needle = damage(src)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    r = cli("convert", "--profile", "bumpwgt5", src, out_dir / "o.bump")
    assert_clean_failure(r, needle, out_dir)
    dry = cli("convert", "--profile", "bumpwgt5", src, out_dir / "o.bump", "--dry-run")
    assert_clean_failure(dry, needle, out_dir)


def test_untied_model_to_bumpwgt3(tiny, cli, tmp_path: Path) -> None:
    r = cli("convert", tiny("llama-untied"), tmp_path / "o.bump", "--profile", "bumpwgt3")
    assert_clean_failure(r, "bumpwgt3: the model has an untied lm_head", tmp_path)


def test_unwritable_output_directory(tiny, cli, tmp_path: Path) -> None:
    if os.geteuid() == 0:  # root ignores permission bits; sysfs refuses new files even to root
        target = Path("/sys/o.bump")
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        target = ro / "o.bump"
    r = cli("convert", "--profile", "bumpwgt5", tiny("llama-tied"), target)
    lines = r.err.strip().splitlines()
    assert r.code == 1 and len(lines) == 1 and f"{target}: cannot create a file in" in lines[0]
    assert not target.exists()


def test_missing_output_directory_and_directory_as_output(tiny, cli, tmp_path: Path) -> None:
    r = cli("convert", "--profile", "bumpwgt5", tiny("llama-tied"), tmp_path / "nope" / "o.bump")
    assert_clean_failure(r, "does not exist", tmp_path)
    d = tmp_path / "d.bump"
    d.mkdir()
    r = cli("convert", "--profile", "bumpwgt5", tiny("llama-tied"), d)
    assert r.code == 1 and "is a directory" in r.err


def test_bad_source_paths(tiny, cli, tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    assert "is a file" in cli("convert", "--profile", "bumpwgt5", f, tmp_path / "o.bump").err
    r = cli("convert", "--profile", "bumpwgt5", tmp_path / "missing-dir", tmp_path / "o.bump")
    assert r.code == 1 and "no such directory, and not a Hugging Face repo id" in r.err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_bytes((tiny("llama-tied") / "config.json").read_bytes())
    assert "no .safetensors weights found" in cli("convert", "--profile", "bumpwgt5", empty, tmp_path / "o.bump").err


def test_shard_index_problems(tiny_copy, cli, tmp_path: Path) -> None:
    src = tiny_copy("llama-untied", shard_bytes=200_000)
    index = src / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    first = sorted(set(data["weight_map"].values()))[0]
    (src / first).rename(src / "gone.safetensors")
    r = cli("convert", "--profile", "bumpwgt5", src, tmp_path / "o.bump")
    assert r.code == 1 and f"shard '{first}' is listed but missing" in r.err
    (src / "gone.safetensors").rename(src / first)
    name = next(iter(data["weight_map"]))
    data["weight_map"][name + ".ghost"] = first
    index.write_text(json.dumps(data))
    r = cli("convert", "--profile", "bumpwgt5", src, tmp_path / "o.bump")
    assert r.code == 1 and "but no shard contains it" in r.err


def test_entry_point_prints_one_line_and_no_traceback(tiny, tmp_path: Path) -> None:
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "bumpconv.cli", "convert", "--profile", "bumpwgt5", str(tiny("llama-untied")),
                        str(tmp_path / "o.bump"), "--profile", "bumpwgt3"], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_format_is_still_accepted_as_the_old_name_of_profile(tiny, cli, tmp_path: Path) -> None:
    r = cli("convert", "--profile", "bumpwgt5", tiny("llama-untied"), tmp_path / "o.bump", "--format", "bumpwgt3")
    warning, error = r.err.strip().splitlines()
    assert warning == "bumpconv: warning: --format is the old name of --profile"
    r.err = error
    assert_clean_failure(r, "bumpwgt3: the model has an untied lm_head", tmp_path)
