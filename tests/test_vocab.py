"""The engine's tokenizer arrays, the tokenizer record, and the tokenizer ``run`` builds from them.

The ground truth is Hugging Face ``tokenizers`` on the checkpoint's tokenizer.json: over the
corpus in ``tokenizer_corpus``, the tokenizer ``bumpconv run`` uses - the document rebuilt from
the arrays (after a bytes round trip) and the record, run by ``tokenizers`` - must give the same
ids for every text and decode them to the same strings. No torch here: SmolLM2's tokenizer comes
from the fixture cache (built with torch only when the cache is empty), the tiny tokenizers are
trained with ``tokenizers`` at test time.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer
from tokenizers.pre_tokenizers import ByteLevel
from tokenizer_corpus import corpus

from bumpconv.format.engine_tokenizer import engine_template, engine_tokenizer_warnings
from bumpconv.conversion.tokenizer_section import build_tokenizer_section
from bumpconv.format.errors import TokenizerError, VocabError
from bumpconv.format.tokenizer_meta import TokenizerMeta, rebuild_tokenizer_json
from bumpconv.format.vocab import BYTE_TO_UNICODE, UNICODE_TO_BYTE, VocabArrays, padding_token
from bumpconv.run.tokenizer import tokenizer_from_document
from tools.fixtures import _BASE, tiny_tokenizer

CORPUS = corpus()
ROWS = _BASE["vocab_size"]
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


# --- tokenizer variants: the tiny tokenizers re-plumbed like other published checkpoints -------

def _qwen2(doc: dict[str, Any]) -> None:
    """Qwen2: NFC, single digits, no ignore_merges."""
    doc["normalizer"] = {"type": "NFC"}
    doc["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {"Regex": QWEN2_SPLIT}
    doc["model"]["ignore_merges"] = False


def _digits_gpt2(doc: dict[str, Any]) -> None:
    """SmolLM2 as published: individual digits, then ByteLevel with GPT-2's regex (here with
    add_prefix_space too)."""
    doc["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}]}


def _metaspace_first(doc: dict[str, Any]) -> None:
    """Mistral / non-legacy Llama: no normalizer, Metaspace prepending only at the start."""
    doc["normalizer"] = None
    doc["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first",
                            "split": False}


def _metaspace_split(doc: dict[str, Any]) -> None:
    """Metaspace splitting into words, prepending always, and its own decoder."""
    doc["normalizer"] = None
    doc["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always",
                            "split": True}
    doc["decoder"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always",
                      "split": True}


def _flags(doc: dict[str, Any]) -> None:
    """Added tokens with every matching flag: lstrip, rstrip, single_word, normalized."""
    n = 1 + max([*doc["model"]["vocab"].values(), *(t["id"] for t in doc["added_tokens"])])
    flags = [("<mask>", dict(lstrip=True, special=True)), ("[SEP]", dict(rstrip=True)),
             ("foo", dict(single_word=True, normalized=True)), ("bar", dict(normalized=True))]
    for k, (content, kw) in enumerate(flags):
        tok = dict(id=n + k, content=content, single_word=False, lstrip=False, rstrip=False,
                   normalized=False, special=False)
        doc["added_tokens"].append({**tok, **kw})


VARIANTS: dict[str, tuple[str, Callable[[dict[str, Any]], None] | None]] = {
    "smollm2": ("smollm2", None),
    "byte-level": ("byte-level", None),
    "sentencepiece": ("sentencepiece", None),
    "byte-level-qwen2": ("byte-level", _qwen2),
    "byte-level-digits-gpt2": ("byte-level", _digits_gpt2),
    "byte-level-flags": ("byte-level", _flags),
    "sentencepiece-metaspace-first": ("sentencepiece", _metaspace_first),
    "sentencepiece-metaspace-split": ("sentencepiece", _metaspace_split),
    "sentencepiece-flags": ("sentencepiece", _flags),
    "gemma": ("gemma", None),
}


def carried(arrays: VocabArrays, meta: TokenizerMeta) -> Tokenizer:
    """What ``bumpconv run`` encodes with
    (:func:`bumpconv.run.carried_tokenizer.blob_tokenizer`)."""
    return tokenizer_from_document(rebuild_tokenizer_json(arrays, meta), "test")


class Built:
    def __init__(self, source: Path, rows: int | None) -> None:
        self.source = source
        arrays, self.meta = build_tokenizer_section(source, rows)
        self.arrays = VocabArrays.from_bytes(*arrays.to_bytes())
        self.ours = carried(self.arrays, self.meta)
        self.hf = Tokenizer.from_file(str(source / "tokenizer.json"))


@pytest.fixture(scope="session")
def tok_dir(cache_dir: Path) -> Callable[[str], Path]:
    return lambda kind: tiny_tokenizer(kind, cache_dir)


@pytest.fixture(scope="module", params=list(VARIANTS))
def built(request: pytest.FixtureRequest, tok_dir: Callable[[str], Path],
          tmp_path_factory: pytest.TempPathFactory) -> Built:
    base, change = VARIANTS[request.param]
    if base == "smollm2":
        return Built(request.getfixturevalue("smol"), None)
    src = tok_dir(base)
    if change is None:
        return Built(src, ROWS)
    out = tmp_path_factory.mktemp(request.param)
    for f in src.iterdir():
        shutil.copy(f, out / f.name)
    doc = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    change(doc)
    (out / "tokenizer.json").write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    size = 1 + max([*doc["model"]["vocab"].values(), *(t["id"] for t in doc["added_tokens"])])
    return Built(out, max(ROWS, size))


# --- the encoder against tokenizers --------------------------------------------------------------

def _mismatches(b: Built, add_special_tokens: bool) -> list[str]:
    out = []
    for s in CORPUS:
        ours = b.ours.encode(s, add_special_tokens=add_special_tokens).ids
        ref = b.hf.encode(s, add_special_tokens=add_special_tokens).ids
        if ours != ref:
            out.append(f"{s!r}: {ours[:12]} != {ref[:12]}")
    return out


@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_ids_match_tokenizers_on_the_whole_corpus(built: Built, add_special_tokens: bool) -> None:
    assert len(CORPUS) >= 1000
    bad = _mismatches(built, add_special_tokens)
    assert not bad, f"{len(bad)}/{len(CORPUS)} texts differ, e.g.\n" + "\n".join(bad[:5])


def test_decode_matches_tokenizers_and_round_trips(built: Built) -> None:
    """decode(encode(s)) == s wherever tokenizers' own decode gives s back; everywhere, the
    same string as tokenizers' decode (with and without special tokens)."""
    hf_lossy = 0
    for s in CORPUS:
        ids = built.hf.encode(s, add_special_tokens=False).ids
        for skip in (False, True):
            assert built.ours.decode(ids, skip_special_tokens=skip) == \
                built.hf.decode(ids, skip_special_tokens=skip), (s, skip)
        if built.hf.decode(ids, skip_special_tokens=False) == s:
            ours = built.ours.encode(s, add_special_tokens=False).ids
            assert built.ours.decode(ours, skip_special_tokens=False) == s
        else:
            hf_lossy += 1
    print(f"{built.source.name}: tokenizers' decode does not give back {hf_lossy} of "
          f"{len(CORPUS)} texts")


