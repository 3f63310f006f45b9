"""The HF reference side: do the hooks capture the tensors docs/runtime-api.md names?

Each check relates captured tensors through an identity that holds inside HF's own forward
pass (a residual sum, a projection, position 0 of RoPE being the identity, the causal and
sliding windows), so a hook on the wrong module or the wrong side of a module fails here.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from bumpconv.format.errors import ConfigError
from tools.fixtures import smollm2
from bumpconv.comparison.reference import (DEFAULT_PROMPTS, SYNTHETIC_LENGTHS, Reference,
                                ReferenceSetupError, tokenize_prompts)

#: Every test here loads transformers.
pytestmark = pytest.mark.model


@pytest.fixture
def loaded(tiny: Callable[..., Path], hf: Callable[[Path], Reference]) -> Callable[[str], Reference]:
    """A tiny model's reference, from the session's ``hf`` fixture."""
    return lambda name: hf(tiny(name))


@pytest.mark.parametrize("name", ["llama-gqa-pad", "mistral", "qwen2", "qwen3", "llama3-scaled"])
def test_captured_stages_fit_together_as_in_hf_forward(name: str, loaded) -> None:
    ref = loaded(name)
    spec = ref.spec
    ids = list(range(1, 41))
    last = spec.num_layers - 1
    run = ref.run(ids, [0, last])
    assert run.hidden_states.shape == (spec.num_layers + 1, 40, spec.hidden_size)
    for layer in (0, last):
        s = run.stages[layer]
        attn = ref.layers[layer].self_attn
        assert s["q"].shape == (40, spec.num_heads, spec.head_dim)
        assert s["k"].shape == s["v"].shape == (40, spec.num_kv_heads, spec.head_dim)
        assert s["scores"].shape == s["probs"].shape == (spec.num_heads, 40, 40)
        np.testing.assert_array_equal(s["out"], run.hidden_states[layer + 1])
        np.testing.assert_array_equal(s["resid1"], run.hidden_states[layer] + s["wo"])
        np.testing.assert_array_equal(s["out"], s["resid1"] + s["down"])
        w_o = attn.o_proj.weight.detach().numpy()
        np.testing.assert_allclose(s["wo"], s["attn"] @ w_o.T, rtol=1e-4, atol=1e-5)
        # RoPE at position 0 is the identity: q_rope[0] is the (normed) projection itself.
        pre = s["q_norm"] if spec.qk_norm else s["q"]
        np.testing.assert_allclose(s["q_rope"][0], pre[0], rtol=1e-6, atol=1e-6)
        assert np.abs(s["q_rope"][5] - pre[5]).max() > 1e-3
        assert ("q_norm" in s) == spec.qk_norm
        np.testing.assert_allclose(s["probs"].sum(-1), 1.0, atol=1e-5)
        with np.errstate(invalid="ignore"):
            soft = np.exp(s["scores"] - s["scores"].max(-1, keepdims=True))
        np.testing.assert_allclose(s["probs"], soft / soft.sum(-1, keepdims=True), atol=1e-6)
        i, j = np.indices((40, 40))
        masked = j > i
        if spec.sliding_window:
            masked |= j <= i - spec.sliding_window
        assert (np.isneginf(s["scores"]) == masked[None]).all()
    w_head = ref.model.lm_head.weight.detach().numpy()
    np.testing.assert_allclose(run.logits, run.final_norm @ w_head.T, rtol=1e-4, atol=1e-4)


def test_hf_last_hidden_state_entry_is_after_the_final_norm(loaded) -> None:
    """transformers 5.x puts last_hidden_state (normed) last; Reference replaces it with the
    last layer's own output. If a transformers upgrade changes this, this test says so."""
    ref = loaded("llama-untied")
    import torch
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    with torch.no_grad():
        out = ref.model(ids, output_hidden_states=True, use_cache=False)
    run = ref.run([3, 1, 4, 1, 5])
    np.testing.assert_array_equal(out.hidden_states[-1][0].numpy(), run.final_norm)
    assert np.abs(run.hidden_states[-1] - run.final_norm).max() > 1e-2
    np.testing.assert_array_equal(out.hidden_states[1][0].numpy(), run.hidden_states[1])


def test_taps_are_removed_after_a_run(loaded) -> None:
    ref = loaded("llama-tied")
    ref.run([1, 2, 3])  # transformers installs its own output-capturing hooks once, lazily
    before = [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in ref.model.modules()]
    ref.run([1, 2, 3], [0, 1])
    after = [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in ref.model.modules()]
    assert before == after


def test_an_out_of_range_layer_is_refused(loaded) -> None:
    with pytest.raises(ConfigError, match="layer 2 is out of range"):
        loaded("llama-tied").run([1, 2], [2])


def test_smollm2_prompts_tokenize_identically_on_both_sides(cache_dir: Path) -> None:
    root = smollm2(cache_dir, "fp32")
    prompts = tokenize_prompts(root, None, 49152)
    assert [p.text for p in prompts] == list(DEFAULT_PROMPTS)
    assert len(prompts[0].ids) >= 64
    assert all(p.runtime_ids == p.ids and p.first_mismatch is None for p in prompts)
    assert prompts[1].ids == (504, 3575, 282, 4649, 314)  # "The capital of France is"


def test_sources_without_a_tokenizer_get_fixed_synthetic_ids(tiny: Callable[..., Path]) -> None:
    root = tiny("qwen2")
    a = tokenize_prompts(root, None, 517)
    assert [len(p.ids) for p in a] == list(SYNTHETIC_LENGTHS)
    assert a == tokenize_prompts(root, None, 517)
    assert all(p.synthetic and 0 <= min(p.ids) and max(p.ids) < 517 for p in a)
    with pytest.raises(ConfigError, match="has no tokenizer"):
        tokenize_prompts(root, ["hello"], 517)


def test_a_checkpoint_missing_a_weight_is_refused(tiny: Callable[..., Path],
                                                  tmp_path: Path) -> None:
    src = tmp_path / "broken"
    shutil.copytree(tiny("llama-untied"), src)
    tensors = load_file(src / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ReferenceSetupError, match="up_proj.weight.*at random"):
        Reference.load(str(src))
