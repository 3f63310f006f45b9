"""Parity's comparison arithmetic and attribution logic, on small hand-made arrays.

These need neither transformers nor the runtime: they pin down the definitions docs/parity.md
states (relative error, NMSE, KL, tie-aware top-1, -inf handling, stage order, which check a
failure is attributed to).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from bumpconv.format.errors import ParityError
from bumpconv.comparison.check import compare_specs
from bumpconv.format.stages import STAGES
from bumpconv.comparison.metrics import (ContextSweep, Thresholds, compare_logits, difference,
                                     layer_sweep, stage_diff)
from bumpconv.comparison.report import ParityReport
from bumpconv.comparison.reference import PromptTokens
from bumpconv.format.spec import ModelSpec, RopeSpec

TH = Thresholds()
PROMPT = PromptTokens(None, (1, 2, 3), None)


def test_relative_error_is_max_abs_difference_over_max_abs_reference() -> None:
    ref = np.array([[1.0, -4.0], [2.0, 0.5]], np.float32)
    run = ref + np.array([[0.0, 0.0], [0.02, 0.0]], np.float32)
    d = difference(run, ref)
    assert d.ref_max == 4.0
    assert d.max_abs == pytest.approx(0.02, rel=1e-5)
    assert d.rel == pytest.approx(0.005, rel=1e-5)
    assert d.per_position.tolist() == pytest.approx([0.0, 0.02], abs=1e-7)
    assert d.first_position_over(1e-3) == 1
    assert d.first_position_over(1e-2) is None


def test_masked_scores_compare_equal_only_when_both_sides_mask() -> None:
    ref = np.array([[0.5, -np.inf], [0.25, 0.75]], np.float32)
    assert difference(ref.copy(), ref).max_abs == 0.0
    leaky = ref.copy()
    leaky[0, 1] = 0.1  # a causal-mask bug: a future key is visible
    d = difference(leaky, ref)
    assert d.max_abs == np.inf and d.first_position_over(1e-5) == 0
    nan = ref.copy()
    nan[1, 0] = np.nan
    assert difference(nan, ref).first_position_over(1e-5) == 1


def test_position_axis_of_attention_maps_is_the_query_axis() -> None:
    ref = np.zeros((2, 3, 3), np.float32)
    ref[:, :, 0] = 1.0
    run = ref.copy()
    run[1, 2, 0] = 1.5  # head 1, query position 2
    assert difference(run, ref, position_axis=1).first_position_over(1e-5) == 2


def test_identical_logits_pass_with_zero_error() -> None:
    ref = np.random.default_rng(0).normal(size=(3, 50)).astype(np.float32)
    c = compare_logits(PROMPT, ref.copy(), ref, TH)
    assert c.passed and c.top1_identical == 3
    assert c.max_abs.max() == 0 and c.nmse.max() == 0 and abs(c.kl).max() < 1e-12


def test_kl_and_nmse_match_their_definitions() -> None:
    ref = np.array([[0.0, np.log(3.0)]])          # p = (1/4, 3/4)
    run = np.array([[0.0, 0.0]])                   # q = (1/2, 1/2)
    c = compare_logits(PROMPT, run, ref, TH)
    kl = 0.25 * np.log(0.25 / 0.5) + 0.75 * np.log(0.75 / 0.5)
    assert c.kl[0] == pytest.approx(kl, rel=1e-12)
    assert c.nmse[0] == pytest.approx(np.mean((run - ref) ** 2) / np.var(ref), rel=1e-12)
    assert not c.passed


def test_a_constant_logit_shift_fails_on_max_abs_although_kl_is_zero() -> None:
    ref = np.random.default_rng(1).normal(size=(4, 30))
    c = compare_logits(PROMPT, ref + 0.01, ref, TH)
    assert abs(c.kl).max() < 1e-12 and c.top1_identical == 4
    assert c.bad_positions.tolist() == [0, 1, 2, 3]


def test_top1_ties_within_the_logit_tolerance_are_agreement() -> None:
    ref = np.array([[5.0, 5.0 - 2e-4, 1.0], [5.0, 4.0, 1.0]])
    run = np.array([[5.0 - 3e-4, 5.0 - 2e-4, 1.0], [4.5, 4.6, 1.0]])
    c = compare_logits(PROMPT, run, ref, TH)
    assert c.top1_identical == 0
    assert c.top1_ok.tolist() == [True, False]
    assert c.bad_positions.tolist() == [1]


def test_non_finite_runtime_logits_fail() -> None:
    ref = np.zeros((2, 4))
    run = ref.copy()
    run[1, 2] = np.nan
    assert compare_logits(PROMPT, run, ref, TH).bad_positions.tolist() == [1]


def test_token_mismatch_position_covers_differing_and_missing_ids() -> None:
    assert PromptTokens("x", (1, 2, 3), (1, 2, 3)).first_mismatch is None
    assert PromptTokens("x", (1, 2, 3), (1, 5, 3)).first_mismatch == 1
    assert PromptTokens("x", (7, 1, 2), (1, 2)).first_mismatch == 0
    assert PromptTokens("x", (1, 2, 3), (1, 2)).first_mismatch == 2


def _stages(shape_n: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    shapes = {"scores": (2, shape_n, shape_n), "probs": (2, shape_n, shape_n)}
    return {key: rng.normal(size=shapes.get(key, (shape_n, 6))).astype(np.float32)
            for key in (s.key for s in STAGES) if key not in ("q_norm", "k_norm")}


def test_stage_diff_names_the_first_stage_in_forward_order() -> None:
    ref = _stages()
    run = {k: v.copy() for k, v in ref.items()}
    run["gate"][2] += 1.0
    run["k"][1] += 1.0
    d = stage_diff(3, run, ref, 1e-5)
    assert [r.key for r in d.rows] == [s.key for s in STAGES if s.key in ref]
    assert d.first_bad is not None and (d.first_bad.stage, d.first_bad.first_position) == ("k", 1)
    run["k"] = ref["k"].copy()
    run["k_rope"][3] += 1e-3
    assert stage_diff(3, run, ref, 1e-5).first_bad.stage == "rope"


def test_a_tap_the_runtime_lacks_fails_at_that_stage() -> None:
    ref = _stages()
    ref["q_norm"] = ref["q"].copy()
    run = {k: v.copy() for k, v in ref.items() if k != "q_norm"}
    first = stage_diff(0, run, ref, 1e-5).first_bad
    assert first is not None and first.stage == "q_norm" and "missing" in first.problem
    run["q_norm"] = ref["q_norm"][:, :3]
    assert "shape" in stage_diff(0, run, ref, 1e-5).first_bad.problem


def test_layer_sweep_reports_the_first_layer_beyond_tolerance() -> None:
    ref = np.random.default_rng(3).normal(size=(5, 4, 8)).astype(np.float32)
    run = ref.copy()
    run[3, 2] *= 1.001  # after layer 2, position 2
    run[4] *= 1.5
    sweep = layer_sweep(run, ref, 1e-5)
    assert sweep.first_bad is not None
    assert (sweep.first_bad.key, sweep.first_bad.first_position) == ("layer.2", 2)
    assert sweep.rows[0].key == "embed" and sweep.rows[0].rel == 0.0
    with pytest.raises(ParityError, match="hidden states"):
        layer_sweep(run[:4], ref, 1e-5)


def _spec(**changes: object) -> ModelSpec:
    base = dict(architecture="llama", num_layers=2, vocab_size=100, hidden_size=64,
                intermediate_size=128, num_heads=4, num_kv_heads=2, head_dim=16,
                context_length=256, rms_norm_eps=1e-5, rope=RopeSpec(theta=10000.0),
                tie_word_embeddings=True, qkv_bias=False, qk_norm=False)
    return ModelSpec(**{**base, **changes})


def test_different_dimensions_are_refused_and_different_settings_are_noted() -> None:
    with pytest.raises(ParityError, match=r"num_layers 3 vs 2, hidden_size 128 vs 64"):
        compare_specs(_spec(), _spec(num_layers=3, hidden_size=128), "SRC", "b.bump")
    notes = compare_specs(_spec(), _spec(rms_norm_eps=1e-6, tie_word_embeddings=False), "SRC", "b")
    assert notes == ["blob rms_norm_eps=1e-06 but source rms_norm_eps=1e-05",
                     "blob tie_word_embeddings=False but source tie_word_embeddings=True"]
    assert compare_specs(_spec(), _spec(context_length=64), "SRC", "b") == []


def _report(run_hidden: np.ndarray, ref_hidden: np.ndarray, logits_shift: float = 0.0,
            prompt: PromptTokens = PROMPT, context: ContextSweep | None = None) -> ParityReport:
    ref_logits = np.zeros((3, 5))
    ref_logits[:, 1] = 1.0
    run_logits = ref_logits.copy()
    run_logits[2] += logits_shift
    return ParityReport("SRC", "b.bump", TH, [], [prompt],
                        [compare_logits(prompt, run_logits, ref_logits, TH)], 0,
                        layer_sweep(run_hidden, ref_hidden, TH.rtol), [], context)


def test_divergence_prefers_tokens_then_layers_then_logits_then_context() -> None:
    ref = np.ones((3, 3, 4), np.float32)
    bad = ref.copy()
    bad[2, 1] = 2.0
    tokens = PromptTokens("x", (1, 2, 3), (1, 2, 4))
    assert _report(bad, ref, 1.0, tokens).divergence.stage == "tokens"
    d = _report(bad, ref, 1.0).divergence
    assert (d.position, d.layer, d.stage) == (1, 1, "out")
    d = _report(ref, ref, 1.0).divergence
    assert (d.position, d.layer, d.stage) == (2, None, "logits")
    logits = np.zeros((3, 5))
    logits[:, 1] = 1.0
    decoded = logits.copy()
    decoded[2, 3] = 2.0  # the KV-cache path goes wrong at context 3
    sweep = ContextSweep(compare_logits(PROMPT, logits, logits, TH),
                         compare_logits(PROMPT, decoded, logits, TH))
    assert (sweep.first_top1_change, sweep.first_failure) == (3, 3)
    d = _report(ref, ref, context=sweep).divergence
    assert (d.position, d.stage) == (2, "context")
    passed = _report(ref, ref)
    assert passed.passed and passed.verdict.startswith("PASS")


def test_json_report_is_strict_json_even_with_infinite_errors() -> None:
    ref = np.ones((3, 3, 4), np.float32)
    run = ref.copy()
    run[1, 0, 0] = np.nan
    doc = _report(run, ref).to_json()
    text = json.dumps(doc, allow_nan=False)
    assert json.loads(text)["layers"]["rows"][1]["rel"] == "inf"
    assert doc["passed"] is False and doc["divergence"]["layer"] == 0