def test_decode_drops_ids_without_a_token(built: Built) -> None:
    ids = built.ours.encode("Hello world", add_special_tokens=False).ids
    padding = [i for i in range(built.arrays.vocab_size)
               if built.arrays.strings[i] == padding_token(i)]
    assert built.ours.decode(padding + ids + [built.arrays.vocab_size + 5],
                             skip_special_tokens=False) == \
        built.hf.decode(ids, skip_special_tokens=False)


# --- arrays and record ---------------------------------------------------------------------------

def test_arrays_bytes_round_trip_and_sizes(built: Built) -> None:
    a = built.arrays
    offsets, strings, merges = a.to_bytes()
    assert len(offsets) == 4 * a.vocab_size and len(merges) == 12 * a.num_merges
    assert len(strings) == a.total_vocab_bytes and strings.count(0) == a.vocab_size
    assert VocabArrays.from_bytes(offsets, strings, merges) == a


def test_record_and_arrays_rebuild_tokenizer_json(built: Built) -> None:
    doc = json.loads((built.source / "tokenizer.json").read_text(encoding="utf-8"))
    assert rebuild_tokenizer_json(built.arrays, built.meta) == doc
    assert "vocab" not in built.meta.tokenizer_json["model"]
    again = TokenizerMeta.model_validate_json(built.meta.model_dump_json())
    assert again == built.meta


