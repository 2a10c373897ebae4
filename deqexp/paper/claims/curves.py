"""E1 and E6: the inits' test-loss curves over seeds, and whether kglm beats the others."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .common import (
    HELD,
    INCONCLUSIVE,
    NOT_HELD,
    Paired,
    Verdict,
    as_loss,
    combine,
    convergence_note,
    diverged_rows,
    from_row,
    has_jacobian,
    outcome_share,
    paired,
    reported_epochs,
)


def paired_at(df: pd.DataFrame, epoch: int, other: str, base: str = "kglm") -> Paired:
    """``base`` against ``other`` at ``epoch``, seed by seed."""
    at = df[df.epoch == epoch]
    return paired(at[at.init == base].set_index("seed").test_loss,
                  at[at.init == other].set_index("seed").test_loss)


def curves_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per init and reported epoch: test loss min / mean / max over seeds (a diverged seed is
    +inf; ``mean_finished`` leaves it out), diverged members, the forward solver's mean relative
    residual and converged fraction, mean ||W||_2, the mean and largest Jacobian norm of the
    fixed-point map at z* (when logged), and for the other inits the fraction of seeds that
    kglm beats (paired), the Wilcoxon signed-rank p (raw: a description; the verdict's test is
    corrected with the report's others) and whether the seed ranges overlap kglm's."""
    rows = []
    for e in reported_epochs(int(df.epoch.max())):
        at = df[df.epoch == e]
        kglm = as_loss(at[at.init == "kglm"].test_loss)
        for init, g in at.groupby("init", sort=False):
            dead = diverged_rows(g)
            v = g.test_loss.where(~dead, np.inf)
            row = {"init": init, "epoch": e, "seeds": len(v), "min": v.min(), "mean": v.mean(),
                   "mean_finished": v[~dead].mean(), "max": v.max(), "diverged": int(dead.sum()),
                   "fwd_residual": g.fwd_residual.mean(), "converged_frac": g.converged_frac.mean(),
                   "op_norm_W": g.op_norm_W.mean(), **_jacobian_stats(g), **_outcome_stats(g)}
            if init != "kglm" and len(kglm):
                cmp = paired_at(df, e, init)
                row.update(**cmp.as_row(),
                           overlaps_kglm=bool(v.min() <= kglm.max() and kglm.min() <= v.max()))
            rows.append(row)
    return pd.DataFrame(rows)


def _jacobian_stats(g: pd.DataFrame) -> dict:
    """Mean and largest jac_norm of a group of rows (nothing for runs that did not log it)."""
    if not has_jacobian(g):
        return {}
    return {"jac_norm": g.jac_norm.mean(), "jac_norm_max": g.jac_norm.max()}


def _outcome_stats(g: pd.DataFrame) -> dict:
    """Shares of the forward solves that hit the cap, stalled or went non-finite (runs that
    logged the outcome counts; older runs give nothing)."""
    if "fwd_n_cap" not in g or not bool(g.fwd_n_cap.notna().any()):
        return {}
    return {f"fwd_{o}": outcome_share(g, "fwd", o) for o in ("cap", "stalled", "nonfinite")}


def stability_note(table: pd.DataFrame) -> str:
    """A sentence on the fixed-point map's Jacobian norm per init at the last epoch: below 1
    the map is a local contraction at the solution (the stability the paper's claim is about)."""
    if "jac_norm" not in table:
        return ""
    last = table[table.epoch == table.epoch.max()]
    parts = [f"{r.init} {r.jac_norm:.3g} (max {r.jac_norm_max:.3g})" for r in last.itertuples()]
    return ("Jacobian norm of the fixed-point map at the solver's z (z* where it converged), "
            "||J_f(z)||_2, mean over seeds at the last epoch (< 1: locally contractive): "
            + "; ".join(parts) + ".")


def _mean_text(r) -> str:
    if not r["diverged"]:
        return f"{r['mean']:.4g}"
    return f"{r['mean']:.4g} ({int(r['diverged'])} diverged; the others {r['mean_finished']:.4g})"


def curves_claim(table: pd.DataFrame) -> Verdict:
    """kglm beats every other init at the last epoch: it ranks lower over the paired seeds
    significantly (Wilcoxon signed-rank, Holm-corrected over the report's verdicts), with a lower
    mean and no more diverged members; it did not hold when another init ranks lower
    significantly or kglm diverged more; inconclusive otherwise."""
    last = table[table.epoch == table.epoch.max()].set_index("init")
    k = last.loc["kglm"]
    others = [i for i in last.index if i != "kglm"]
    verdicts, parts = [], [f"kglm {_mean_text(k)} (range {k['min']:.4g}-{k['max']:.4g})"]
    for o in others:
        r = last.loc[o]
        cmp = from_row(r).decides(f"kglm vs {o}")
        v = cmp.verdict()
        if k["diverged"] > r["diverged"]:
            v = NOT_HELD
        elif v == HELD and not k["mean"] < r["mean"]:
            v = INCONCLUSIVE
        verdicts.append(v)
        parts.append(f"{o} {_mean_text(r)} (range {r['min']:.4g}-{r['max']:.4g}; {cmp.describe()}, "
                     f"ranges {'overlap' if r['overlaps_kglm'] else 'do not overlap'})")
    return combine(verdicts), (
        f"final mean test loss over {int(k['seeds'])} seeds at epoch {int(k['epoch'])}: "
        + "; ".join(parts) + ". " + convergence_note(table) + (" " + stability_note(table)).rstrip())


def compare_curves(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Last-epoch mean test loss, converged fraction, residual and (when logged) Jacobian norm
    per init, one column group per variant (e.g. the authors' counting, one application fewer,
    solved to equilibrium)."""
    out = None
    for label, t in tables.items():
        last = t[t.epoch == t.epoch.max()].set_index("init")
        part = pd.DataFrame({f"{label}: mean": last["mean"], f"{label}: converged_frac": last.converged_frac,
                             f"{label}: residual": last.fwd_residual})
        if "jac_norm" in last:
            part[f"{label}: jac_norm"] = last.jac_norm
        out = part if out is None else out.join(part, how="outer")
    return out.reset_index()


def count_sensitivity(authors: pd.DataFrame, fewer: pd.DataFrame) -> tuple[float, str]:
    """Largest relative change of an init's mean test loss curve when each solve applies f once
    less; a converged solver gives ~0."""
    a = authors.groupby(["init", "epoch"]).test_loss.mean()
    b = fewer.groupby(["init", "epoch"]).test_loss.mean()
    rel = ((a - b).abs() / a.abs()).dropna()
    worst = rel.idxmax()
    last = int(authors.epoch.max())
    finals = "; ".join(f"{i} {a[(i, last)]:.4g} -> {b[(i, last)]:.4g}" for i in a.index.levels[0]
                       if (i, last) in a and (i, last) in b)
    return float(rel.max()), (f"with one application of f fewer per solve, the mean test loss "
                              f"changes by up to {rel.max():.1%} ({worst[0]}, epoch {worst[1]}); "
                              f"final epoch: {finals}")
