"""convert --quant: the policy as data (llama.cpp's per-tensor choices, fallbacks for rows that
are not whole blocks), quantized blobs that verify block for block and check, and what profiles
refuse (fast lane: numpy-built checkpoints)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import bumpconv
from bumpconv.blob.reader import open_blob
from bumpconv.format.dtypes import DType
from bumpconv.format.profile import expand_tensors, load_profile
from bumpconv.format.quant_policy import choose_dtype, load_policies, more_bits, quant_names
from bumpconv.format.spec import spec_from_config
from bumpconv.native.quant import dequantize
from runtime_helpers import convert

SMOLLM2 = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
           "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
           "vocab_size": 49152, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
           "rope_theta": 100000.0, "tie_word_embeddings": True}


def chosen(quant: str, config: dict, profile: str = "engine-v7") -> dict[str, str]:
    spec = spec_from_config(config)
    return {s.name: choose_dtype(quant, s, spec.num_layers, spec.tie_word_embeddings).label
            for s in expand_tensors(load_profile(profile), spec.dims(), spec.flags(), spec.family)}


def test_more_bits_is_llama_cpps_layer_choice() -> None:
    assert [i for i in range(30) if more_bits(i, 30)] == [0, 1, 2, 5, 8, 11, 14, 17, 20, 23,
                                                           26, 27, 28, 29]


def test_q4_k_m_on_smollm2_makes_llama_cpps_choices() -> None:
    """576-wide rows are not whole 256-blocks: q4_k falls back to q5_0, q6_k to q8_0; the
    1536-wide rows of w2 keep the K-quants (llama-quantize's own log on this model)."""
    t = chosen("q4_k_m", SMOLLM2)
    assert t["token_emb"] == "q8_0"                     # tied: the output head's rule
    assert t["layer.0.wv"] == "q8_0" and t["layer.3.wv"] == "q5_0"
    assert t["layer.0.w2"] == "q6_k" and t["layer.3.w2"] == "q4_k"
    assert t["layer.4.wq"] == t["layer.4.wo"] == t["layer.4.w1"] == "q5_0"
    assert t["layer.4.ln1_gamma"] == "fp32" and t["final_ln_weight"] == "fp32"
    counts: dict[str, int] = {}
    for label in t.values():
        counts[label] = counts.get(label, 0) + 1
    assert counts == {"q8_0": 15, "q5_0": 136, "q6_k": 14, "q4_k": 16, "fp32": 61}


def test_rows_that_are_not_whole_blocks_fall_back_to_fp32() -> None:
    cfg = {**SMOLLM2, "hidden_size": 144, "num_attention_heads": 4, "num_key_value_heads": 2,
           "head_dim": 36, "intermediate_size": 200}
    t = chosen("q8_0", cfg)
    assert t["layer.0.wq"] == "fp32" and t["layer.0.w2"] == "fp32"   # 144, 208: not 32-multiples


def test_per_head_wo_rows_are_head_sized_in_bumpwgt5() -> None:
    """bumpwgt5 packs wo per head: its rows are AD = 64 values, not whole K-quant blocks."""
    assert chosen("q4_k", SMOLLM2, "bumpwgt5")["layer.0.wo"] == "q5_0"
    assert chosen("q4_k", SMOLLM2, "engine-v7")["layer.0.wo"] == "q5_0"  # 576: same here


def test_every_policy_names_known_types() -> None:
    policies = load_policies()
    assert set(quant_names()) >= {"q8_0", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k", "q4_k_m",
                                  "q5_k_m"}
    assert policies.last_resort == "fp32"


@pytest.mark.parametrize("quant", ["q8_0", "q4_0", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k",
                                   "q4_k_m", "q5_k_m"])
def test_quantized_blobs_verify_and_decode_close_to_the_source(quant: str, synthetic, cli,
                                                               tmp_path: Path) -> None:
    src = synthetic("llama-quant")
    blob = convert(src, tmp_path / "q.bump", "bumpwgt5", ("--quant", quant))
    assert cli("inspect", blob, "--check").code == 0
    r = cli("verify", blob, "--against", src)
    assert r.code == 0, r.err
    weights = load_file(src / "model.safetensors")
    with open_blob(blob) as bf:
        assert bf.metadata is not None and bf.metadata.bumpconv.quantization is not None
        assert bf.metadata.bumpconv.quantization.policy == quant
        w2 = bf.by_name["layer.1.w2"]
        assert w2.dtype != DType.FP32
        values = dequantize(bf.tensor_bytes(w2.name), w2.dtype, w2.slot.shape[0],
                            w2.slot.shape[1])
    down = weights["model.layers.1.mlp.down_proj.weight"]
    rel = np.abs(values[:, :down.shape[1]] - down).max() / np.abs(down).max()
    assert rel < {"q8_0": 0.01, "q6_k": 0.03, "q5_k": 0.06, "q5_0": 0.06, "q5_1": 0.06,
                  "q5_k_m": 0.06}.get(quant, 0.15)


def test_bumpwgt3_refuses_quantization(synthetic, cli, tmp_path: Path) -> None:
    r = cli("convert", synthetic("llama-tied"), tmp_path / "q.bump", "--profile", "bumpwgt3",
            "--quant", "q8_0")
    assert r.code == 1 and "quantized blobs need another profile" in r.err
    assert not list(tmp_path.iterdir())


def test_quantized_conversion_is_reproducible_and_dry_run_predicts_it(synthetic, cli,
                                                                      tmp_path: Path) -> None:
    src = synthetic("llama-quant")
    results = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        results.append(bumpconv.convert(src, tmp_path / run / "m.bump", quant="q4_k_m"))
    a, b = results
    assert a.checksum == b.checksum
    dry = cli("convert", src, tmp_path / "c.bump", "--quant", "q4_k_m", "--dry-run")
    assert f"output: {a.size:,} bytes" in dry.out and "bits per weight, --quant q4_k_m" in dry.out
    assert (tmp_path / "a" / "m.bump").read_bytes() == (tmp_path / "b" / "m.bump").read_bytes()