def test_smollm2_section(smol: Path) -> None:
    arrays, meta = build_tokenizer_section(smol)
    cfg = json.loads((smol / "config.json").read_text())
    assert arrays.vocab_size == cfg["vocab_size"] and meta.kind == "byte_level_bpe"
    assert arrays.strings[arrays.merges[0][2]] == "Ġt"  # stored as tokenizer.json spells it
    assert meta.eos_token_ids == [2] and meta.chat_template is not None
    assert all(t["content"] == arrays.strings[t["id"]] for t in meta.added_tokens)


def test_tiny_tokenizers_fit_the_tiny_models_and_train_deterministically(
        tok_dir: Callable[[str], Path], tmp_path: Path) -> None:
    bl, bl_meta = build_tokenizer_section(tok_dir("byte-level"), ROWS)
    assert bl_meta.model_vocab_ids == [(0, 505)]  # Llama 3's layout: specials after the BPE
    assert [t["id"] for t in bl_meta.added_tokens] == list(range(505, 510))
    assert bl.strings[510:] == tuple(padding_token(i) for i in range(510, ROWS))
    assert bl_meta.eos_token_ids == [506, 509] and bl_meta.bos_token_id == 505
    sp, sp_meta = build_tokenizer_section(tok_dir("sentencepiece"), ROWS)
    assert sp.strings[:4] == ("<unk>", "<s>", "</s>", "<0x00>") and sp.vocab_size == ROWS
    assert sp_meta.kind == "sentencepiece_bpe" and "[INST]" in sp_meta.chat_template
    gm, gm_meta = build_tokenizer_section(tok_dir("gemma"), ROWS)
    assert gm.strings[:8] == ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>",
                              "<end_of_turn>", "<0x00>") and gm.vocab_size == ROWS
    assert gm_meta.kind == "sentencepiece_bpe" and "<start_of_turn>" in gm_meta.chat_template
    assert gm_meta.bos_token_id == 2 and gm_meta.eos_token_ids == [1, 6]
    for kind in ("byte-level", "sentencepiece", "gemma"):
        again = tiny_tokenizer(kind, tmp_path)
        for f in tok_dir(kind).iterdir():
            assert (again / f.name).read_bytes() == f.read_bytes(), (kind, f.name)


def test_byte_alphabet_is_gpt2s() -> None:
    assert set(BYTE_TO_UNICODE) == set(ByteLevel.alphabet()) and len(set(BYTE_TO_UNICODE)) == 256
    assert (BYTE_TO_UNICODE[ord(" ")], BYTE_TO_UNICODE[ord("\n")], BYTE_TO_UNICODE[0xAD]) == \
        ("Ġ", "Ċ", "Ń")
    assert all(UNICODE_TO_BYTE[c] == b for b, c in enumerate(BYTE_TO_UNICODE))


def test_merge_triples_keep_the_engine_contract(built: Built) -> None:
    """What the engine's C tokenizer reads from the arrays alone: merge k (rank k, in
    tokenizer.json's order) joins ``strings[left]`` and ``strings[right]`` into token
    ``merged``, whose string is their concatenation."""
    doc = json.loads((built.source / "tokenizer.json").read_text(encoding="utf-8"))
    spelled = [m.split(" ") if isinstance(m, str) else m for m in doc["model"]["merges"]]
    strings = built.arrays.strings
    assert len(built.arrays.merges) == len(spelled)
    for (left, right, merged), (a, b) in zip(built.arrays.merges, spelled):
        assert (strings[left], strings[right]) == (a, b)
        assert strings[merged] == a + b and doc["model"]["vocab"][a + b] == merged


# --- VocabArrays errors --------------------------------------------------------------------------

def test_vocab_arrays_round_trip_edge_strings() -> None:
    a = VocabArrays(strings=("", "a", "é", "🙂", "<0x0A>"), merges=((1, 2, 3),))
    assert VocabArrays.from_bytes(*a.to_bytes()) == a


