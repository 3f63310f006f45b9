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
from bumpconv.comparison.parity_run import compare_specs
from bumpconv.format.stages import STAGES
from bumpconv.comparison.metrics import (ContextSweep, Thresholds, compare_logits,
                                         difference, first_divergent_layer, layer_sweep,
                                         stage_diff, sweep_scales)
from bumpconv.comparison.parity_report import ParityReport
from bumpconv.comparison.reference_data import PromptTokens
from bumpconv.format.spec import ModelSpec, RopeSpec

TH = Thresholds()
PROMPT = PromptTokens(None, (1, 2, 3), None)


def test_relative_error_is_max_abs_difference_over_max_abs_reference() -> None:
    ref = np.array([[1.0, -4.0], [2.0, 0.5]], np.float32)
    run = ref + np.array([[0.0, 0.0], [0.02, 0.0]], np.float32)
    d = difference(run, ref)
    assert d.ref_max == 4.0 and d.scale == 4.0
    assert d.max_abs == pytest.approx(0.02, rel=1e-5)
    assert d.rel == pytest.approx(0.005, rel=1e-5)
    assert d.per_position.tolist() == pytest.approx([0.0, 0.02], abs=1e-7)
    assert d.first_position_over(1e-3) == 1
    assert d.first_position_over(1e-2) is None


def test_a_scale_widens_or_floors_the_denominator() -> None:
    ref = np.array([[1.0, -4.0], [2.0, 0.5]], np.float32)
    run = ref + np.array([[0.0, 0.0], [0.02, 0.0]], np.float32)
    assert difference(run, ref, widen=2.0).scale == 8.0
    floored = difference(run, ref, floor=40.0)
    assert floored.scale == 40.0 and floored.rel == pytest.approx(5e-4, rel=1e-5)
    assert floored.first_position_over(1e-3) is None and floored.first_position_over(4e-4) == 1
    assert difference(run, ref, floor=1.0).scale == 4.0  # never below max|ref|


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


def _stream(*magnitudes: float, n: int = 4, width: int = 6) -> np.ndarray:
    """[len, n, width] hidden states whose entry i has largest magnitude ``magnitudes[i]``."""
    h = np.full((len(magnitudes), n, width), 0.1, np.float32)
    h[:, 0, 0] = magnitudes
    return h


HIDDEN = _stream(1.0, 1.0, 1.0, 1.0, 1.0)  # a stream that never shrinks: every widening is 1


def test_stage_diff_names_the_first_stage_in_forward_order() -> None:
    ref = _stages()
    run = {k: v.copy() for k, v in ref.items()}
    run["gate"][2] += 1.0
    run["k"][1] += 1.0
    d = stage_diff(3, run, ref, 1e-5, HIDDEN)
    assert [r.key for r in d.rows] == [s.key for s in STAGES if s.key in ref]
    assert d.first_bad is not None and (d.first_bad.stage, d.first_bad.first_position) == ("k", 1)
    run["k"] = ref["k"].copy()
    run["k_rope"][3] += 1e-3
    assert stage_diff(3, run, ref, 1e-5, HIDDEN).first_bad.stage == "rope"


def test_a_tap_the_runtime_lacks_fails_at_that_stage() -> None:
    ref = _stages()
    ref["q_norm"] = ref["q"].copy()
    run = {k: v.copy() for k, v in ref.items() if k != "q_norm"}
    first = stage_diff(0, run, ref, 1e-5, HIDDEN).first_bad
    assert first is not None and first.stage == "q_norm" and "missing" in first.problem
    run["q_norm"] = ref["q_norm"][:, :3]
    assert "shape" in stage_diff(0, run, ref, 1e-5, HIDDEN).first_bad.problem


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


def test_a_layer_is_measured_against_the_stream_entering_or_leaving_it() -> None:
    """Decision (b): a layer that cancels most of a large value (1000 -> 10) is measured
    against the 1000 it took in, not the 10 it left: an error fp32 rounding of 1000 leaves
    (5e-3) passes at 1e-5 there; the same error after a layer that only ever held 10 fails."""
    ref = _stream(1.0, 1000.0, 10.0, 10.0)
    assert sweep_scales(ref) == [1.0, 1000.0, 1000.0, 10.0]
    run = ref.copy()
    run[2, 1, 3] += 5e-3  # layer 1's output: 1000 in, 10 out
    sweep = layer_sweep(run, ref, 1e-5)
    assert sweep.first_bad is None and sweep.rows[2].rel == pytest.approx(5e-6, rel=1e-3)
    run[3, 2, 3] += 5e-3  # layer 2's output: 10 in, 10 out
    sweep = layer_sweep(run, ref, 1e-5)
    assert (sweep.first_bad.key, sweep.first_bad.first_position) == ("layer.2", 2)
    assert sweep.rows[3].diff.scale == 10.0


