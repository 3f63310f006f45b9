"""Docs that cannot drift: every example in README.md and docs/*.md is executed or validated.

* ``python`` blocks run, each document's blocks in order in one fresh interpreter, in a
  workspace where the names the docs use exist: ``SmolLM2-135M/`` (a tiny numpy-built
  checkpoint with a byte-level tokenizer and chat template) and ``smollm2.bump`` (its engine-v7
  blob). A block that needs the reference side (parity, eval) makes its test a model test.
* every ``bumpconv ...`` command line of a code block goes through the CLI's own parser: the
  subcommand, every flag, and every literal value a flag is shown with (``--quant q8_0|q6_k``:
  each alternative) must be accepted. A line without placeholders is parsed whole, and the
  cheap subcommands (convert, inspect, verify, run) run for real, in document order, in the
  same workspace (``.cache/smollm2-fp32`` is the tiny checkpoint there too).
* inline spans naming a subcommand with flags (`` `inspect --check` ``) are checked the same
  way; ``make`` targets must exist in the Makefile; ``python SCRIPT --flag`` lines need the
  script and its flags (its ``--help``).
* every ``bumpconv.x.y`` name must import or resolve, every repository path and
  ``file.py::test`` reference must exist, every relative link must lead to a file.

So a renamed flag, a moved module or a deleted test fails here, not in a user's first hour.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import re
import shlex
import shutil
import pkgutil
import subprocess
import sys
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from bumpconv.cli import build_parser
from bumpconv.cli import main as cli_main
from tools.fixtures import tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: Stale names in documents owned by other work in progress, tolerated until fixed there (the
#: test fails once a listed string is gone, so this list can only shrink).
KNOWN_STALE: dict[str, set[str]] = {
    "parity.md": {"bumpconv.runtime.BumpModel", "bumpconv/reference.py"},
}

#: Files of other projects the docs name (llama.cpp, the engine, transformers).
FOREIGN_FILES = {"convert_hf_to_gguf.py", "build_ir_v7.py", "build_ir_v8.py", "ck_run_v7.py",
                 "ck_run_v8.py", "convert_hf_to_bump_v7.py",
                 "true_bpe.c", "tokenizer_spm.c", "gguf_reader.py", "quants.py", "constants.py",
                 "tensor_mapping.py", "run.c", "ggml.h", "ggml-quants.c", "CHANGELOG.md",
                 "build-info.json", "ckernel_engine.h", "model.safetensors.index.json",
                 "ggml.c",
                 "transformer.h", "llama2.c"}  # not a file: GPT-2's HF module path in format.md's family example

#: First components of the paths the docs name that are the repository's (the rest are paths
#: in an example's workspace or in another project's tree).
REPO_DIRS = {"bumpconv", "src", "tests", "native", "tools", "bench", "schemas", "docs", "..",
             "format",
             "files", "conversion", "blob", "run", "comparison", "evaluate", "commands"}

#: Names before a dot that are not bumpconv's: HF modules, gguf keys, variables in examples.
FOREIGN_MODULES = {"rotary_emb", "tokenizer", "gguf", "np", "torch", "model", "self_attn"}


@dataclass(frozen=True)
class Block:
    doc: Path
    lang: str
    text: str
    line: int


def _blocks(doc: Path) -> list[Block]:
    text = doc.read_text(encoding="utf-8")
    out = []
    for m in re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.M | re.S):
        out.append(Block(doc, m.group(1), m.group(2), text.count("\n", 0, m.start()) + 2))
    return out


def _prose(doc: Path) -> str:
    """The document without its fenced blocks."""
    return re.sub(r"^```\w*\n.*?^```$", "", doc.read_text(encoding="utf-8"), flags=re.M | re.S)


def _rel(doc: Path) -> str:
    return str(doc.relative_to(ROOT))


# -- the CLI's own parser ------------------------------------------------------------------------

@functools.cache
def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _options(command: str) -> dict[str, argparse.Action]:
    return {s: a for a in _subparsers()[command]._actions for s in a.option_strings
            if a.help != argparse.SUPPRESS}  # an old name is not for the docs


_PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*(\.[a-z]+)?|[A-Z_]+\|[A-Z_.a-z]+")


def _is_placeholder(token: str) -> bool:
    return bool(_PLACEHOLDER.fullmatch(token)) or token.endswith("...")


def check_synopsis(tokens: list[str], where: str) -> None:
    """``bumpconv SUB [--flag VALUE] ...`` as the docs write it: the subcommand, each flag and
    each literal value must be the parser's."""
    assert tokens and tokens[0] == "bumpconv", where
    assert len(tokens) > 1 and tokens[1] in _subparsers(), \
        f"{where}: no subcommand {tokens[1:2]} (known: {', '.join(_subparsers())})"
    options = _options(tokens[1])
    i = 2
    while i < len(tokens):
        token = tokens[i].strip("[]")
        i += 1
        if not token.startswith("-") or token in ("-", "--"):
            continue
        flags = token.split("|")
        for flag in flags:
            assert flag in options, f"{where}: `bumpconv {tokens[1]}` has no option {flag}"
        action = options[flags[0]]
        if action.nargs == 0 or i >= len(tokens) or tokens[i].lstrip("[").startswith("-"):
            continue
        value = tokens[i].strip("[]")
        i += 1
        if _is_placeholder(value):
            continue
        for alt in value.split("|"):
            try:
                got = action.type(alt) if callable(action.type) else alt
            except (argparse.ArgumentTypeError, ValueError) as exc:
                raise AssertionError(f"{where}: {flags[0]} refuses {alt!r} ({exc})") from None
            if action.choices is not None:
                assert got in action.choices, \
                    f"{where}: {flags[0]} {alt!r} is not one of {', '.join(action.choices)}"


