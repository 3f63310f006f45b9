"""``bumpconv eval`` end to end: tiny models (synthetic ids) and SmolLM2-135M (real text).

The three comparisons must separate the sources of error: an fp32 blob of SRC is at fp32 noise
everywhere; a blob of other weights (bf16-rounded, the stand-in for a quantized blob until the
quantizer lands) shows its error in (a) and (b) while (c) stays at noise; a kernel bug (the
runtime's interleaved-RoPE fault injection) shows in (a) and (c) while (b) is zero.
"""

from __future__ import annotations

import json
import re
import tracemalloc
from pathlib import Path
from typing import Callable

import pytest
from PIL import Image

from bumpconv.evaluate import corpus as corpora
from bumpconv.evaluate import eval_plot as eval_plot
from bumpconv.evaluate.lockstep import EvalOptions, run_eval
from bumpconv.files.figure import DPI
from bumpconv.comparison import parity_plot as parity_plot
from conftest import CliResult
from parity_helpers import build_defective, convert, swap_gate_up
from test_eval_dequantized import bf16_rounded

CTX = ["--ctx", "64"]


@pytest.fixture(scope="module")
def tiny_blob(tiny: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert(tiny("qwen2"), tmp_path_factory.mktemp("eval") / "qwen2.bump")


def _json(r: CliResult) -> dict:
    return json.loads(r.out)


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_an_fp32_blob_passes_at_fp32_noise_and_the_plot_is_drawn(
        cli: Callable[..., CliResult], tiny: Callable[..., Path], tiny_blob: Path,
        tmp_path: Path) -> None:
    png = tmp_path / "eval.png"
    r = cli("eval", tiny("qwen2"), tiny_blob, *CTX, "--json", "--plot", png)
    assert r.code == 0, r.err
    data = _json(r)
    (sample,) = data["corpora"]
    assert sample["synthetic"] and sample["name"] == "synthetic"
    assert (sample["tokens"], sample["chunks"], sample["scored"]) == (256, 4, 4 * 31)
    (blob,) = data["blobs"]
    assert blob["weights_identical_to_source"] and blob["gate"]["dtype"] == "fp32"
    res = blob["results"]["synthetic"]
    assert res["blob_vs_hf"]["kl_mean"]["value"] < 1e-9
    assert res["blob_vs_hf"]["same_top"]["value"] == 1.0
    assert res["dequantized_vs_hf"]["kl_max"] == 0.0
    assert res["blob_vs_dequantized"] == res["blob_vs_hf"]
    assert data["protocol"]["scored_positions"] == [32, 62]
    assert _png_size(png) == (eval_plot.WIDTH_IN * DPI, eval_plot.ROW_IN * DPI)


def test_the_same_inputs_print_the_same_numbers(cli: Callable[..., CliResult],
                                               tiny: Callable[..., Path],
                                               tiny_blob: Path) -> None:
    src = tiny("qwen2")
    texts = [cli("eval", src, tiny_blob, *CTX).out for _ in range(2)]
    jsons = [cli("eval", src, tiny_blob, *CTX, "--json").out for _ in range(2)]
    assert texts[0] == texts[1] and "PASS" in texts[0]
    assert jsons[0] == jsons[1]


def test_other_weights_show_in_a_and_b_while_the_kernels_stay_at_noise(
        cli: Callable[..., CliResult], tiny: Callable[..., Path], tmp_path: Path) -> None:
    src = tiny("llama-untied")
    blob = build_defective(src, tmp_path / "r.bump", bf16_rounded())
    data = _json(cli("eval", src, blob, *CTX, "--json"))
    (b,) = data["blobs"]
    assert not b["weights_identical_to_source"]
    res = b["results"]["synthetic"]
    a, q, k = (res[c]["kl_mean"]["value"] for c in
               ("blob_vs_hf", "dequantized_vs_hf", "blob_vs_dequantized"))
    assert k < 1e-9 < q and a == pytest.approx(q, rel=0.05) and q > 1000 * k
    kernel = [c for c in b["checks"] if c["comparison"] == "blob_vs_dequantized"]
    assert kernel and all(c["passed"] for c in kernel)


def test_a_kernel_bug_shows_in_c_and_fails(cli: Callable[..., CliResult],
                                          tiny: Callable[..., Path], tiny_blob: Path) -> None:
    r = cli("eval", tiny("qwen2"), tiny_blob, *CTX, "--json", "--rope-pairing", "interleaved")
    assert r.code == 1
    (b,) = _json(r)["blobs"]
    res = b["results"]["synthetic"]
    assert res["dequantized_vs_hf"]["kl_max"] == 0.0
    assert res["blob_vs_dequantized"]["kl_mean"]["value"] > 1e-3
    failed = {c["comparison"] for c in b["checks"] if not c["passed"]}
    assert failed == {"blob_vs_hf", "blob_vs_dequantized"}


def test_several_blobs_share_one_reference_pass_and_a_failing_one_sets_the_status(
        cli: Callable[..., CliResult], tiny: Callable[..., Path], tiny_blob: Path,
        tmp_path: Path) -> None:
    src = tiny("qwen2")
    bad = build_defective(src, tmp_path / "swapped.bump", swap_gate_up(0))
    r = cli("eval", src, tiny_blob, bad, *CTX)
    assert r.code == 1
    assert f"PASS: {tiny_blob}" in r.out and f"FAIL: {bad}" in r.out
    assert r.out.splitlines()[-1] == "FAIL: 1 of 2 blob(s) within their gates"


def test_memory_does_not_grow_with_the_corpus(tiny: Callable[..., Path], tiny_blob: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Per chunk the arrays are [ctx, V]; only per-token scores accumulate. With V = 517 and
    ctx 256 one chunk's float64 log-probabilities are 0.5 MB, so holding 14 more chunks of them
    would add over 7 MB; the peak may grow only by the scores (a few KB)."""
    monkeypatch.setattr(corpora, "SYNTHETIC_CHUNKS", 16)
    peaks = []
    for n in (2, 16):
        options = EvalOptions(ctx=256, chunks=n, progress=False)
        tracemalloc.start()
        report = run_eval(str(tiny("qwen2")), [tiny_blob], options)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert report.samples[0].chunks == n
    assert peaks[1] - peaks[0] < 1 << 20, peaks


def test_refusals_are_one_line_before_any_model_loads(cli: Callable[..., CliResult],
                                                      tiny: Callable[..., Path],
                                                      tiny_blob: Path, tmp_path: Path) -> None:
    src = tiny("qwen2")
    cases = [
        ((src, tiny_blob), r"--ctx 512 exceeds the context length 256 of"),
        ((src, tiny_blob, *CTX, "--corpus", "prose"), r"has no tokenizer, so --corpus cannot"),
        ((src, tiny_blob, "--ctx", "3"), r"--ctx 3: must be at least 4"),
        ((tiny("llama-tied"), tiny_blob, *CTX), r"is not the same model as"),
        ((src, tmp_path / "none.bump", *CTX), r"none\.bump: not found"),
    ]
    for args, message in cases:
        r = cli("eval", *args)
        assert r.code == 1 and r.out == ""
        assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
        assert re.search(message, r.err), r.err


def test_parity_plot_marks_the_first_bad_layer_and_stage(cli: Callable[..., CliResult],
                                                        tiny: Callable[..., Path],
                                                        tiny_blob: Path, tmp_path: Path) -> None:
    src = tiny("qwen2")
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    assert cli("parity", src, tiny_blob, "--plot", good).code == 0
    defective = build_defective(src, tmp_path / "swapped.bump", swap_gate_up(0))
    r = cli("parity", src, defective, "--plot", bad)
    assert r.code == 1 and "stage gate" in r.out
    size = (parity_plot.WIDTH_IN * DPI, parity_plot.HEIGHT_IN * DPI)
    assert _png_size(good) == size and _png_size(bad) == size
    assert good.read_bytes() != bad.read_bytes()


def test_smollm2_fp32_blob_matches_its_source_on_real_text(
        cli: Callable[..., CliResult], smol: Path, smol_blob: Path, corpus_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUMPCONV_CORPUS_DIR", str(corpus_dir))
    r = cli("eval", smol, smol_blob, "--corpus", "prose", "--chunks", "2", "--json")
    assert r.code == 0, r.err
    data = _json(r)
    (sample,) = data["corpora"]
    assert sample["tokens"] >= 8000 and sample["scored"] == 2 * 255
    assert sample["sha256"] == corpora.load_catalog().named("prose").sha256
    a = data["blobs"][0]["results"]["prose"]["blob_vs_hf"]
    assert a["kl_mean"]["value"] < 1e-8 and a["same_top"]["value"] == 1.0
    assert 5 < a["ppl_base"]["value"] < 100  # a trained model on English prose
    assert a["ppl_ratio"]["value"] == pytest.approx(1.0, abs=1e-5)
    texts = corpora.resolve(None, corpus_dir)
    tok = corpora.source_tokenizer(smol)
    counts = {t.name: len(corpora.tokenize(tok, t).ids) for t in texts}
    assert counts["prose"] >= 8000 and counts["code"] > 1024 and counts["finnish"] > 2048