@pytest.mark.parametrize("strings, merges, message", [
    ((), (), "vocab_strings: the vocabulary is empty"),
    (("a", "b\0c"), (), "vocab_strings[1]: token 'b\\x00c' contains a NUL"),
    (("a", "b"), ((0, 1, 2),), "vocab_merges[0]: (0, 1, 2) is not three token ids below the "
                               "vocabulary size 2"),
    (("a", "b"), ((0, 1, 1), (0, -1, 1)), "vocab_merges[1]"),
])
def test_vocab_arrays_refuse(strings: tuple[str, ...], merges: tuple[tuple[int, ...], ...],
                             message: str) -> None:
    with pytest.raises(VocabError) as e:
        VocabArrays(strings=strings, merges=merges)  # type: ignore[arg-type]
    assert message in str(e.value)


def _damaged(damage: Callable[[bytearray, bytearray, bytearray], None]) -> tuple[bytes, ...]:
    o, s, m = (bytearray(x) for x in VocabArrays(strings=("a", "bc", "abc"),
                                                  merges=((0, 1, 2),)).to_bytes())
    damage(o, s, m)
    return bytes(o), bytes(s), bytes(m)


@pytest.mark.parametrize("damage, message", [
    (lambda o, s, m: o.extend(b"\0"), "vocab_offsets: 13 bytes is not a whole number of i32"),
    (lambda o, s, m: m.extend(b"\0"), "vocab_merges: 13 bytes is not a whole number"),
    (lambda o, s, m: s.pop(), "vocab_strings: does not end with a NUL"),
    (lambda o, s, m: o.__setitem__(4, 3), "vocab_offsets[1]: 3, but vocab_strings puts string 1 "
                                          "at 2"),
    (lambda o, s, m: o.__delitem__(slice(8, 12)), "vocab_offsets[2]: none, but vocab_strings puts"
                                                  " string 2 at 5 (2 offsets, 3 strings)"),
    (lambda o, s, m: o.extend(b"\x09\0\0\0"), "vocab_offsets[3]: 9, but vocab_strings puts string"
                                              " 3 at none"),
    (lambda o, s, m: s.__setitem__(2, 0xFF), "vocab_strings[1]: not valid UTF-8 (invalid start "
                                             "byte at byte 2)"),
    (lambda o, s, m: m.__setitem__(4, 7), "vocab_merges[0]: (0, 7, 2)"),
    (lambda o, s, m: o.clear(), "vocab_offsets: empty"),
])
def test_vocab_arrays_from_bytes_refuse(damage: Callable[..., None], message: str) -> None:
    with pytest.raises(VocabError) as e:
        VocabArrays.from_bytes(*_damaged(damage))
    assert message in str(e.value)


# --- builder errors ------------------------------------------------------------------------------

def _mini() -> dict[str, Any]:
    """A minimal byte-level BPE tokenizer.json: a, b, c, ab, abc."""
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4},
                  "merges": [["a", "b"], ["ab", "c"]]}}


def _write(d: Path, doc: dict[str, Any] | None, **files: Any) -> Path:
    d.mkdir(exist_ok=True)
    if doc is not None:
        (d / "tokenizer.json").write_text(json.dumps(doc), encoding="utf-8")
    for name, obj in files.items():
        text = obj if isinstance(obj, str) else json.dumps(obj)
        (d / f"{name}.json").write_text(text, encoding="utf-8")
    return d


def test_mini_tokenizer_builds_and_encodes(tmp_path: Path) -> None:
    arrays, meta = build_tokenizer_section(_write(tmp_path / "t", _mini()), 8)
    assert arrays.merges == ((0, 1, 3), (3, 2, 4)) and arrays.strings[5] == padding_token(5)
    assert carried(arrays, meta).encode("abcab").ids == [4, 3]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        *parents, key = path.split(".")
        for p in parents:
            doc = doc[p]
        doc[key] = value
    return change


def _added(i: int, content: str) -> dict[str, Any]:
    return dict(id=i, content=content, single_word=False, lstrip=False, rstrip=False,
                normalized=False, special=True)