def _commands(block: Block) -> list[tuple[list[str], int]]:
    """``bumpconv`` command lines of a code block (``$ `` prompts allowed, continuation lines
    of a synopsis joined), with their line numbers."""
    out: list[tuple[list[str], int]] = []
    lines = block.text.splitlines()
    for k, line in enumerate(lines):
        stripped = line.strip().removeprefix("$ ")
        if not stripped.startswith("bumpconv "):
            continue
        text = stripped
        for more in lines[k + 1:]:
            if not (more.startswith(" ") and more.strip().startswith("[")):
                break
            text += " " + more.strip()
        out.append((shlex.split(text, comments=True), block.line + k))
    return out


def _all_commands() -> list[tuple[Path, list[str], int]]:
    return [(b.doc, tokens, line) for doc in DOCS for b in _blocks(doc)
            if b.lang in ("", "sh", "console", "text") for tokens, line in _commands(b)]


def _concrete(tokens: list[str]) -> bool:
    return not any(c in t for t in tokens for c in "[]|") and \
        not any(_is_placeholder(t) for t in tokens[2:])


@pytest.mark.parametrize("doc, tokens, line", _all_commands(),
                         ids=lambda v: v.name if isinstance(v, Path) else
                         (str(v) if isinstance(v, int) else " ".join(v[:2])))
def test_every_command_line_is_one_the_cli_accepts(doc: Path, tokens: list[str],
                                                   line: int) -> None:
    where = f"{_rel(doc)}:{line}"
    check_synopsis(tokens, where)
    if _concrete(tokens):
        try:
            build_parser().parse_args(tokens[1:])
        except SystemExit:
            raise AssertionError(f"{where}: the parser refuses {shlex.join(tokens)}") from None


def test_there_are_commands_to_check() -> None:
    """The extraction finds the README's synopsis, not nothing."""
    readme = [t for d, t, _ in _all_commands() if d.name == "README.md"]
    assert {t[1] for t in readme} >= {"convert", "inspect", "verify", "run", "parity", "eval"}


