"""The C runtime against transformers on every tiny architecture: logits at every position,
stage taps, hidden states, KV-cache decoding, both profiles, and refused input."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from bumpconv.format.errors import BlobError, BumpError, ConfigError, RuntimeInputError
from bumpconv.blob.reader import open_blob
from bumpconv.format.errors import NativeUnavailableError
from bumpconv.native import load_native
from bumpconv.format.stages import tap_shapes
from bumpconv.run.runtime import BumpModel
from runtime_helpers import MODELS, V3_MODELS, convert, hf_taps, prompt_ids

#: Every test here runs once per kernel level (conftest.py, kernel_level).
pytestmark = pytest.mark.usefixtures("kernel_level")

#: fp32 with a different summation order than torch: ~1e-5 is typical on these models.
LOGIT_TOL = 1e-4
#: Decode (GEMV) and prefill (blocked GEMM) sum in different orders: fp32 rounding only.
DECODE_TOL = 1e-5
#: Long enough to cross Mistral's window (24) and llama3-scaled's original context (16) twice.
N = 64


@pytest.fixture(scope="session")
def blob(tiny: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
         ) -> Callable[..., Path]:
    """``blob(name, fmt="bumpwgt5")``: the tiny checkpoint converted once per session."""
    made: dict[tuple[str, str], Path] = {}
    root = tmp_path_factory.mktemp("runtime-blobs")

    def get(name: str, fmt: str = "bumpwgt5") -> Path:
        if (name, fmt) not in made:
            made[(name, fmt)] = convert(tiny(name), root / f"{name}.{fmt}.bump", fmt)
        return made[(name, fmt)]
    return get


def assert_close(run: np.ndarray, ref: np.ndarray, key: str, rel: float = LOGIT_TOL) -> None:
    """|run - ref| <= rel * max(1, max|ref|), with -inf exactly where the reference has it."""
    assert run.shape == ref.shape, f"{key}: shape {run.shape} != {ref.shape}"
    finite = np.isfinite(ref)
    assert np.array_equal(np.isfinite(run), finite), f"{key}: -inf pattern differs"
    assert np.array_equal(run[~finite], ref[~finite]), f"{key}: non-finite values differ"
    diff = np.abs(run[finite] - ref[finite]).max()
    bound = rel * max(1.0, float(np.abs(ref[finite]).max()))
    assert diff <= bound, f"{key}: max abs diff {diff:.3g} > {bound:.3g}"


@pytest.mark.parametrize("name", MODELS)
def test_logits_match_transformers_at_every_position(name: str, tiny, blob, hf) -> None:
    ref = hf(tiny(name))
    tokens = prompt_ids(ref.spec.vocab_size, N)
    with BumpModel.open(blob(name)) as m:
        logits = m.forward(tokens)
    expected = ref.run(tokens).logits
    assert logits.shape == (N, ref.spec.vocab_size)
    assert np.abs(logits - expected).max() <= LOGIT_TOL
    assert np.array_equal(logits.argmax(1), expected.argmax(1))


@pytest.mark.parametrize("name", V3_MODELS)
def test_bumpwgt3_blob_with_config_matches_transformers(name: str, tiny, blob, hf) -> None:
    src = tiny(name)
    ref = hf(src)
    tokens = prompt_ids(ref.spec.vocab_size, 40, seed=1)
    with BumpModel.open(blob(name, "bumpwgt3"), config=src / "config.json") as m:
        assert m.spec.rms_norm_eps == ref.spec.rms_norm_eps
        logits = m.forward(tokens)
    assert np.abs(logits - ref.run(tokens).logits).max() <= LOGIT_TOL


def test_linear_rope_scaling_matches_transformers(tiny_copy, tmp_path: Path, hf) -> None:
    """No fixture model uses rope_type "linear": make one by editing a config."""
    src = tiny_copy("llama-untied")
    cfg = json.loads((src / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "linear", "factor": 4.0, "rope_theta": 500000.0}
    (src / "config.json").write_text(json.dumps(cfg))
    ref = hf(src)
    tokens = prompt_ids(ref.spec.vocab_size, N, seed=8)
    with BumpModel.open(convert(src, tmp_path / "linear.bump")) as m:
        assert m.spec.rope.type == "linear"
        logits = m.forward(tokens)
    assert np.abs(logits - ref.run(tokens).logits).max() <= LOGIT_TOL


def test_unsupported_rope_type_is_refused_by_name(tiny, blob, tmp_path: Path) -> None:
    cfg = json.loads((tiny("llama-tied") / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0}
    config = tmp_path / "config.json"
    config.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="'yarn'"):
        BumpModel.open(blob("llama-tied", "bumpwgt3"), config=config)


def test_bumpwgt3_blob_without_config_is_refused(blob) -> None:
    with pytest.raises(BlobError, match="config.json"):
        BumpModel.open(blob("llama-tied", "bumpwgt3"))


@pytest.mark.parametrize("name", MODELS)
def test_decode_steps_equal_the_full_forward(name: str, blob) -> None:
    with BumpModel.open(blob(name)) as m:
        tokens = prompt_ids(m.spec.vocab_size, 48, seed=2)
        full = m.forward(tokens)
        assert_close(m.prefill(tokens[:5]), full[4], "prefill", DECODE_TOL)
        for pos in range(5, len(tokens)):
            assert_close(m.decode(int(tokens[pos])), full[pos], f"position {pos}", DECODE_TOL)


def test_forward_in_chunks_appends_to_the_cache(blob) -> None:
    with BumpModel.open(blob("mistral")) as m:
        tokens = prompt_ids(m.spec.vocab_size, 50, seed=3)
        full = m.forward(tokens)
        m.reset()
        parts = [m.forward(tokens[:20]), m.forward(tokens[20:45], start_pos=20),
                 m.forward(tokens[45:], start_pos=45, all_logits=False)]
    assert_close(np.concatenate(parts[:2]), full[:45], "chunks", DECODE_TOL)
    assert parts[2].shape == (1, full.shape[1])
    assert_close(parts[2][0], full[-1], "last", DECODE_TOL)


@pytest.mark.parametrize("name", ["qwen3", "mistral", "qwen2", "llama-gqa-pad", "llama3-scaled",
                                  "gemma3-pad", "gemma3-softcap"])
def test_stage_taps_match_transformers(name: str, tiny, blob, hf) -> None:
    ref = hf(tiny(name))
    tokens = prompt_ids(ref.spec.vocab_size, 40, seed=4)
    layer = ref.spec.num_layers - 1
    with BumpModel.open(blob(name)) as m:
        taps = m.taps(tokens, layer)
        spec = m.spec
    expected = hf_taps(ref, tokens, layer)
    shapes = tap_shapes(spec.dims(), spec.flags(), len(tokens))
    assert set(taps) == set(shapes) | {"logits"}
    gemma = name.startswith("gemma3")
    assert ("q_norm" in taps) == (name == "qwen3" or gemma)
    assert ("post_attention_norm" in taps) == ("post_ffn_norm" in taps) == gemma
    for key, shape in shapes.items():
        assert taps[key].shape == shape, key
        assert_close(taps[key], expected[key], key)
    assert_close(taps["logits"], ref.run(tokens).logits, "logits")
    probs = taps["probs"]
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert np.all(probs[np.isneginf(taps["scores"])] == 0)


@pytest.mark.parametrize("name", ["qwen2", "gemma3-pad"])  # Gemma: embeddings scaled
def test_hidden_states_match_transformers(name: str, tiny, blob, hf) -> None:
    ref = hf(tiny(name))
    tokens = prompt_ids(ref.spec.vocab_size, 30, seed=5)
    with BumpModel.open(blob(name)) as m:
        hidden = m.hidden_states(tokens)
    assert hidden.shape == (ref.spec.num_layers + 1, 30, ref.spec.hidden_size)
    assert_close(hidden, ref.run(tokens).hidden_states, "hidden")


def test_interleaved_rope_fault_changes_rope_and_nothing_before(blob) -> None:
    path = blob("llama-untied")
    with BumpModel.open(path) as good, BumpModel.open(path, rope_pairing="interleaved") as bad:
        tokens = prompt_ids(good.spec.vocab_size, 24, seed=6)
        a, b = good.taps(tokens, 0), bad.taps(tokens, 0)
    for key in ("ln1", "q", "k", "v"):
        assert np.array_equal(a[key], b[key]), key
    # position 0 has angle 0 for every pair, so only later positions can differ
    assert np.abs(a["q_rope"] - b["q_rope"]).max() > 0.1
    assert np.abs(a["logits"] - b["logits"]).max() > 0.1
    with pytest.raises(ValueError, match="rope_pairing"):
        BumpModel.open(path, rope_pairing="gptj")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [[-1], [517], [2**31 + 3], [2**32 + 5], [2**70], [1.0], [True],
                                 np.array([2**63], dtype=np.uint64), [[1, 2]], []])
def test_out_of_range_tokens_are_refused_not_wrapped(bad: object, blob) -> None:
    with BumpModel.open(blob("llama-untied")) as m:
        m.forward([1, 2, 3])
        with pytest.raises(RuntimeInputError):
            m.forward(bad, start_pos=3)  # type: ignore[arg-type]
        # the cache is untouched: position 3 is still the next one
        m.forward([4], start_pos=3)


def test_c_refuses_out_of_range_ids_on_its_own(blob) -> None:
    with BumpModel.open(blob("llama-untied")) as m:
        for ids in ([517], [-1], [5, 1 << 30]):
            with pytest.raises(RuntimeInputError, match=r"outside \[0, 517\)"):
                m._forward_ids(np.array(ids, np.int32), 0, True)


def test_context_and_start_pos_limits(blob) -> None:
    with BumpModel.open(blob("qwen2")) as m:
        T = m.spec.context_length
        with pytest.raises(RuntimeInputError, match="context"):
            m.forward(np.zeros(T + 1, np.int64))
        with pytest.raises(RuntimeInputError, match="start_pos"):
            m.forward([1, 2], start_pos=4)
        m.prefill(np.ones(T, np.int64))
        with pytest.raises(RuntimeInputError, match="context"):
            m.decode(1)
        with pytest.raises(RuntimeInputError, match="layer"):
            m.taps([1, 2], layer=m.spec.num_layers)


def test_thread_count_does_not_change_results(blob) -> None:
    path = blob("qwen3")
    with BumpModel.open(path, threads=1) as one, BumpModel.open(path, threads=2) as two:
        assert (one.threads, two.threads) == (1, 2)
        tokens = prompt_ids(one.spec.vocab_size, 33, seed=7)
        assert np.array_equal(one.forward(tokens), two.forward(tokens))
    with pytest.raises(ValueError, match="threads"):
        BumpModel.open(path, threads=0)


def test_verify_checks_the_checksums(blob, tmp_path: Path) -> None:
    path = tmp_path / "flipped.bump"
    data = bytearray(blob("qwen2").read_bytes())
    with BumpModel.open(blob("qwen2"), check=True), open_blob(blob("qwen2")) as bf:
        w1 = bf.by_name["layer.1.w1"]
    data[w1.offset + w1.nbytes // 3] ^= 0x40  # a real weight, not padding
    path.write_bytes(bytes(data))
    with BumpModel.open(path) as m:  # a payload flip is only visible to the checksum
        assert m.forward([1, 2, 3]).shape == (3, m.spec.vocab_size)
    with pytest.raises(BlobError, match="checksum"):
        BumpModel.open(path, check=True)


def test_close_is_idempotent_and_final(blob) -> None:
    m = BumpModel.open(blob("llama-tied"))
    m.close()
    m.close()
    with pytest.raises(ValueError, match="closed"):
        m.forward([1])
    assert "closed" in repr(m)


def test_missing_extension_is_a_clear_error(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(NativeUnavailableError, match="no _native extension") as info:
        load_native(str(tmp_path))
    assert isinstance(info.value, BumpError) and isinstance(info.value, ImportError)
    monkeypatch.setitem(sys.modules, "bumpconv._native", None)  # as if never built
    with pytest.raises(NativeUnavailableError, match="pip install -e"):
        load_native.__wrapped__(None)