def _layer(ln: float, resid1: float, out: float, branch: float = 2.0) -> dict[str, np.ndarray]:
    """One layer's stages: the attention and MLP branches of magnitude ``branch``, the stream
    stages ``resid1`` and ``out`` of the given magnitudes."""
    ref = {k: np.full_like(v, 0.5) for k, v in _stages().items()}
    for key, value in ref.items():
        value.reshape(-1)[0] = branch
    ref["resid1"].reshape(-1)[0] = resid1
    ref["out"].reshape(-1)[0] = out
    return ref


def test_stage_scales_follow_the_stream_into_each_branch() -> None:
    """Layer 1 of a stream 1000 -> 10 (layer 0 cancelled it) -> resid1 20 -> out 10: the
    attention branch reads a layer input of 10 accepted at 1000 (x100), the MLP branch a
    resid1 of 20 accepted at 1000 (x50); resid1 and out are measured at 1000 themselves."""
    hidden = _stream(1000.0, 10.0, 10.0)
    ref = _layer(1.0, 20.0, 10.0)
    d = stage_diff(1, {k: v.copy() for k, v in ref.items()}, ref, 1e-5, hidden)
    scale = {r.key: r.diff.scale for r in d.rows}
    assert scale["ln1"] == scale["q"] == scale["wo"] == pytest.approx(200.0)
    assert scale["ln2"] == scale["down"] == pytest.approx(100.0)
    assert scale["resid1"] == scale["out"] == 1000.0
    # a stream that never shrank: every stage is held to its own magnitude
    d = stage_diff(1, ref, ref, 1e-5, _stream(10.0, 10.0, 10.0))
    assert {r.key: r.diff.scale for r in d.rows}["q"] == 2.0
    assert {r.key: r.diff.scale for r in d.rows}["resid1"] == 20.0


def test_a_small_branch_error_fails_where_the_layer_output_would_not_see_it() -> None:
    """A stream of 1000 that does not shrink: q off by 1e-4 of its own size fails the stage
    check at q, although the layer output (measured at 1000) would pass the same change."""
    hidden = _stream(1000.0, 1000.0, 1000.0)
    ref = _layer(1.0, 1000.0, 1000.0)
    run = {k: v.copy() for k, v in ref.items()}
    run["q"][2, 1] += 2e-4  # q's magnitude is 2
    d = stage_diff(1, run, ref, 1e-5, hidden)
    assert (d.first_bad.key, d.first_bad.first_position) == ("q", 2)
    assert d.first_bad.rel == pytest.approx(1e-4, rel=1e-3)


def test_the_first_divergent_layer_is_a_stage_before_a_later_output() -> None:
    """A stage failing in layer 0 comes before a layer sweep failure at layer 1, and a layer
    sweep failure at layer 0 with no stage beyond tolerance is still layer 0."""
    ref = np.ones((3, 3, 4), np.float32)
    run = ref.copy()
    run[2] *= 2  # layer 1's output
    sweep = layer_sweep(run, ref, 1e-5)
    fine = _layer(1.0, 1.0, 1.0)
    bad = {k: v.copy() for k, v in fine.items()}
    bad["v"][0, 0] += 1.0
    stages = [stage_diff(0, bad, fine, 1e-5, ref), stage_diff(1, fine, fine, 1e-5, ref)]
    assert first_divergent_layer(sweep, stages) == 0
    stages[0] = stage_diff(0, fine, fine, 1e-5, ref)
    assert first_divergent_layer(sweep, stages) == 1
    assert first_divergent_layer(sweep, []) == 1  # the layer sweep alone
    assert first_divergent_layer(layer_sweep(ref, ref, 1e-5), stages) is None


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


def test_the_report_names_a_stage_the_layer_sweep_missed() -> None:
    """A stage beyond tolerance in layer 0, the layer sweep failing only at layer 1: the
    divergence is layer 0 at that stage (forward order), and the JSON lists every layer."""
    ref = np.ones((3, 3, 4), np.float32)
    run = ref.copy()
    run[2] *= 2  # layer 1's output
    fine = _layer(1.0, 1.0, 1.0)
    bad = {k: v.copy() for k, v in fine.items()}
    bad["v"][3, 0] += 1.0
    sweep = [stage_diff(0, bad, fine, TH.stage_rtol, ref),
             stage_diff(1, fine, fine, TH.stage_rtol, ref)]
    report = _report(run, ref)
    report.stage_sweep = sweep
    d = report.divergence
    assert (d.position, d.layer, d.stage) == (3, 0, "v") and not report.passed
    doc = report.to_json()
    assert [s["first_bad"] for s in doc["stage_sweep"]] == ["v", None]
    assert doc["thresholds"]["stage_rtol"] == 1e-4
    clean = _report(ref, ref)
    clean.stage_sweep = [stage_diff(0, fine, fine, TH.stage_rtol, ref)]
    assert clean.passed and "their stages within 0.0001" in clean.verdict