# -- inline spans, make targets, scripts --------------------------------------------------------

def _spans(doc: Path) -> list[str]:
    return re.findall(r"`([^`\n]+)`", _prose(doc))


def _inline_commands(doc: Path) -> list[str]:
    """`bumpconv SUB ...` and `SUB --flag ...` spans in the prose."""
    out = []
    for span in _spans(doc):
        words = span.split()
        if words and words[0] in _subparsers() and len(words) > 1 and words[1].startswith("-"):
            words = ["bumpconv", *words]
        if len(words) > 1 and words[0] == "bumpconv" and words[1] in _subparsers():
            out.append(span)
    return out


def _tolerated(doc: Path, bad: list[str], spans: bool) -> None:
    """Fail on ``bad`` beyond :data:`KNOWN_STALE` (its `span` entries when ``spans``, its names
    otherwise), and on a tolerated entry that is fixed."""
    tolerated = {t for t in KNOWN_STALE.get(doc.name, set()) if t.startswith("`") == spans}
    fixed = sorted(tolerated - set(bad))
    assert not fixed, f"{_rel(doc)}: fixed, drop from KNOWN_STALE: {fixed}"
    unexpected = [b for b in bad if b not in tolerated]
    assert not unexpected, f"{_rel(doc)}: names that lead nowhere: {unexpected}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_inline_commands_name_real_flags(doc: Path) -> None:
    spans = _inline_commands(doc)
    bad = []
    for span in spans:
        try:
            check_synopsis(shlex.split("bumpconv " + span.removeprefix("bumpconv ")),
                           f"{_rel(doc)}: `{span}`")
        except AssertionError:
            bad.append(f"`{span}`")
    _tolerated(doc, bad, spans=True)
    if doc.name == "README.md":
        assert len(spans) >= 5


