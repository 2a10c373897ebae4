"""What every claim check shares: the verdicts, the paired sign test over seeds, how a
diverged seed counts, and the notes on convergence that every section adds."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

HELD, NOT_HELD, INCONCLUSIVE, BOUND, MEASURED = (
    "held", "did not hold", "inconclusive", "inconclusive (bound)", "measured")
VERDICTS = (HELD, NOT_HELD, INCONCLUSIVE, BOUND, MEASURED)
ALPHA = 0.05  # one-sided level of the paired sign test
Verdict = tuple[str, str]


def as_loss(values: pd.Series) -> pd.Series:
    """Test losses with NaN/inf (diverged) as +inf, so that they lose every comparison."""
    return values.where(np.isfinite(values), np.inf)


def diverged_rows(rows: pd.DataFrame) -> pd.Series:
    """Rows of a diverged member: marked so, or with a NaN/inf test loss."""
    return (rows.status != "ok") | ~np.isfinite(rows.test_loss)


def reported_epochs(last: int) -> list[int]:
    return sorted({0, last // 8, last // 4, last // 2, last})


# --------------------------------------------------------------------------- paired comparisons
def sign_test(wins: int, losses: int) -> float:
    """One-sided exact sign test (scipy's ``binomtest``): the chance of ``wins`` or more wins in
    ``wins + losses`` fair coin flips (ties are dropped); 1 when there is nothing to compare."""
    from scipy.stats import binomtest

    n = wins + losses
    return float(binomtest(wins, n, 0.5, alternative="greater").pvalue) if n else 1.0


@dataclass
class Paired:
    """``base`` against ``other``, seed by seed: wins, losses, ties and both one-sided p."""

    seeds: int
    wins: int
    losses: int

    @property
    def rate(self) -> float:
        return self.wins / self.seeds if self.seeds else math.nan

    @property
    def p(self) -> float:
        """p that base is not better (small: base wins significantly)."""
        return sign_test(self.wins, self.losses)

    @property
    def p_other(self) -> float:
        return sign_test(self.losses, self.wins)

    def verdict(self) -> str:
        return HELD if self.p <= ALPHA else NOT_HELD if self.p_other <= ALPHA else INCONCLUSIVE

    def describe(self, base: str = "kglm") -> str:
        best = 0.5**self.seeds if self.seeds else 1.0
        reach = "" if best <= ALPHA else f"; {self.seeds} seeds can reach p = {best:.3g} at best"
        return (f"{base} better in {self.wins} of {self.seeds} paired seeds "
                f"(one-sided sign test p = {self.p:.3g}{reach})")


def paired(a: pd.Series, b: pd.Series) -> Paired:
    """Compare two per-seed loss series (index: seed) on their common seeds; NaN/inf lose."""
    common = a.index.intersection(b.index)
    x, y = as_loss(a[common]), as_loss(b[common])
    return Paired(len(common), int((x < y).sum()), int((x > y).sum()))


def has_jacobian(df: pd.DataFrame) -> bool:
    """Whether the runs logged jac_norm (older runs, or trainer.jac_samples=0, did not)."""
    return "jac_norm" in df and bool(df.jac_norm.notna().any())


def outcome_share(g: pd.DataFrame, solve: str, outcome: str = "converged") -> float:
    """Share of a group's ``solve`` (fwd / bwd) samples that ended with ``outcome``, from the
    metrics' outcome counts (NaN for runs that did not log them)."""
    cols = [c for c in g.columns if c.startswith(f"{solve}_n_")]
    if not cols:
        return math.nan
    total = g[cols].sum().sum()
    return float(g[f"{solve}_n_{outcome}"].sum() / total) if total else math.nan


def _outcomes_text(row) -> str:
    if "fwd_stalled" not in row or not np.isfinite(row["fwd_stalled"]):
        return ""
    return (f"; of its test samples {row['fwd_cap']:.0%} were still improving at the cap, "
            f"{row['fwd_stalled']:.0%} had stalled and {row['fwd_nonfinite']:.0%} were non-finite")


def convergence_note(table: pd.DataFrame, where: str = "epoch") -> str:
    """A sentence saying whether the forward solves reached their tolerance."""
    worst = table.loc[table.converged_frac.idxmin()]
    if worst.converged_frac >= 1.0:
        return "The forward solves reached their tolerance everywhere (converged fraction 1)."
    return (f"The DEQ was NOT at its fixed point: the forward solver stopped at its iteration "
            f"cap with converged fraction as low as {worst.converged_frac:.2g} ({worst.init}, "
            f"{where} {worst[where]:.3g}, mean relative residual {worst.fwd_residual:.2g}"
            f"{_outcomes_text(worst)}); the "
            f"losses are those of the iterate it stopped at, and the implicit gradient was taken "
            f"at a point that is not a fixed point.")


def combine(verdicts: list[str]) -> str:
    """One verdict for a claim made against several competitors: held only if held against each."""
    if NOT_HELD in verdicts:
        return NOT_HELD
    return HELD if verdicts and all(v == HELD for v in verdicts) else INCONCLUSIVE
