"""GGUF files made by llama.cpp's own converter, for tests and ``make demo-gguf``.

The permutation llama.cpp applies to Llama's Q/K rows is exactly what bumpconv must undo, so
test GGUFs come from llama.cpp's ``convert_hf_to_gguf.py`` itself, never from a re-implementation:
its source is the vendored llama.cpp of the ``llama-cpp-python`` sdist from PyPI (``make peer``'s
unpacked copy when there is one, else ``pip download`` of the same sdist), run with its own
gguf-py first on PYTHONPATH and sentencepiece (which its ``set_vocab`` imports) installed with
``pip install --target`` beside it, never into the venv.

K-quant files: ``llama-quantize`` from a peer build when it exists; otherwise
:func:`requantize` rewrites an f32 GGUF with its matrices quantized by bumpconv's quantizer
(ggml's reference quantizer, byte for byte: tests/test_quant_blocks.py), which is what
``llama-quantize --pure`` writes for a tensor whose rows are whole blocks.

CLI::

    python tools/gguf_fixtures.py smollm2 --types f32 q8_0 q4_k_m   # prints the GGUF paths
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SDIST = "llama-cpp-python==0.3.36"
#: convert_hf_to_gguf.py's one import beyond torch, transformers and its own gguf-py.
CONVERTER_DEPS = ("sentencepiece>=0.1.98,<0.3.0",)
#: --outtype values of convert_hf_to_gguf.py; anything else is a llama-quantize type.
CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")


def llama_cpp_source(cache: Path) -> Path:
    """The vendored llama.cpp tree holding convert_hf_to_gguf.py."""
    info = cache / "peer" / "build-info.json"
    if info.exists():
        source = Path(json.loads(info.read_text())["source"])
        if (source / "convert_hf_to_gguf.py").exists():
            return source
    root = cache / "llama-cpp-sdist"
    found = sorted(root.glob("llama_cpp_python-*/vendor/llama.cpp"))
    if found:
        return found[-1]
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                    "--quiet", SDIST, "-d", str(root)], check=True)
    archive = next(root.glob("llama_cpp_python-*.tar.gz"))
    with tarfile.open(archive) as tf:
        tf.extractall(root, filter="data")
    archive.unlink()
    return sorted(root.glob("llama_cpp_python-*/vendor/llama.cpp"))[-1]


def converter_env(cache: Path) -> dict[str, str]:
    source = llama_cpp_source(cache)
    pydeps = cache / "peer" / "pydeps"
    if not (pydeps / "sentencepiece").exists():
        pydeps = cache / "llama-cpp-sdist" / "pydeps"
        if not (pydeps / ".installed").exists():
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                            "--target", str(pydeps), *CONVERTER_DEPS], check=True)
            (pydeps / ".installed").touch()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(source / "gguf-py"), str(pydeps),
                                                    env.get("PYTHONPATH", "")) if p)
    return env


def hf_to_gguf(hf_dir: Path, out: Path, outtype: str, cache: Path,
               tokenizer: Path | None = None, pre: str | None = None) -> Path:
    """``convert_hf_to_gguf.py HF_DIR --outtype T`` (cached: an existing ``out`` is kept).
    ``tokenizer``: a directory whose files are added (the converter needs a vocabulary; the tiny
    models have none). ``pre``: the ``tokenizer.ggml.pre`` name to record for a byte-level
    tokenizer the converter does not know by its hash (the tiny one uses Llama 3's pipeline,
    llama.cpp's "llama-bpe"); only its vocabulary step is told this, the tensors are its own."""
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".stage-{out.stem}"
    shutil.rmtree(stage, ignore_errors=True)
    if tokenizer is not None:
        shutil.copytree(hf_dir, stage)
        for f in tokenizer.iterdir():
            if f.name != "config.json":
                shutil.copy(f, stage / f.name)
        hf_dir = stage
    tmp = out.with_suffix(".part")
    try:
        source = llama_cpp_source(cache)
        script = str(source / "convert_hf_to_gguf.py")
        args = [str(hf_dir), "--outfile", str(tmp), "--outtype", outtype]
        if pre is None:
            cmd = [sys.executable, script, *args]
        else:
            cmd = [sys.executable, "-c", _NAMED_PRE, str(source), pre, script, *args]
        proc = subprocess.run(cmd, env=converter_env(cache), capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"convert_hf_to_gguf.py failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
        tmp.replace(out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        tmp.unlink(missing_ok=True)
    return out


#: Runs convert_hf_to_gguf.py with TextModel.get_vocab_base_pre answering argv[2].
_NAMED_PRE = """import runpy, sys
source, pre, script = sys.argv[1:4]
sys.path.insert(0, source)
import conversion.base
conversion.base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
sys.argv = [script, *sys.argv[4:]]
runpy.run_path(script, run_name="__main__")
"""


@contextlib.contextmanager
def _rewritten(src: Path, out: Path, dropped: tuple[str, ...] = ()) -> Iterator[tuple[Any, Any]]:
    """(reader of ``src``, writer of ``out`` holding ``src``'s keys but those starting with
    ``dropped``); the block adds keys and tensors, and ``out`` appears only when it is whole."""
    from gguf import GGUFReader, GGUFValueType, GGUFWriter
    reader = GGUFReader(src)
    tmp = out.with_suffix(".part")
    writer = GGUFWriter(tmp, reader.fields["general.architecture"].contents())
    for field in reader.fields.values():
        if field.name.startswith(("GGUF.", *dropped)) or field.name == "general.architecture":
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    yield reader, writer
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)


def requantize(f32_gguf: Path, out: Path, qtype: str) -> Path:
    """``f32_gguf`` with every matrix whose rows are whole ``qtype`` blocks quantized to it
    (bumpconv's ggml-identical quantizer); keys and other tensors copied as they are."""
    if out.exists():
        return out
    import numpy as np
    from gguf import GGMLQuantizationType
    from bumpconv.format.dtypes import DType
    from bumpconv.native.quant import quantize
    dtype = DType[qtype.upper()]
    with _rewritten(f32_gguf, out) as (reader, writer):
        for t in reader.tensors:
            data = np.asarray(t.data)
            if data.ndim == 2 and data.shape[1] % dtype.block.elements == 0:
                blocks = quantize(np.ascontiguousarray(data, dtype=np.float32), dtype)
                writer.add_tensor(t.name,
                                  np.asarray(blocks, dtype=np.uint8).reshape(data.shape[0], -1),
                                  raw_dtype=GGMLQuantizationType[dtype.name])
            else:
                writer.add_tensor(t.name, data)
    return out


def with_gemma_vocabulary(gguf: Path, hf_dir: Path, tokenizer: Path, out: Path) -> Path:
    """``gguf`` (llama.cpp's converter's file of a tiny Gemma 3, made with a byte-level
    vocabulary because the converter's SentencePiece path needs a tokenizer.model) with the
    tiny Gemma tokenizer in llama.cpp's SentencePiece keys instead, as its Gemma writer stores
    them: ``tokenizer.ggml.model`` "llama", no merges, pieces of spaces as real spaces (user-
    defined, type 4), specials control (3), ``<0xNN>`` byte (6), scores, BOS added; and
    ``token_embd`` back to the checkpoint's rows (the converter cut it to the byte-level
    vocabulary's size; the rows it kept are unchanged)."""
    if out.exists():
        return out
    import numpy as np
    from safetensors.numpy import load_file
    doc = json.loads((tokenizer / "tokenizer.json").read_text(encoding="utf-8"))
    config = json.loads((tokenizer / "tokenizer_config.json").read_text(encoding="utf-8"))
    by_id = {i: t for t, i in doc["model"]["vocab"].items()}
    special = {t["id"] for t in doc["added_tokens"] if t["special"]}
    tokens, types, scores = [], [], []
    for i in range(len(by_id)):
        t = by_id[i]
        spaces = set(t) == {"\u2581"} and len(t) > 1
        tokens.append(" " * len(t) if spaces else t)
        kind = 3 if i in special else 6 if t.startswith("<0x") else 4 if spaces else 1
        types.append(kind)
        scores.append(-1000.0 if kind in (3, 4) else 0.0 if kind == 6 else -float(i))
    ids = {t: i for i, t in by_id.items()}
    embedding = load_file(str(hf_dir / "model.safetensors"))["model.embed_tokens.weight"]
    with _rewritten(gguf, out, dropped=("tokenizer.",)) as (reader, writer):
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_bos_token_id(ids[config["bos_token"]])
        writer.add_eos_token_id(ids[config["eos_token"]])
        writer.add_unk_token_id(ids[config["unk_token"]])
        writer.add_pad_token_id(ids[config["pad_token"]])
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(False)
        writer.add_add_space_prefix(False)
        writer.add_chat_template(config["chat_template"])
        for t in reader.tensors:
            data = np.asarray(t.data)
            if t.name == "token_embd.weight":
                data = np.ascontiguousarray(embedding, dtype=np.float32)
            writer.add_tensor(t.name, data, raw_dtype=t.tensor_type)
    return out


def llama_quantize(f16_gguf: Path, out: Path, qtype: str, cache: Path) -> Path | None:
    """``llama-quantize F16 OUT TYPE`` from a peer build (None when there is none)."""
    info = cache / "peer" / "build-info.json"
    tool = Path(json.loads(info.read_text())["tools"]["llama-quantize"]) if info.exists() else None
    if tool is None or not tool.exists():
        return None
    if not out.exists():
        subprocess.run([str(tool), str(f16_gguf), str(out), qtype.upper(), "2"], check=True,
                       capture_output=True)
    return out


def smollm2_gguf(cache: Path, qtype: str) -> Path | None:
    """SmolLM2-135M (the fp32 fixture) as a GGUF of ``qtype`` made by llama.cpp's tools."""
    sys.path.insert(0, str(REPO))
    from tools.fixtures import smollm2
    hf_dir = smollm2(cache, "fp32")
    out_dir = cache / "gguf"
    if qtype in CONVERTER_TYPES:
        return hf_to_gguf(hf_dir, out_dir / f"smollm2-{qtype}.gguf", qtype, cache)
    f16 = hf_to_gguf(hf_dir, out_dir / "smollm2-f16.gguf", "f16", cache)
    return llama_quantize(f16, out_dir / f"smollm2-{qtype}.gguf", qtype, cache)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("smollm2",))
    ap.add_argument("--types", nargs="+", default=["f32", "q8_0"])
    ap.add_argument("--cache", type=Path, default=REPO / ".cache")
    args = ap.parse_args(argv)
    for qtype in args.types:
        path = smollm2_gguf(args.cache, qtype)
        print(path if path is not None else f"# {qtype}: no llama-quantize (make peer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
