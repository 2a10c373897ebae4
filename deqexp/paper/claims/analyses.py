"""E4 (does a kGLM-initialised DEQ reproduce the kGLM's denoising?) and E5 (what the kGLM init costs)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .common import (
    HELD,
    MEASURED,
    NOT_HELD,
    Verdict,
)


def agreement_table(df: pd.DataFrame) -> pd.DataFrame:
    return (df.groupby("init", sort=False)
              .agg(images=("image", "count"), msd_mean=("msd", "mean"), msd_max=("msd", "max"),
                   pixels_differ_mean=("pixels_differ", "mean"),
                   pixels_differ_max=("pixels_differ", "max"), iterations_max=("iterations", "max"),
                   converged_frac=("converged", "mean"))
              .reset_index())


def agreement_claim(table: pd.DataFrame) -> Verdict:
    t = table.set_index("init")
    k, r = t.loc["kglm"], t.loc["random"]
    held = bool(k.msd_max < 1e-10 and k.pixels_differ_max == 0 and r.msd_mean > 1e-3)
    return (HELD if held else NOT_HELD), (
        f"kglm: mean squared difference {k.msd_mean:.3g} (max {k.msd_max:.3g}), "
        f"{k.pixels_differ_max:.0f} pixels differ at most; random: {r.msd_mean:.3g}, "
        f"{r.pixels_differ_mean:.1f} pixels differ on average ({int(k.images)} images)")


# --------------------------------------------------------------------------- E5
def timing_table(df: pd.DataFrame) -> pd.DataFrame:
    med = df.groupby(["layer", "size", "init"]).seconds.median().unstack("init").reset_index()
    med["kglm/random"] = med["kglm"] / med["random"]
    return med.rename(columns={"kglm": "kglm_s", "random": "random_s"})


def timing_claim(table: pd.DataFrame) -> Verdict:
    """A measurement, not a pass/fail claim: the cost ratio at the largest size and how the
    kglm init's time grows with the size (log-log slope)."""
    parts = []
    for layer, g in table.groupby("layer"):
        row = g.loc[g["size"].idxmax()]
        sizes = np.log(g["size"].astype(float))
        slope = np.polyfit(sizes, np.log(g.kglm_s), 1)[0] if len(g) > 1 else math.nan
        parts.append(f"{layer} size {row['size']}: kglm {row.kglm_s * 1e3:.3g} ms vs random "
                     f"{row.random_s * 1e3:.3g} ms, ratio {row['kglm/random']:.3g}x; kglm time grows "
                     f"as size^{slope:.2f}")
    return MEASURED, "the kglm init against a random draw, median over trials: " + "; ".join(parts)
