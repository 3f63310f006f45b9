"""Eval's gates: the packaged table, which entry a blob is held to, and the verdict logic.

No torch: reports are built from hand-made summaries.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bumpconv.evaluate.gates import GateTable, Limits, load_gates
from bumpconv.evaluate.eval_report import BlobResult, EvalReport, SampleInfo, format_report
from bumpconv.evaluate.stats import LogProbs, Summary, score, summarize
from bumpconv.format.dtypes import DType
from bumpconv.format.errors import EvalError

TABLE, SOURCE = load_gates()


def test_packaged_table_has_the_starting_values() -> None:
    by = {w.dtype: w for w in TABLE.weights}
    assert [w.dtype for w in TABLE.weights] == ["fp32", "q8_0", "q6_k", "q5_k", "q5_1", "q5_0",
                                                "q4_k", "q4_1", "q4_0"]
    assert (by["fp32"].mean_kl_max, by["fp32"].same_top_min) == (1e-5, 0.999)
    assert (by["q8_0"].mean_kl_max, by["q8_0"].same_top_min, by["q8_0"].ppl_ratio_max) == \
        (0.005, 0.97, 1.01)
    assert (by["q6_k"].mean_kl_max, by["q6_k"].same_top_min) == (0.015, 0.94)
    assert (by["q4_k"].mean_kl_max, by["q4_k"].same_top_min) == (0.12, 0.77)
    assert TABLE.kernels == Limits(mean_kl_max=1e-5, same_top_min=0.999)


@pytest.mark.parametrize("dtypes, gate", [
    ({DType.FP32}, "fp32"),
    ({DType.FP32, DType.Q8_0}, "q8_0"),
    ({DType.FP32, DType.Q6_K, DType.Q4_K}, "q4_k"),  # a Q4_K_M-style mix
    ({DType.Q6_K, DType.Q8_0}, "q6_k"),
    ({DType.Q8_0, DType.Q5_0, DType.Q6_K, DType.Q4_K}, "q4_k"),  # q4_k_m of SmolLM2
])
def test_a_blob_is_held_to_its_least_precise_weight_type(dtypes: set[DType], gate: str) -> None:
    assert TABLE.for_types(dtypes, "b.bump", SOURCE).dtype == gate


def test_a_weight_type_without_a_gate_is_refused_by_name() -> None:
    with pytest.raises(EvalError, match=r"b\.bump: stores q8_k, which the gate table .* does "
                                        r"not list .*--gates"):
        TABLE.for_types({DType.FP32, DType.Q8_K}, "b.bump", SOURCE)


def test_a_bad_gate_file_is_one_line_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "g.json"
    bad.write_text(json.dumps({"kernels": {}, "weights": [{"dtype": "q9_9"}]}))
    with pytest.raises(EvalError, match=r"g\.json: not a valid gate table \(weights\.0"):
        load_gates(bad)
    bad.write_text("{")
    with pytest.raises(EvalError, match="not a valid gate table"):
        load_gates(bad)
    with pytest.raises(EvalError, match="cannot read"):
        load_gates(tmp_path / "missing.json")
    dup = {"kernels": {}, "weights": [{"dtype": "fp32"}, {"dtype": "fp32"}]}
    with pytest.raises(ValueError, match="listed twice"):
        GateTable.model_validate(dup)


def _summary(shift: float, flips: int, n: int = 200) -> Summary:
    """Scores of ``n`` tokens whose test logits are the base's plus ``shift`` on token 0, with
    the top token changed, by a near-tie and at negligible KL, at ``flips`` positions."""
    base = np.zeros((n, 4))
    base[:, 1] = 2.0
    base[:flips, 3] = 2.0 - 1e-6
    test = base.copy()
    test[:, 0] += shift
    test[:flips, 3] = 2.0 + 1e-6
    return summarize(score(LogProbs.of(base), LogProbs.of(test), np.ones(n, int), np.arange(n)))


def _report(a: Summary, c: Summary, gated: bool = True) -> EvalReport:
    info = SampleInfo("prose", "d", "prose", "en", "pd", "src", "0" * 64, 1000, 2, 200, gated,
                      False)
    result = BlobResult("b.bump", [], ["fp32"], TABLE.for_types({DType.FP32}, "b", SOURCE),
                        False, {"prose": {"blob_vs_hf": a, "dequantized_vs_hf": a,
                                          "blob_vs_dequantized": c}}, {})
    return EvalReport("SRC", 512, 256, SOURCE, TABLE.kernels, [info], [result])


def test_verdicts_apply_the_weight_gate_to_a_and_the_kernel_gate_to_c() -> None:
    good, noisy, flipped = _summary(0.0, 0), _summary(0.1, 0), _summary(0.0, 1)
    assert good.kl_mean.value == 0.0 and noisy.kl_mean.value > 1e-5
    assert flipped.same_top.value == pytest.approx(0.995)
    assert _report(good, good).passed
    for a, c in ((noisy, good), (good, noisy), (flipped, good), (good, flipped)):
        r = _report(a, c)
        assert not r.passed
        failed = [g for g in r.checks(r.blobs[0]) if not g.check.passed]
        assert [g.comparison for g in failed] == ["blob_vs_hf" if a is not good
                                                  else "blob_vs_dequantized"]
    assert _report(noisy, noisy, gated=False).passed  # a reported-only corpus never fails


def test_report_text_and_json_carry_every_figure_and_the_gate() -> None:
    r = _report(_summary(0.1, 1), _summary(0.0, 0))
    text = format_report(r)
    assert "gate fp32: mean KL < 1e-05, same top >= 99.9 %" in text
    assert "(a) prose: mean KL" in text and "FAIL" in text.splitlines()[-1]
    for label in ("PPL ratio", "ln(PPL ratio)", "median KL", "99% KL", "99.9% KL", "max KL",
                  "same top", "RMS Δp", "max |Δp|"):
        assert label in text
    data = json.loads(json.dumps(r.to_json(), allow_nan=False))
    blob = data["blobs"][0]
    assert data["passed"] is False and blob["passed"] is False
    assert blob["gate"] == {"dtype": "fp32", "mean_kl_max": 1e-5, "same_top_min": 0.999,
                            "ppl_ratio_max": None}
    a = blob["results"]["prose"]["blob_vs_hf"]
    assert set(a) == {"count", "ppl", "ppl_base", "ppl_correlation", "ln_ppl_ratio",
                      "ppl_ratio", "kl_mean", "kl_median", "kl_p99", "kl_p999", "kl_max",
                      "same_top", "dp_mean", "dp_rms", "dp_max"}
    assert set(a["kl_mean"]) == {"value", "se"}
    assert data["corpora"][0]["sha256"] == "0" * 64
    assert {c["metric"] for c in blob["checks"]} == {"mean KL", "same top"}