BAD_TOKENIZERS = [
    ("missing-part", _set("model.merges", [["a", "b"], ["c", "x"]]),
     "model.merges[1]: 'c' + 'x' cannot be represented: 'x', 'cx' not in model.vocab"),
    ("missing-result", _set("model.merges", [["b", "c"]]),
     "model.merges[0]: 'b' + 'c' cannot be represented: 'bc' not in model.vocab"),
    ("repeated-merge", _set("model.merges", [["a", "b"], ["ab", "c"], ["a", "b"]]),
     "model.merges[2]: 'a' + 'b' repeats model.merges[0]"),
    ("three-part-merge", _set("model.merges", ["a b c"]), "model.merges[0]: 'a b c' is not two"),
    ("nul-token", _set("model", {**_mini()["model"], "vocab": {"a": 0, "b\0": 1}, "merges": []}),
     "vocab_strings[1]: token 'b\\x00' contains a NUL"),
    ("hole", _set("model.vocab", {"a": 0, "b": 1, "c": 4, "d": 6}),
     "no token has id(s) 2, 3, 5 (the vocabulary has holes)"),
    ("shared-id", _set("model.vocab", {"a": 0, "b": 0}), "model.vocab: id 0 is both 'a' and 'b'"),
    ("past-rows", _set("model.vocab", {"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 9}),
     "1 token(s) have ids past the embedding's 8 rows: 'abc' (9)"),
    ("added-id-clash", _set("added_tokens", [_added(1, "<x>")]),
     "added_tokens[0]: id 1 is '<x>' here but 'b' in model.vocab"),
    ("added-content-clash", _set("added_tokens", [_added(6, "a")]),
     "added_tokens[0]: 'a' has id 6, but model.vocab gives it id 0"),
    ("added-twice", _set("added_tokens", [_added(5, "<x>"), _added(6, "<x>")]),
     "ids 5 and 6 are both '<x>'"),
    ("padding-clash", _set("added_tokens", [_added(5, padding_token(6))]),
     "ids 5 and 6 are both '<|bumpconv_unused_6|>' (a padding-row string)"),
    ("wordpiece", _set("model.type", "WordPiece"), "model: WordPiece tokenizers are not supported"),
    ("unigram", _set("model.type", "Unigram"), "model: Unigram tokenizers are not supported"),
    ("dropout", _set("model.dropout", 0.1), "model.dropout: 0.1"),
    ("suffix", _set("model.end_of_word_suffix", "</w>"), "model.end_of_word_suffix: '</w>'"),
    ("truncation", _set("truncation", {"max_length": 8}), "truncation: set"),
    ("whitespace", _set("pre_tokenizer", {"type": "Whitespace"}),
     "pre_tokenizer: type 'Whitespace' is not supported"),
    ("nested", _set("pre_tokenizer", {"type": "Sequence", "pretokenizers": [
        {"type": "ByteLevel"}, {"type": "Punctuation"}]}),
     "pre_tokenizer.pretokenizers[1]: type 'Punctuation' is not supported"),
    ("split-removed", _set("pre_tokenizer", {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "x"}, "behavior": "Removed", "invert": False},
        {"type": "ByteLevel"}]}), "Split with behavior 'Removed'"),
    ("lowercase", _set("normalizer", {"type": "Lowercase"}), "normalizer: type 'Lowercase'"),
    ("roberta", _set("post_processor", {"type": "RobertaProcessing"}),
     "post_processor: type 'RobertaProcessing'"),
    ("no-byte-handling", _set("pre_tokenizer", None), "neither a ByteLevel pre-tokenizer nor"),
]


@pytest.mark.parametrize("change, message", [c[1:] for c in BAD_TOKENIZERS],
                         ids=[c[0] for c in BAD_TOKENIZERS])
def test_builder_names_what_cannot_be_represented(tmp_path: Path, change: Callable[..., None],
                                                  message: str) -> None:
    doc = _mini()
    change(doc)
    with pytest.raises((TokenizerError, VocabError)) as e:
        build_tokenizer_section(_write(tmp_path / "t", doc), 8)
    assert message in str(e.value)


@pytest.mark.parametrize("files, message", [
    ({"generation_config": {"eos_token_id": [2, 99]}}, "eos_token_ids: 99 is outside"),
    ({"tokenizer_config": {"eos_token": "<nope>"}}, "tokenizer_config.json eos_token: '<nope>' "
                                                     "is not a token"),
    ({"config": {"eos_token_id": "x"}}, "config.json eos_token_id: 'x' is not an integer"),
    ({"tokenizer_config": "{not json"}, "tokenizer_config.json: not valid JSON"),
])
def test_builder_checks_the_other_files(tmp_path: Path, files: dict[str, Any],
                                        message: str) -> None:
    with pytest.raises(TokenizerError) as e:
        build_tokenizer_section(_write(tmp_path / "t", _mini(), **files), 8)
    assert message in str(e.value)


