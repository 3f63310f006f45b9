"""How far one model's next-token distributions are from another's: llama.cpp's statistics.

The definitions are those of llama.cpp's ``llama-perplexity --kl-divergence``
(tools/perplexity/perplexity.cpp), so the numbers compare with published tables. One
comparison has a *base* (the reference distribution, e.g. HF fp32) and a *test* model (e.g. the
blob in the C runtime). For every scored token t with context c (see :mod:`.lockstep` for which
tokens are scored):

* ``nll = -log p_test(t | c)`` and ``nll_base = -log p_base(t | c)``;
* ``kl = sum_v p_base(v) (log p_base(v) - log p_test(v))``, KL(base || test) over the whole
  vocabulary, in nats;
* ``same_top``: the test model's most likely token is the base model's (first index on ties,
  as llama.cpp's strict ``>`` scans);
* ``dp = p_test(t) - p_base(t)``, the change in the probability of the correct token.

From those, over all scored tokens (:func:`summarize`): perplexity of each side
``exp(mean nll)``; ``ln(PPL ratio) = mean nll - mean nll_base``; mean, median, 99th and 99.9th
percentile and maximum of KL; "same top p" (the fraction of ``same_top``); RMS and maximum of
``|dp|``. Standard errors are llama.cpp's: ``se(x) = sqrt((mean(x^2) - mean(x)^2) / (n - 1))``
(0 for n <= 10); ``se(PPL) = PPL * se(nll)``; ``se(ln ratio) = sqrt(se(nll)^2 +
se(nll_base)^2 - 2 cov)`` with ``cov = (mean(nll nll_base) - mean(nll) mean(nll_base)) /
(n - 1)``, which equals ``se(nll - nll_base)`` and is computed so; ``se(ratio) = ratio *
se(ln ratio)``; ``se(rms dp) = se(dp^2) / (2 rms dp)``; ``se(same top) = sqrt(p (1 - p) /
(n - 1))``. Percentiles interpolate linearly at ``q (n - 1)`` of the sorted
values, the median averages the two middle values of an even count (both as llama.cpp).

Where this differs from llama.cpp, deliberately: log-probabilities are computed in float64
from the fp32 logits, and KL sums every vocabulary entry. llama.cpp stores the base model's
log-probabilities as 16-bit integers over a 16-nat range (steps of 2.4e-4 nats) and skips
entries whose base log-probability is below -16 (p < 1.1e-7), so its per-token KL resolves no
better than ~1e-4; here an fp32-exact blob measures per-token KL of the order of 1e-10. Both
differences are far below the KL of any quantized type, where the published tables live.
This module is plain numpy (no torch): it is tested against hand-computed cases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class LogProbs:
    """One model's next-token log-probabilities at some positions (float64, [n, V])."""

    values: np.ndarray
    top: np.ndarray  # [n] argmax of the logits (first index on ties)

    @cached_property
    def probs(self) -> np.ndarray:
        """``exp(values)``, computed once however many models are compared with this one."""
        return np.exp(self.values)

    @classmethod
    def of(cls, logits: np.ndarray) -> "LogProbs":
        """Log-softmax of ``[n, V]`` logits in float64 (max-subtracted, as llama.cpp)."""
        x = np.asarray(logits, dtype=np.float64)
        top = x.argmax(axis=-1)
        x = x - x.max(axis=-1, keepdims=True)
        x -= np.log(np.exp(x).sum(axis=-1, keepdims=True))
        return cls(x, top)


@dataclass(frozen=True)
class TokenScores:
    """Per scored token of one comparison (all arrays [n]); ``position`` is the token's place
    in its chunk (the predicted token's index), for per-position plots."""

    nll: np.ndarray
    nll_base: np.ndarray
    kl: np.ndarray
    same_top: np.ndarray
    position: np.ndarray

    @property
    def dp(self) -> np.ndarray:
        return np.exp(-self.nll) - np.exp(-self.nll_base)

    @classmethod
    def concat(cls, parts: list["TokenScores"]) -> "TokenScores":
        return cls(*(np.concatenate([getattr(p, f) for p in parts])
                     for f in ("nll", "nll_base", "kl", "same_top", "position")))


def score(base: LogProbs, test: LogProbs, targets: np.ndarray,
          positions: np.ndarray) -> TokenScores:
    """Compare ``test`` with ``base`` at the same positions; ``targets[i]`` is the token that
    actually follows position i."""
    rows = np.arange(len(targets))
    lp_base, lp_test = base.values, test.values
    nll_base = -lp_base[rows, targets]
    if test is base:  # exactly zero, without a pass over the vocabulary
        return TokenScores(nll_base, nll_base.copy(), np.zeros(len(rows)),
                           np.ones(len(rows), dtype=bool), np.asarray(positions))
    kl = np.einsum("ij,ij->i", base.probs, lp_base - lp_test)
    return TokenScores(-lp_test[rows, targets], nll_base, kl, test.top == base.top,
                       np.asarray(positions))


