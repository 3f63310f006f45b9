"""Eval's statistics against hand-computed cases and a transliteration of llama.cpp's sums.

No torch here: the statistics are plain numpy (bumpconv.evaluate.stats).
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from bumpconv.evaluate.stats import (LogProbs, TokenScores, covariance, mean_and_se, median,
                                     percentile, score, summarize)


def test_stats_gates_and_report_import_without_torch() -> None:
    code = ("import sys, bumpconv.evaluate.stats, bumpconv.evaluate.gates, "
            "bumpconv.evaluate.eval_report; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_log_probs_are_a_float64_log_softmax_with_first_index_argmax() -> None:
    lp = LogProbs.of(np.array([[0.0, math.log(3.0)], [2.0, 2.0]], np.float32))
    assert lp.values.dtype == np.float64
    assert np.exp(lp.values[0]).tolist() == pytest.approx([0.25, 0.75], abs=1e-7)
    assert np.exp(lp.values[1]).tolist() == pytest.approx([0.5, 0.5], abs=1e-15)
    assert lp.top.tolist() == [1, 0]  # a tie goes to the first index, as llama.cpp's scan


def test_score_by_hand_two_token_vocabulary() -> None:
    base = LogProbs.of(np.log(np.array([[0.5, 0.5], [0.9, 0.1]])))
    test = LogProbs.of(np.log(np.array([[0.25, 0.75], [0.9, 0.1]])))
    s = score(base, test, np.array([1, 0]), np.array([7, 8]))
    kl0 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert s.kl.tolist() == pytest.approx([kl0, 0.0], abs=1e-15)
    assert s.nll.tolist() == pytest.approx([-math.log(0.75), -math.log(0.9)])
    assert s.nll_base.tolist() == pytest.approx([-math.log(0.5), -math.log(0.9)])
    assert s.same_top.tolist() == [False, True]  # base ties -> 0; test -> 1
    assert s.dp.tolist() == pytest.approx([0.25, 0.0], abs=1e-15)
    assert s.position.tolist() == [7, 8]


def test_mean_and_se_follow_llama_cpp_including_the_small_sample_rule() -> None:
    x = np.arange(1.0, 12.0)  # n = 11
    e = mean_and_se(x)
    assert e.value == 6.0
    var = (x ** 2).mean() - 36.0
    assert e.se == pytest.approx(math.sqrt(var / 10))
    assert mean_and_se(x[:10]).se == 0.0  # n <= 10: llama.cpp reports no uncertainty
    assert mean_and_se(np.full(20, 3.0)).se == 0.0


def test_covariance_is_of_the_means_and_zero_below_ten() -> None:
    a, b = np.arange(10.0), np.arange(10.0) * 2
    assert covariance(a, b) == pytest.approx(((a * b).mean() - a.mean() * b.mean()) / 9)
    assert covariance(a[:9], b[:9]) == 0.0


def test_percentile_interpolates_at_q_times_n_minus_1_and_median_averages() -> None:
    v = np.array([0.0, 1.0, 2.0, 10.0])
    assert percentile(v, 0.5) == pytest.approx(1.5)
    assert percentile(v, 0.99) == pytest.approx(2 + 0.97 * 8)  # p = 2.97
    assert percentile(v, 0.0) == 0.0 and percentile(v, 1.0) == 10.0
    assert median(v) == 1.5 and median(v[:3]) == 1.0
    rng = np.random.default_rng(1)
    w = np.sort(rng.random(1001))
    assert percentile(w, 0.999) == pytest.approx(np.percentile(w, 99.9), abs=1e-15)


def _llama_cpp(s: TokenScores) -> dict[str, float]:
    """perplexity.cpp's kl_divergence() final statistics, transliterated with its sums."""
    n = len(s.nll)
    sums = dict(nll=0.0, nll2=0.0, base=0.0, base2=0.0, nb=0.0, kld=0.0, kld2=0.0,
                dp=0.0, dp2=0.0, dp4=0.0, same=0)
    for nll, nb_, kl, same in zip(s.nll, s.nll_base, s.kl, s.same_top):
        sums["nll"] += nll; sums["nll2"] += nll * nll
        sums["base"] += nb_; sums["base2"] += nb_ * nb_
        sums["nb"] += nll * nb_
        sums["kld"] += kl; sums["kld2"] += kl * kl
        dp = math.exp(-nll) - math.exp(-nb_)
        sums["dp"] += dp; sums["dp2"] += dp * dp; sums["dp4"] += dp ** 4
        sums["same"] += int(same)

    def mu(a: float, a2: float) -> tuple[float, float]:
        f = a / n
        df = a2 / n - f * f
        return f, (math.sqrt(df / (n - 1)) if df > 0 and n > 10 else 0.0)

    log_ppl, log_base = mu(sums["nll"], sums["nll2"]), mu(sums["base"], sums["base2"])
    cov = (sums["nb"] / n - sums["nll"] / n * sums["base"] / n) / (n - 1)
    ln_ratio = log_ppl[0] - log_base[0]
    ln_unc = math.sqrt(log_ppl[1] ** 2 + log_base[1] ** 2 - 2 * cov)
    mse = mu(sums["dp2"], sums["dp4"])
    rms = math.sqrt(mse[0])
    p = sums["same"] / n
    return dict(ppl=math.exp(log_ppl[0]), ppl_se=math.exp(log_ppl[0]) * log_ppl[1],
                ppl_base=math.exp(log_base[0]), ln_ratio=ln_ratio, ln_ratio_se=ln_unc,
                ratio=math.exp(ln_ratio), ratio_se=math.exp(ln_ratio) * ln_unc,
                cor=cov / (log_ppl[1] * log_base[1]),
                kl=mu(sums["kld"], sums["kld2"])[0], kl_se=mu(sums["kld"], sums["kld2"])[1],
                rms=rms, rms_se=0.5 / rms * mse[1], same=p,
                same_se=math.sqrt(p * (1 - p) / (n - 1)))


