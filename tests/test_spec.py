"""config.json -> ModelSpec: both transformers layouts, required keys, refusals."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bumpconv.format.errors import ConfigError
from bumpconv.format.spec import spec_from_config

V5: dict[str, Any] = {
    "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "intermediate_size": 96, "vocab_size": 100,
    "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "tie_word_embeddings": True,
    "dtype": "bfloat16",
    "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                        "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                        "original_max_position_embeddings": 64},
}
V4: dict[str, Any] = {
    **{k: v for k, v in V5.items() if k not in ("rope_parameters", "dtype")},
    "torch_dtype": "bfloat16", "rope_theta": 500000.0,
    "rope_scaling": {"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
}


def test_both_config_layouts_give_the_same_spec() -> None:
    a, b = spec_from_config(V5), spec_from_config(V4)
    assert a == b
    assert a.rope.theta == 500000.0 and a.rope.type == "llama3" and a.rope.factor == 8.0
    assert a.source_dtype == "bfloat16"


def test_derived_keys_follow_transformers_and_are_recorded() -> None:
    cfg = {k: v for k, v in V5.items() if k not in ("num_key_value_heads", "tie_word_embeddings")}
    spec = spec_from_config(cfg)
    assert spec.num_kv_heads == 4 and spec.head_dim == 16 and spec.tie_word_embeddings is False
    assert set(spec.derived_keys) == {"num_key_value_heads", "head_dim", "tie_word_embeddings"}


@pytest.mark.parametrize("key", ["hidden_size", "num_hidden_layers", "num_attention_heads",
                                 "intermediate_size", "vocab_size", "max_position_embeddings",
                                 "rms_norm_eps", "model_type"])
def test_missing_required_key_is_named(key: str) -> None:
    cfg = copy.deepcopy(V5)
    del cfg[key]
    with pytest.raises(ConfigError, match=f"'{key}' is missing"):
        spec_from_config(cfg)


def test_missing_rope_theta_in_either_layout_is_an_error() -> None:
    v5 = copy.deepcopy(V5)
    del v5["rope_parameters"]["rope_theta"]
    with pytest.raises(ConfigError, match="rope_theta"):
        spec_from_config(v5)
    v4 = copy.deepcopy(V4)
    del v4["rope_theta"]
    with pytest.raises(ConfigError, match="rope_theta"):
        spec_from_config(v4)


def test_unknown_architecture_lists_the_supported_ones() -> None:
    with pytest.raises(ConfigError, match=r"'gpt2' is not supported \(supported: llama, mistral, qwen2, qwen3, gemma3_text, gemma3\)"):
        spec_from_config({**V5, "model_type": "gpt2"})


@pytest.mark.parametrize("rope_type", ["yarn", "dynamic", "longrope"])
def test_unsupported_rope_type_is_refused_by_name(rope_type: str) -> None:
    cfg = copy.deepcopy(V5)
    cfg["rope_parameters"]["rope_type"] = rope_type
    with pytest.raises(ConfigError, match=f"rope type '{rope_type}' is not supported"):
        spec_from_config(cfg)


def test_incomplete_llama3_scaling_names_the_missing_field() -> None:
    cfg = copy.deepcopy(V5)
    del cfg["rope_parameters"]["low_freq_factor"]
    with pytest.raises(ConfigError, match="low_freq_factor"):
        spec_from_config(cfg)


@pytest.mark.parametrize("patch, message", [
    ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
    ({"mlp_bias": True}, "mlp_bias"),
    ({"attention_bias": True}, "attention_bias"),
    ({"num_key_value_heads": 3}, "not a multiple"),
    ({"partial_rotary_factor": 0.5}, "partial_rotary_factor"),
    ({"hidden_size": "wide"}, "hidden_size"),
])
def test_unrepresentable_configs_are_refused(patch: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        spec_from_config({**V5, **patch})


def test_architecture_flags() -> None:
    assert spec_from_config({**V5, "model_type": "qwen2"}).qkv_bias
    q3 = spec_from_config({**V5, "model_type": "qwen3", "head_dim": 24})
    assert q3.qk_norm and q3.head_dim == 24
    with pytest.raises(ConfigError, match="'head_dim' is missing"):
        spec_from_config({**V5, "model_type": "qwen3"})
    with pytest.raises(ConfigError, match="use_sliding_window"):
        spec_from_config({**V5, "model_type": "qwen2", "use_sliding_window": True})
    assert spec_from_config({**V5, "model_type": "mistral", "sliding_window": 32}).sliding_window == 32
    assert spec_from_config({**V5, "sliding_window": 32}).sliding_window is None  # llama has none


def test_dims_are_padded_to_64_byte_rows() -> None:
    spec = spec_from_config({**V5, "hidden_size": 136, "num_attention_heads": 2,
                             "num_key_value_heads": 1, "head_dim": 72, "intermediate_size": 200})
    d = spec.dims()
    assert (d["AE"], d["AD"], d["AI"], d["AC"]) == (144, 80, 208, 128)