@dataclass(frozen=True)
class Estimate:
    """A statistic with llama.cpp's standard error (0 where it gives none for so few values)."""

    value: float
    se: float


def mean_and_se(x: np.ndarray) -> Estimate:
    """llama.cpp's ``mean_and_uncertainty``: the mean and ``sqrt(var / (n - 1))`` from the sums
    of x and x^2; the error is 0 for n <= 10 or a non-positive variance."""
    n = len(x)
    if n < 1:
        return Estimate(0.0, 0.0)
    mean = float(np.sum(x)) / n
    var = float(np.sum(x * x)) / n - mean * mean
    return Estimate(mean, math.sqrt(var / (n - 1)) if var > 0 and n > 10 else 0.0)


def covariance(a: np.ndarray, b: np.ndarray) -> float:
    """llama.cpp's ``covariance``: of the two means, 0 for n < 10."""
    n = len(a)
    if n < 10:
        return 0.0
    return (float(np.sum(a * b)) / n - float(np.sum(a)) / n * (float(np.sum(b)) / n)) / (n - 1)


def percentile(sorted_values: np.ndarray, q: float) -> float:
    """Linear interpolation at ``q (n - 1)`` of sorted values (llama.cpp's ``percentile``)."""
    if q <= 0:
        return float(sorted_values[0])
    if q >= 1:
        return float(sorted_values[-1])
    p = q * (len(sorted_values) - 1)
    i = int(p)
    frac = p - i
    j = min(i + 1, len(sorted_values) - 1)
    return float((1 - frac) * sorted_values[i] + frac * sorted_values[j])


def median(sorted_values: np.ndarray) -> float:
    """The middle value, or the mean of the two middle values of an even count."""
    n = len(sorted_values)
    if n % 2:
        return float(sorted_values[n // 2])
    return float(0.5 * (sorted_values[n // 2] + sorted_values[n // 2 - 1]))


@dataclass(frozen=True)
class Summary:
    """Every statistic of one comparison over all its scored tokens (module docstring)."""

    count: int
    ppl: Estimate            # of the test model
    ppl_base: Estimate
    ppl_correlation: float   # Cor(ln PPL(test), ln PPL(base)), as llama.cpp prints it
    ln_ppl_ratio: Estimate
    ppl_ratio: Estimate
    kl_mean: Estimate
    kl_median: float
    kl_p99: float
    kl_p999: float
    kl_max: float
    same_top: Estimate       # a fraction (llama.cpp prints it in %)
    dp_mean: Estimate
    dp_rms: Estimate
    dp_max: float            # max |dp|


def summarize(s: TokenScores) -> Summary:
    """llama.cpp's final statistics from the per-token scores (at least one token)."""
    n = len(s.nll)
    if n < 1:
        raise ValueError("no scored tokens")
    log_ppl, log_base = mean_and_se(s.nll), mean_and_se(s.nll_base)
    cov = covariance(s.nll, s.nll_base)
    spread = log_ppl.se * log_base.se
    # se(nll)^2 + se(nll_base)^2 - 2 cov is var(nll - nll_base) / (n - 1): computed from the
    # differences it is exactly 0 when both sides agree, instead of a rounding residue.
    ln_ratio = Estimate(log_ppl.value - log_base.value, mean_and_se(s.nll - s.nll_base).se)
    ratio = math.exp(ln_ratio.value)
    kl_sorted = np.sort(s.kl)
    dp = s.dp
    mse = mean_and_se(dp * dp)
    rms = math.sqrt(mse.value)
    top = float(np.count_nonzero(s.same_top)) / n
    return Summary(
        count=n,
        ppl=_exp(log_ppl), ppl_base=_exp(log_base),
        ppl_correlation=cov / spread if spread > 0 else 0.0,
        ln_ppl_ratio=ln_ratio, ppl_ratio=Estimate(ratio, ratio * ln_ratio.se),
        kl_mean=mean_and_se(s.kl), kl_median=median(kl_sorted),
        kl_p99=percentile(kl_sorted, 0.99), kl_p999=percentile(kl_sorted, 0.999),
        kl_max=float(kl_sorted[-1]),
        same_top=Estimate(top, math.sqrt(top * (1 - top) / (n - 1)) if n > 1 else 0.0),
        dp_mean=mean_and_se(dp),
        dp_rms=Estimate(rms, 0.5 / rms * mse.se if rms > 0 else 0.0),
        dp_max=float(np.abs(dp).max()),
    )


def _exp(log: Estimate) -> Estimate:
    value = math.exp(log.value)
    return Estimate(value, value * log.se)