def _random_scores(n: int, seed: int = 0) -> TokenScores:
    rng = np.random.default_rng(seed)
    vocab = 50
    base = LogProbs.of(rng.normal(0, 3, (n, vocab)))
    test = LogProbs.of(base.values + rng.normal(0, 0.3, (n, vocab)))
    return score(base, test, rng.integers(0, vocab, n), np.arange(n))


def test_summary_matches_llama_cpp_formulas_on_random_scores() -> None:
    s = _random_scores(500)
    got, want = summarize(s), _llama_cpp(s)
    assert got.count == 500
    pairs = [(got.ppl.value, want["ppl"]), (got.ppl.se, want["ppl_se"]),
             (got.ppl_base.value, want["ppl_base"]), (got.ln_ppl_ratio.value, want["ln_ratio"]),
             (got.ln_ppl_ratio.se, want["ln_ratio_se"]), (got.ppl_ratio.value, want["ratio"]),
             (got.ppl_ratio.se, want["ratio_se"]), (got.ppl_correlation, want["cor"]),
             (got.kl_mean.value, want["kl"]), (got.kl_mean.se, want["kl_se"]),
             (got.dp_rms.value, want["rms"]), (got.dp_rms.se, want["rms_se"]),
             (got.same_top.value, want["same"]), (got.same_top.se, want["same_se"])]
    for g, w in pairs:
        assert g == pytest.approx(w, rel=1e-9)
    kl = np.sort(s.kl)
    assert got.kl_max == kl[-1] and got.kl_median == pytest.approx(np.median(kl))
    assert got.kl_p99 == pytest.approx(np.percentile(kl, 99))
    assert got.dp_max == pytest.approx(np.abs(s.dp).max())
    assert 0 < got.same_top.value < 1 and got.kl_mean.value > 0


def test_identical_sides_give_exact_zeros() -> None:
    rng = np.random.default_rng(2)
    lp = LogProbs.of(rng.normal(0, 2, (40, 30)))
    targets = rng.integers(0, 30, 40)
    same = score(lp, lp, targets, np.arange(40))  # the shortcut for one model against itself
    copy = score(lp, LogProbs(lp.values.copy(), lp.top.copy()), targets, np.arange(40))
    for f in ("nll", "nll_base", "kl", "same_top", "position"):
        assert np.array_equal(getattr(same, f), getattr(copy, f)), f
    s = summarize(copy)
    assert s.kl_mean.value == 0.0 and s.kl_max == 0.0 and s.kl_mean.se == 0.0
    assert s.ln_ppl_ratio.value == 0.0 and s.ln_ppl_ratio.se == 0.0
    assert s.ppl_ratio.value == 1.0 and s.same_top.value == 1.0 and s.same_top.se == 0.0
    assert s.dp_rms.value == 0.0 and s.dp_rms.se == 0.0 and s.dp_max == 0.0
    assert s.ppl.value == s.ppl_base.value


def test_scores_concatenate_in_order() -> None:
    a, b = _random_scores(5, 0), _random_scores(7, 1)
    both = TokenScores.concat([a, b])
    assert len(both.kl) == 12 and both.kl[5:].tolist() == b.kl.tolist()
    with pytest.raises(ValueError):
        summarize(TokenScores(*(np.zeros(0) for _ in range(5))))
