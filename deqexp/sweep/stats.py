"""Paired statistics for comparing two arms: one function per statistic, scipy where it serves.

The pairs are the same data (typically the same seed): every test here is paired. Infinite
values (a diverged member's loss) take part in the rank tests as the largest differences of
their sign, so a diverged member loses its comparison; the mean and its bootstrap interval are
over the pairs where both values are finite (their count is ``n_finite``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05        # two-sided level of the verdicts, after Holm's correction
RESAMPLES = 10_000  # bootstrap resamples of the mean difference
SEED = 0            # the bootstrap's generator: the same inputs give the same interval


def differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a - b`` per pair, where two infinities of the same sign are a tie (0), not NaN."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    with np.errstate(invalid="ignore"):
        d = a - b
    return np.where(np.isinf(a) & np.isinf(b) & (np.sign(a) == np.sign(b)), 0.0, d)


def rank_safe(d: np.ndarray) -> np.ndarray:
    """``d`` with +-inf replaced by finite values larger in size than every finite one (the
    signed-rank and sign tests depend on ranks and signs only)."""
    finite = np.abs(d[np.isfinite(d)])
    big = 2.0 * (finite.max() if finite.size else 1.0) + 1.0
    return np.where(np.isinf(d), np.sign(d) * big, d)


def wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p (scipy: exact for small n without ties or zeros);
    1 when every difference is zero, NaN with no pairs."""
    d = rank_safe(d)
    if d.size == 0:
        return math.nan
    if not np.any(d != 0):
        return 1.0
    return float(stats.wilcoxon(d, alternative="two-sided").pvalue)


def sign_p(d: np.ndarray) -> float:
    """Two-sided exact sign test (scipy's binomtest; ties dropped); 1 with no untied pair."""
    below, above = int(np.sum(d < 0)), int(np.sum(d > 0))
    if below + above == 0:
        return 1.0 if d.size else math.nan
    return float(stats.binomtest(below, below + above, 0.5, alternative="two-sided").pvalue)


def bootstrap_ci(d: np.ndarray, level: float = 0.95, resamples: int = RESAMPLES,
                 seed: int = SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of the finite differences (pairs resampled)."""
    d = d[np.isfinite(d)]
    if d.size == 0:
        return math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, d.size, size=(resamples, d.size))
    means = d[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and is not counted in the family)."""
    p = np.asarray(pvalues, float)
    out = np.full(p.shape, math.nan)
    ok = np.flatnonzero(~np.isnan(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m, running = len(order), 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[j]))
        out[j] = running
    return out


@dataclass
class PairedResult:
    """One arm against another on one measure; ``mean_diff`` etc. are ``a - b``."""

    n_pairs: int
    n_finite: int
    mean_diff: float
    median_diff: float
    ci_low: float
    ci_high: float
    p_wilcoxon: float
    p_sign: float
    lower: str  # "a", "b" or "" (no untied pair): the arm whose values rank lower

    def as_dict(self) -> dict:
        return asdict(self)


def compare_paired(a, b) -> PairedResult:
    """The paired statistics of ``a`` against ``b`` (equal-length arrays, one entry a pair;
    pairs with a missing (NaN) value are dropped first)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    keep = ~(np.isnan(a) | np.isnan(b))
    d = differences(a[keep], b[keep])
    keep_d = ~np.isnan(d)
    d = d[keep_d]
    finite = d[np.isfinite(d)]
    ranked = rank_safe(d)
    ranks = stats.rankdata(np.abs(ranked[ranked != 0]))
    below = ranks[ranked[ranked != 0] < 0].sum()
    above = ranks[ranked[ranked != 0] > 0].sum()
    lower = "a" if below > above else "b" if above > below else ""
    lo, hi = bootstrap_ci(d)
    with np.errstate(invalid="ignore"):  # the median of infinities interpolates inf - inf
        median = float(np.median(d)) if d.size else math.nan
    return PairedResult(
        n_pairs=int(d.size), n_finite=int(finite.size),
        mean_diff=float(finite.mean()) if finite.size else math.nan,
        median_diff=median,
        ci_low=lo, ci_high=hi, p_wilcoxon=wilcoxon_p(d), p_sign=sign_p(d), lower=lower)


def verdict(lower: str, p_adjusted: float, a: str, b: str, n: int, alpha: float = ALPHA) -> str:
    """"A lower", "B lower" or "no detectable difference (n = ..)", from the adjusted p."""
    if lower and not math.isnan(p_adjusted) and p_adjusted < alpha:
        return f"{a if lower == 'a' else b} lower"
    return f"no detectable difference (n = {n})"
