"""Per-unit measures of accuracy and stability, from a member's metrics.csv curve.

Lower is better for every measure but ``converged_frac``; the comparison only says which arm is
lower. A diverged member's loss measures are +inf, so that it loses every paired comparison of
them (as in ``deqexp report``); a measure a run did not log is NaN (missing: the pair is left
out of that measure's comparison and counted as missing, never as zero).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..deq.solver_loop import OUTCOMES

ACCURACY = ("final_test_loss", "best_test_loss", "best_epoch", "auc_test_loss", "best_val_loss",
            "test_at_best_val")
STABILITY = ("diverged", *(f"{s}_{o}_share" for s in ("fwd", "bwd") for o in OUTCOMES[1:]),
             "fwd_iters_mean", "fwd_residual", "jac_norm")
DEFAULT = (*ACCURACY, *STABILITY)
DESCRIPTIONS = {
    "final_test_loss": "test loss at the last epoch (diverged: inf)",
    "best_test_loss": "lowest test loss over the evaluated epochs (diverged: inf)",
    "best_epoch": "the epoch of the lowest test loss",
    "auc_test_loss": "area under the test-loss curve over the epochs, divided by their span (diverged: inf)",
    "best_val_loss": "lowest validation loss (runs with dataset.val_fraction > 0 or a file's val split)",
    "test_at_best_val": "test loss at the epoch of the lowest validation loss (early stopping chosen on "
                        "validation: the number to report)",
    "epochs_to_threshold": "first evaluated epoch whose test loss is at most --threshold (never: inf)",
    "diverged": "1 if the member diverged (NaN/inf), else 0",
    "fwd_iters_mean": "forward solver iterations on the test split at the last epoch",
    "fwd_residual": "relative forward residual on the test split at the last epoch",
    "jac_norm": "||J||_2 of the fixed-point map at z* at the last epoch",
    **{f"fwd_{o}_share": f"share of the last epoch's forward (test) solves that ended '{o}'"
       for o in OUTCOMES[1:]},
    **{f"bwd_{o}_share": f"share of all epochs' adjoint (backward) solves that ended '{o}'"
       for o in OUTCOMES[1:]},
}
_NOT_MEASURES = {"member", "seed", "init", "scale", "epoch", "status", "val_loss"}


def _shares(counts: pd.DataFrame, solve: str) -> dict[str, float]:
    cols = [f"{solve}_n_{o}" for o in OUTCOMES]
    if not set(cols) <= set(counts.columns):
        return {f"{solve}_{o}_share": math.nan for o in OUTCOMES[1:]}
    n = counts[cols].to_numpy(dtype=float)
    n = n[np.isfinite(n).all(1)].sum(0)
    total = n.sum()
    return {f"{solve}_{o}_share": (n[i] / total if total else math.nan)
            for i, o in enumerate(OUTCOMES) if i}


def _last(curve: pd.DataFrame, col: str) -> float:
    if col not in curve.columns:
        return math.nan
    v = pd.to_numeric(curve[col], errors="coerce").to_numpy(dtype=float)
    return float(v[-1]) if len(v) else math.nan


def measures(curve: pd.DataFrame, diverged: bool, threshold: float | None = None) -> dict[str, float]:
    """Every measure of one member's curve (rows by epoch)."""
    epochs = curve["epoch"].to_numpy(dtype=float)
    loss = pd.to_numeric(curve["test_loss"], errors="coerce").to_numpy(dtype=float)
    finite = np.isfinite(loss)
    out = {"diverged": float(diverged)}
    best = int(np.argmin(np.where(finite, loss, np.inf))) if finite.any() else None
    out["best_epoch"] = float(epochs[best]) if best is not None else math.nan
    if diverged or not finite.all():
        out.update({k: math.inf for k in ("final_test_loss", "auc_test_loss")})
        out["best_test_loss"] = math.inf if diverged or best is None else float(loss[best])
    else:
        out["final_test_loss"] = float(loss[-1])
        out["best_test_loss"] = float(loss[best])
        span = epochs[-1] - epochs[0]
        out["auc_test_loss"] = float(np.trapezoid(loss, epochs) / span) if span > 0 else float(loss[0])
    if "val_loss" in curve.columns:
        val = pd.to_numeric(curve["val_loss"], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(val)
        at = int(np.argmin(np.where(ok, val, np.inf))) if ok.any() else None
        out["best_val_loss"] = math.inf if diverged or at is None else float(val[at])
        out["test_at_best_val"] = math.inf if diverged or at is None else float(loss[at])
    if threshold is not None:
        hit = np.flatnonzero(finite & (loss <= threshold))
        out["epochs_to_threshold"] = float(epochs[hit[0]]) if len(hit) else math.inf
    last = curve.iloc[[-1]]
    out.update(_shares(last, "fwd"))
    out.update(_shares(curve, "bwd"))
    for col in curve.columns:  # whatever else the run logged: its value at the last epoch
        if col not in _NOT_MEASURES and not col.startswith(("fwd_n_", "bwd_n_")) and col not in out:
            out[col] = _last(curve, col)
    return out
