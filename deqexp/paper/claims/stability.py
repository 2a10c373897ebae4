"""The stabilisers (issue 18): plain, Jacobian regularisation, spectral normalisation and the
monotone parametrisation, each with E1's inits, against the plain model."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .common import (
    MEASURED,
    NOT_HELD,
    Verdict,
    combine,
    diverged_rows,
    from_row,
    outcome_share,
    paired,
)

STABILISERS = ("plain", "jac_reg", "spectral", "monotone")


def stabiliser_of(cfg: dict) -> str:
    """Which stabiliser a run's resolved config switched on (conf/stabiliser/)."""
    recurrence = cfg.get("model", {}).get("recurrence", "free")
    if recurrence != "free":
        return recurrence
    return "jac_reg" if cfg.get("trainer", {}).get("jac_reg", {}).get("weight", 0) > 0 else "plain"


def stability_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per stabiliser and init at the last epoch: test loss over seeds (diverged: +inf), the
    forward and backward solves' converged shares and the forward's stalled share (from the
    outcome counts), the Jacobian norm, and for naive/random kglm's paired wins and the raw
    Wilcoxon signed-rank p within that stabiliser; for each stabiliser but plain, how often it
    lowered the same init's and seed's loss against plain (raw p: a description)."""
    last = df[df.epoch == df.epoch.max()]
    plain = last[last.stabiliser == "plain"]
    rows = []
    for stab in [s for s in STABILISERS if s in set(last.stabiliser)]:
        at = last[last.stabiliser == stab]
        kglm = at[at.init == "kglm"].set_index("seed").test_loss
        for init, g in at.groupby("init", sort=False):
            dead = diverged_rows(g)
            row = {"stabiliser": stab, "init": init, "epoch": int(g.epoch.iloc[0]), "seeds": len(g),
                   "mean": g.test_loss.where(~dead, np.inf).mean(), "diverged": int(dead.sum()),
                   "fwd_converged": outcome_share(g, "fwd"),
                   "fwd_stalled": outcome_share(g, "fwd", "stalled"),
                   "bwd_converged": outcome_share(g, "bwd"), "jac_norm": g.jac_norm.mean()}
            if init != "kglm":
                cmp = paired(kglm, g.set_index("seed").test_loss)
                row.update(cmp.as_row())
            if stab != "plain" and len(plain):
                base = plain[plain.init == init].set_index("seed").test_loss
                vs = paired(g.set_index("seed").test_loss, base)
                row.update(better_than_plain=vs.wins, vs_plain_pairs=vs.seeds, vs_plain_p=vs.p)
            rows.append(row)
    return pd.DataFrame(rows)


def stability_claim(table: pd.DataFrame) -> Verdict:
    """Measured, not a claim of the paper: per stabiliser, whether kglm still beats naive and
    random (paired, as in E1: each a test of the report's corrected family), with the numbers."""
    parts = []
    for stab, g in table.groupby("stabiliser", sort=False):
        g = g.set_index("init")
        others = [i for i in g.index if i != "kglm"]
        tests = {o: from_row(g.loc[o]).decides(f"{stab}: kglm vs {o}") for o in others}
        verdicts = [t.verdict() for t in tests.values()]
        if "kglm" in g.index and g.loc["kglm", "diverged"] > max(g.loc[o, "diverged"] for o in others):
            verdicts.append(NOT_HELD)
        k = g.loc["kglm"]
        cmp = "; ".join(f"{o} {g.loc[o, 'mean']:.4g} ({t.describe()})" for o, t in tests.items())
        fwd = ", ".join(f"{i} {g.loc[i, 'fwd_converged']:.0%}" for i in g.index)
        jac = ", ".join(f"{i} {g.loc[i, 'jac_norm']:.3g}" for i in g.index)
        parts.append(f"**{stab}**: kGLM advantage {combine(verdicts)}: kglm {k['mean']:.4g} vs {cmp}; "
                     f"forward solves converged {fwd}; ||J_f(z)||_2 {jac}")
    return MEASURED, ("final mean test loss per stabiliser, paired by seed within each. "
                      + ". ".join(parts) + ".")