def test_builder_needs_tokenizer_json_and_a_vocab_size(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="tokenizer.json: not found"):
        build_tokenizer_section(_write(tmp_path / "a", None), 8)
    with pytest.raises(TokenizerError, match="config.json: not found"):
        build_tokenizer_section(_write(tmp_path / "b", _mini()))
    with pytest.raises(TokenizerError, match="config.json vocab_size: None"):
        build_tokenizer_section(_write(tmp_path / "c", _mini(), config={}))


def test_special_ids_come_from_every_source(tmp_path: Path) -> None:
    doc = _mini()
    doc["added_tokens"] = [_added(5, "<eot>"), _added(6, "<eos>")]
    src = _write(tmp_path / "t", doc, config={"vocab_size": 8, "bos_token_id": 0,
                                              "eos_token_id": 6},
                 generation_config={"eos_token_id": [5, 6]},
                 tokenizer_config={"eos_token": {"content": "c"}, "pad_token": None})
    (src / "chat_template.jinja").write_text("{{ messages }}")
    arrays, meta = build_tokenizer_section(src)
    assert (meta.bos_token_id, meta.eos_token_ids, meta.pad_token_id) == (0, [5, 6, 2], None)
    assert meta.chat_template == "{{ messages }}" and arrays.vocab_size == 8


# --- what the engine's own tokenizer would do ----------------------------------------------------

def test_engine_warnings_for_byte_level_on_the_llama_template(smol: Path) -> None:
    _, meta = build_tokenizer_section(smol)
    warnings = engine_tokenizer_warnings(meta, engine_template("llama"))
    assert '"tokenizer_contract": {"tokenizer_type": "bpe"}' in warnings[0]
    assert "byte-level BPE" in warnings[0]
    assert any("0x7F-0xA0 and 0xAD" in w for w in warnings)
    assert any("<repo_name>" in w and "plain text" in w for w in warnings)
    assert not any("post-processor" in w for w in warnings)  # SmolLM2 adds no BOS
    on_bpe = engine_tokenizer_warnings(meta, "llama", tokenizer_type="bpe")
    assert on_bpe == warnings[1:]


def test_engine_warnings_follow_template_and_tokenizer(tok_dir: Callable[[str], Path]) -> None:
    _, bl = build_tokenizer_section(tok_dir("byte-level"), ROWS)
    assert engine_template("qwen2") == "qwen2" and engine_template("mistral") == "llama"
    qwen = engine_tokenizer_warnings(bl, engine_template("qwen2"))
    assert not any("tokenizer_contract" in w for w in qwen)
    assert any("<|start_header_id|>, <|end_header_id|>" in w for w in qwen)
    assert any("id(s) [505]" in w and '"bos_token_id": 505' in w for w in qwen)
    _, sp = build_tokenizer_section(tok_dir("sentencepiece"), ROWS)
    spm = engine_tokenizer_warnings(sp, engine_template("mistral"))
    assert "SentencePiece-style BPE" in spm[0] and "tokenizer_contract" in spm[0]
    assert any("'▁'" in w and "Prepend normalizer" in w for w in spm)
    assert any("(<unk>)" in w for w in spm)
    assert not any("0x7F" in w for w in spm)


def test_tokenizer_modules_import_no_torch(tmp_path: Path) -> None:
    code = ("import sys; from pathlib import Path; "
            "from tools.fixtures import tiny_tokenizer; "
            "from bumpconv.conversion.tokenizer_section import build_tokenizer_section; "
            "from bumpconv.format.engine_tokenizer import engine_tokenizer_warnings; "
            "from bumpconv.format.tokenizer_meta import rebuild_tokenizer_json; "
            "from bumpconv.run.tokenizer import tokenizer_from_document; "
            f"src = tiny_tokenizer('sentencepiece', Path({str(tmp_path)!r})); "
            "a, m = build_tokenizer_section(src, 517); "
            "tokenizer_from_document(rebuild_tokenizer_json(a, m), 'x').encode('hi'); "
            "engine_tokenizer_warnings(m, 'llama'); "
            "bad = [x for x in ('torch', 'transformers') if x in sys.modules]; "
            "print(bad); sys.exit(bool(bad))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stdout + r.stderr
