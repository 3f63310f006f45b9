"""``bumpconv run`` on tiny models with a small word-level tokenizer: output, EOS, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest

from bumpconv.run.generate import StreamDecoder, greedy
from bumpconv.run.runtime import BumpModel
from runtime_helpers import convert

#: Every test here runs once per kernel level (conftest.py, kernel_level).
pytestmark = pytest.mark.usefixtures("kernel_level")

VOCAB = 517  # the tiny models' vocabulary


def word_tokenizer(directory: Path, size: int = VOCAB) -> Path:
    """tokenizer.json mapping the words w0..w{size-1} to ids 0..size-1."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(size)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    return directory


@pytest.fixture(scope="module")
def blob(tiny: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert(tiny("llama-untied"), tmp_path_factory.mktemp("cli") / "model.bump")


def expected_tokens(blob: Path, prompt: list[int], n: int) -> list[int]:
    with BumpModel.open(blob) as m:
        return list(greedy(m, prompt, n))


def test_run_prints_prompt_and_greedy_continuation(cli, blob: Path, tmp_path: Path) -> None:
    tok = word_tokenizer(tmp_path / "tok")
    r = cli("run", blob, "--prompt", "w5 w17 w300", "-n", "6", "--tokenizer", tok)
    assert r.code == 0, r.err
    words = [f"w{i}" for i in expected_tokens(blob, [5, 17, 300], 6)]
    assert r.out == "w5 w17 w300 " + " ".join(words) + "\n"
    assert "decode: 6 tokens" in r.err and "tok/s" in r.err


def test_generation_stops_at_eos(cli, blob: Path, tmp_path: Path) -> None:
    first, second = expected_tokens(blob, [5, 17, 300], 2)
    tok = word_tokenizer(tmp_path / "tok")
    (tok / "generation_config.json").write_text(json.dumps({"eos_token_id": [second, 999]}))
    r = cli("run", blob, "--prompt", "w5 w17 w300", "-n", "10", "--tokenizer", tok)
    assert r.code == 0, r.err
    assert r.out == f"w5 w17 w300 w{first} w{second}\n"


def test_tokenizer_beside_the_blob_is_the_default(cli, blob: Path, tmp_path: Path) -> None:
    copy = tmp_path / "here" / "model.bump"
    word_tokenizer(copy.parent)
    copy.write_bytes(blob.read_bytes())
    r = cli("run", copy, "--prompt", "w1 w2", "-n", "2")
    assert r.code == 0, r.err


@pytest.mark.parametrize("case", ["no tokenizer", "empty dir", "bad tokenizer", "bad blob",
                                  "token out of range", "empty prompt"])
def test_run_errors_are_one_line(case: str, cli, blob: Path, tmp_path: Path) -> None:
    tok = word_tokenizer(tmp_path / "tok")
    args: list[object] = ["run", blob, "--prompt", "w1 w2", "--tokenizer", tok]
    expect = {"no tokenizer": "tokenizer.json not found; pass --tokenizer",
              "empty dir": "tokenizer.json: not found", "bad tokenizer": "tokenizer.json: not valid JSON",
              "bad blob": "not a bump file", "token out of range": r"outside [0, 517)",
              "empty prompt": "prompt is empty"}[case]
    if case == "no tokenizer":
        args = ["run", blob, "--prompt", "w1"]
    elif case == "empty dir":
        (tmp_path / "empty").mkdir()
        args[-1] = tmp_path / "empty"
    elif case == "bad tokenizer":
        (tok / "tokenizer.json").write_text("{not json")
    elif case == "bad blob":
        args[1] = tmp_path / "junk.bump"
        args[1].write_bytes(b"\0" * 4096)  # type: ignore[union-attr]
    elif case == "token out of range":
        word_tokenizer(tok, size=600)
        args[3] = "w1 w599"
    elif case == "empty prompt":
        args[3] = ""
    r = cli(*args)
    assert r.code == 1 and r.out == ""
    assert r.err.startswith("bumpconv: error: ") and r.err.count("\n") == 1, r.err
    assert expect in r.err


def test_bumpwgt3_needs_config(cli, tiny, tmp_path: Path) -> None:
    src = tiny("qwen2")
    v3 = convert(src, tmp_path / "v3.bump", "bumpwgt3")
    tok = word_tokenizer(tmp_path / "tok")
    r = cli("run", v3, "--prompt", "w3 w4", "-n", "2", "--tokenizer", tok)
    assert r.code == 1 and "config.json" in r.err
    r = cli("run", v3, "--prompt", "w3 w4", "-n", "2", "--tokenizer", tok,
            "--config", src / "config.json")
    assert r.code == 0, r.err


def test_stream_decoder_holds_back_split_characters() -> None:
    """A character split over two byte-level tokens appears once, when complete."""
    from tokenizers import Tokenizer, decoders, models
    vocab = {"a": 0, "\u00c3": 1, "\u00a9": 2}  # byte-level symbols for 0xC3 0xA9 ("é")
    tok = Tokenizer(models.BPE(vocab, merges=[]))
    tok.decoder = decoders.ByteLevel()
    stream = StreamDecoder(tok, [0])
    assert [stream.push(1), stream.push(2), stream.push(0)] == ["", "é", "a"]
