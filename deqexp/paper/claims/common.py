"""What every claim check shares: the verdicts, the paired test over seeds (the engine of
``deqexp compare``, Holm-corrected over the report: :mod:`.family`), how a diverged seed
counts, and the notes on convergence that every section adds."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from deqexp.sweep.stats import ALPHA, compare_paired

from . import family

HELD, NOT_HELD, INCONCLUSIVE, BOUND, MEASURED = (
    "held", "did not hold", "inconclusive", "inconclusive (bound)", "measured")
VERDICTS = (HELD, NOT_HELD, INCONCLUSIVE, BOUND, MEASURED)
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
def best_possible_p(n: int) -> float:
    """The smallest two-sided exact Wilcoxon (or sign test) p that ``n`` pairs can give."""
    return min(1.0, 2 * 0.5**n) if n else 1.0


@dataclass
class Paired:
    """``base`` against ``other``, seed by seed: wins, losses, the two-sided Wilcoxon
    signed-rank p and which side ranks lower (``base``, ``other`` or ``""``). ``name`` is set
    once the comparison decides a verdict (:meth:`decides`): its p is then corrected with the
    report's other such tests."""

    seeds: int
    wins: int
    losses: int
    p: float = math.nan
    lower: str = ""
    name: str = ""

    @property
    def rate(self) -> float:
        return self.wins / self.seeds if self.seeds else math.nan

    @property
    def p_adjusted(self) -> float:
        return family.current().adjusted_p(self.name, self.p) if self.name else self.p

    def decides(self, what: str) -> Paired:
        """Register this comparison as one of the report's verdict-deciding tests."""
        self.name = family.current().register(what, self.p, self.seeds, self.lower)
        return self

    def verdict(self) -> str:
        p = self.p_adjusted
        if not self.lower or math.isnan(p) or p >= ALPHA:
            return INCONCLUSIVE
        return HELD if self.lower == "base" else NOT_HELD

    def describe(self, base: str = "kglm") -> str:
        best = best_possible_p(self.seeds)
        reach = "" if best < ALPHA else f"; {self.seeds} seeds can reach p = {best:.3g} at best"
        holm = (f", Holm-adjusted p = {self.p_adjusted:.3g}" if self.name and
                family.current().adjusted is not None else "")
        return (f"{base} better in {self.wins} of {self.seeds} paired seeds "
                f"(Wilcoxon signed-rank p = {self.p:.3g}{holm}{reach})")

    def as_row(self) -> dict:
        """The columns a table keeps of it (a claim rebuilds it with :func:`from_row`)."""
        return {"kglm_beats": self.rate, "pairs": self.seeds, "wins": self.wins, "losses": self.losses,
                "p_wilcoxon": self.p, "lower": self.lower}


def from_row(row) -> Paired:
    """The comparison a table row holds (:meth:`Paired.as_row`)."""
    return Paired(int(row["pairs"]), int(row["wins"]), int(row["losses"]), float(row["p_wilcoxon"]),
                  row["lower"] if isinstance(row["lower"], str) else "")


def paired(a: pd.Series, b: pd.Series) -> Paired:
    """Compare two per-seed loss series (index: seed) on their common seeds; NaN/inf lose."""
    common = a.index.intersection(b.index)
    x, y = as_loss(a[common]), as_loss(b[common])
    if not len(common):
        return Paired(0, 0, 0)
    r = compare_paired(x.to_numpy(), y.to_numpy())
    return Paired(len(common), int((x < y).sum()), int((x > y).sum()), r.p_wilcoxon,
                  {"a": "base", "b": "other"}.get(r.lower, ""))


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