def _make_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_make_targets_exist(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    named = re.findall(r"(?:^|`)make ([\w-]+)", text, re.M)
    missing = sorted(set(named) - _make_targets() - {"-C"})
    assert not missing, f"{_rel(doc)}: no make target(s) {missing}"


def _script_lines() -> list[tuple[Path, str, list[str]]]:
    """``python bench/x.py [subcommand] --flag ...`` lines of code blocks and spans (the script
    named with its subcommand, ``tools/engine_check.py runtime``, when a lower-case word follows
    it: its flags are that subcommand's)."""
    out = []
    for doc in DOCS:
        texts = [b.text for b in _blocks(doc)] + _spans(doc)
        for text in texts:
            for m in re.finditer(r"python3? (?:-m )?((?:bench|tools)/[\w/]+\.py)( [a-z]+\b)?"
                                 r"([^\n`#]*)", text):
                script = m.group(1) + (m.group(2) or "")
                out.append((doc, script, re.findall(r"(?<![\w-])--[a-z][\w-]*", m.group(3))))
    return out


@functools.cache
def _script_help(script: str) -> str:
    path, *sub = script.split()
    r = subprocess.run([sys.executable, str(ROOT / path), *sub, "--help"], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, f"{script} --help failed: {r.stderr[-500:]}"
    return r.stdout


@pytest.mark.parametrize("doc, script, flags", _script_lines(),
                         ids=lambda v: v.name if isinstance(v, Path) else
                         (v if isinstance(v, str) else ",".join(v)))
def test_scripts_and_their_flags_exist(doc: Path, script: str, flags: list[str]) -> None:
    assert (ROOT / script.split()[0]).is_file(), f"{_rel(doc)}: no {script}"
    if flags or " " in script:
        help_text = _script_help(script)
        missing = [f for f in flags if f not in help_text]
        assert not missing, f"{_rel(doc)}: {script} has no {', '.join(missing)}"


# -- names: modules, paths, tests, links ---------------------------------------------------------

def _resolves(dotted: str) -> bool:
    """A module or attribute of bumpconv (an old name that warns does not count)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        try:
            return _lookup(dotted)
        except DeprecationWarning:
            return False


def _lookup(dotted: str) -> bool:
    parts = dotted.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        try:
            for attr in parts[k:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def _metadata_field(parts: list[str]) -> bool:
    """``bumpconv.profile`` in prose about a blob's metadata: a field path of its schema."""
    from pydantic import BaseModel

    from bumpconv.format.metadata import Metadata
    model: type[BaseModel] | None = Metadata
    for part in parts:
        fields = model.model_fields if model is not None else {}
        if part not in fields:
            return False
        ann = fields[part].annotation
        model = next((a for a in (*typing.get_args(ann), ann)
                      if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return True


@functools.cache
def _modules() -> dict[str, list[str]]:
    """bumpconv's modules by their last name (``reader`` -> ``bumpconv.blob.reader``)."""
    import bumpconv
    out: dict[str, list[str]] = {}
    for info in pkgutil.walk_packages(bumpconv.__path__, "bumpconv."):
        out.setdefault(info.name.rsplit(".", 1)[1], []).append(info.name)
    return out


def _short_resolves(module: str, name: str) -> bool:
    """`reader.open_blob`: some bumpconv module of that name has that attribute."""
    return any(hasattr(importlib.import_module(m), name) for m in _modules().get(module, []))


def _repo_files() -> dict[str, list[Path]]:
    names: dict[str, list[Path]] = {}
    for d in ("src", "tests", "native", "tools", "bench", "schemas", "docs"):
        for p in (ROOT / d).rglob("*"):
            if p.is_file() and "__pycache__" not in p.parts:
                names.setdefault(p.name, []).append(p)
    for p in ROOT.iterdir():
        if p.is_file():
            names.setdefault(p.name, []).append(p)
    return names


def stale_names(doc: Path) -> list[str]:
    """Every name in ``doc`` that does not lead anywhere."""
    text = doc.read_text(encoding="utf-8")
    files = _repo_files()
    bad: list[str] = []
    for dotted in sorted(set(re.findall(r"(?<![\w/.])bumpconv(?:\.[A-Za-z_]\w*)+", text))):
        if not _resolves(dotted) and not _metadata_field(dotted.split(".")):
            bad.append(dotted)
    for module, name in sorted(set(re.findall(r"`([a-z_]+)\.([a-z]+_[a-z_]+)(?:\(\))?`", text))):
        if module not in FOREIGN_MODULES | {"bumpconv"} and not _short_resolves(module, name):
            bad.append(f"{module}.{name}")
    for path in sorted(set(re.findall(
            r"(?<![\w.-])((?:[\w.-]+/)+[\w.-]+\.(?:py|c|h|json|md|toml|txt))(?![\w+-])", text))):
        if path.split("/")[0] not in REPO_DIRS:
            continue  # a path of the examples' workspace (SmolLM2-135M/...) or a peer's tree
        candidates = [ROOT / path, ROOT / "src" / path, ROOT / "src" / "bumpconv" / path,
                      doc.parent / path]
        if not any(c.exists() for c in candidates) and Path(path).name not in FOREIGN_FILES:
            bad.append(path)
    for name in sorted(set(re.findall(r"(?<![\w/.-])([\w-]+\.(?:py|c|h))(?![\w+-])", text))):
        if name not in files and name not in FOREIGN_FILES and not name.startswith("kernels_{"):
            bad.append(name)
    for file, test in sorted(set(re.findall(r"(test_\w+\.py)::(\w+)", text))):
        paths = files.get(file, [])
        if not any(re.search(rf"^\s*def {test}\b", p.read_text(), re.M) for p in paths):
            bad.append(f"{file}::{test}")
    for link in sorted(set(re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", text))):
        if not (doc.parent / link).exists():
            bad.append(f"link {link}")
    return bad


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_every_name_in_the_docs_exists(doc: Path) -> None:
    _tolerated(doc, stale_names(doc), spans=False)


# -- running the examples ------------------------------------------------------------------------

def _write_gguf(src: Path, out: Path) -> None:
    """``src``'s tensors as a float GGUF under llama.cpp's names (schemas/gguf.sources.json),
    with the keys bumpconv reads: a stand-in for the docs' model.gguf (no tokenizer keys)."""
    from gguf import GGUFWriter
    from safetensors.numpy import load_file

    from bumpconv.conversion.gguf_source import gguf_schema
    from bumpconv.format.registry import registry
    config = json.loads((src / "config.json").read_text())
    tensors = load_file(str(src / "model.safetensors"))
    writer = GGUFWriter(out, "llama")
    for item in gguf_schema()["config"]:
        if item["config"] in config:
            value = config[item["config"]]
            key = item["key"].format(arch="llama")
            (writer.add_uint32 if item["type"] == "int" else writer.add_float32)(key, value)
    writer.add_float32("llama.rope.freq_base", config["rope_parameters"]["rope_theta"])
    family = registry().family("llama")
    for name, role in registry().roles.items():
        if not family.has(name):
            continue
        layers = range(config["num_hidden_layers"]) if role.scope == "layer" else [None]
        for layer in layers:
            hf = family.hf_name(name, layer)
            if hf in tensors:
                writer.add_tensor(role.gguf.format(layer=layer), tensors.pop(hf))
    assert not tensors, f"no GGUF name for {sorted(tensors)}"
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def workspace(synthetic: Callable[..., Path], cache_dir: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The names the docs use, made real: a tiny checkpoint with a tokenizer (and chat
    template) as SmolLM2-135M/ and .cache/smollm2-fp32 (untied, its rows unpadded, so the
    engine's model directory applies), its engine-v7 blob smollm2.bump (the blob alone: the
    examples write their own directories), and its tensors as model.gguf."""
    root = tmp_path_factory.mktemp("docs")
    src = root / "SmolLM2-135M"
    shutil.copytree(synthetic("llama-quant"), src)
    for f in tiny_tokenizer("byte-level", cache_dir).iterdir():
        shutil.copy(f, src / f.name)
    config = json.loads((src / "config.json").read_text())
    config["max_position_embeddings"] = 1024  # room for parity's built-in prompts
    (src / "config.json").write_text(json.dumps(config))
    (root / ".cache").mkdir()
    (root / ".cache" / "smollm2-fp32").symlink_to(src)
    assert cli_main(["convert", str(src), str(root / "smollm2.bump"), "--quiet",
                     "--no-engine-sidecars"]) == 0
    _write_gguf(src, root / "model.gguf")
    return root


def _fresh(workspace: Path, tmp_path: Path) -> Path:
    """A private copy of the workspace (examples write files)."""
    dst = tmp_path / "ws"
    shutil.copytree(workspace, dst, symlinks=True)
    (dst / ".cache" / "smollm2-fp32").unlink()
    (dst / ".cache" / "smollm2-fp32").symlink_to(dst / "SmolLM2-135M")
    return dst


_REFERENCE = re.compile(r"\bparity\(|\bevaluate\b|\bimport torch\b|\btransformers\b")


def _python_docs() -> list[pytest.param]:
    out = []
    for doc in DOCS:
        code = [b for b in _blocks(doc) if b.lang == "python"]
        if code:
            marks = [pytest.mark.model] if any(_REFERENCE.search(b.text) for b in code) else []
            out.append(pytest.param(doc, marks=marks, id=doc.name))
    return out


@pytest.mark.parametrize("doc", _python_docs())
def test_python_examples_run(doc: Path, workspace: Path, tmp_path: Path) -> None:
    """A document's python blocks, in order, as one program; a failure names the block."""
    ws = _fresh(workspace, tmp_path)
    program = ["import sys"]
    for b in (b for b in _blocks(doc) if b.lang == "python"):
        program.append(f"sys.stderr.write('--- {_rel(doc)}:{b.line}\\n')")
        program.append(b.text)
    r = subprocess.run([sys.executable, "-c", "\n".join(program)], cwd=ws, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, f"{_rel(doc)}: an example fails:\n{r.stderr[-3000:]}"


_RUN = ("convert", "inspect", "verify", "run")


@pytest.mark.parametrize("doc", [d for d in DOCS if any(_concrete(t) and t[1] in _RUN
                                                       for x, t, _ in _all_commands() if x == d)],
                         ids=lambda d: d.name)
def test_concrete_commands_run(doc: Path, workspace: Path, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The cheap concrete command lines, in document order, in the workspace: each exits 0
    (or, where its inputs are not in the workspace, e.g. a GGUF file, is skipped)."""
    ws = _fresh(workspace, tmp_path)
    monkeypatch.chdir(ws)
    ran = 0
    for d, tokens, line in _all_commands():
        if d != doc or not _concrete(tokens) or tokens[1] not in _RUN:
            continue
        inputs = [t for t in tokens[2:] if re.search(r"\.(bump|gguf)$|/", t)
                  and not (tokens[1] == "convert" and t == tokens[3])]
        if not all(Path(t).exists() for t in inputs):
            continue
        args = tokens[1:]
        if args[0] == "convert" and Path(args[2]).exists():  # alternatives for one output
            args.append("--force")
        assert cli_main(args) == 0, f"{_rel(doc)}:{line}: {shlex.join(tokens)} failed"
        ran += 1
    assert ran, f"{_rel(doc)}: no command could run"


def test_docstrings_name_real_modules() -> None:
    """The source's own prose (docstrings, comments, messages) names modules that exist (the
    package's ``__init__`` names the old ``bumpconv.open`` it still answers to)."""
    bad = []
    for path in sorted((ROOT / "src" / "bumpconv").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if path == ROOT / "src" / "bumpconv" / "__init__.py":
            text = text.replace("bumpconv.open", "")
        for dotted in sorted(set(re.findall(r"(?<![\w/.])bumpconv(?:\.[A-Za-z_]\w*)+", text))):
            if not _resolves(dotted) and not _metadata_field(dotted.split(".")):
                bad.append(f"{path.relative_to(ROOT)}: {dotted}")
    assert not bad, bad


def test_flags_named_in_schema_messages_exist() -> None:
    """The messages the profiles and the quant policy hold (a profile's refusals) name options
    the CLI has."""
    every = {s for command in _subparsers() for s in _options(command)}
    files = [*sorted((ROOT / "schemas").glob("*.profile.json")),
             ROOT / "schemas" / "quant.policy.json"]
    named = {flag for path in files
             for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", path.read_text(encoding="utf-8"))}
    assert named and named <= every, sorted(named - every)


def test_eval_gate_table_is_the_schemas() -> None:
    """docs/eval.md's gate table says what schemas/eval-gates.json holds, row for row (the
    schema is the one home: a recalibration that forgets the doc fails here)."""
    from bumpconv.evaluate.gates import load_gates
    text = (ROOT / "docs" / "eval.md").read_text()
    rows = {}
    for m in re.finditer(r"^\| (\w+)[^|]* \| < ([\d.e-]+) \| >= ([\d.]+) % \| (?:< ([\d.]+)|-) \|$",
                         text, re.M):
        rows[m.group(1)] = (float(m.group(2)), float(m.group(3)) / 100,
                            float(m.group(4)) if m.group(4) else None)
    table, _ = load_gates()
    want = {g.dtype: (g.mean_kl_max, g.same_top_min, g.ppl_ratio_max) for g in table.weights}
    want["kernels"] = (table.kernels.mean_kl_max, table.kernels.same_top_min, None)
    assert {k: tuple(None if v is None else pytest.approx(v) for v in vs)
            for k, vs in want.items()} == rows
