"""``deqexp compare``'s files: the CSV tables, COMPARE.md with its figures, and a W&B run."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..run.folder import atomic_write
from .stats import ALPHA, RESAMPLES


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curves_figure(curves: pd.DataFrame, path: Path) -> None:
    """Test loss per arm: the median over pairs and the interquartile band, log y."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    finite = curves[np.isfinite(curves.test_loss) & (curves.test_loss > 0)]
    for arm, g in finite.groupby("arm", sort=False):
        q = g.groupby("epoch").test_loss.quantile([0.25, 0.5, 0.75]).unstack()
        line, = ax.plot(q.index, q[0.5], label=f"{arm} (median)")
        ax.fill_between(q.index, q[0.25], q[0.75], color=line.get_color(), alpha=0.25)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test loss (median, IQR over pairs)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def differences_figure(units: pd.DataFrame, metric: str, path: Path) -> None:
    """Per pair, the difference of ``metric`` between the first arm and each other arm."""
    plt = _plt()
    arms = list(dict.fromkeys(units.arm))
    base = units[units.arm == arms[0]].set_index("pair")[metric]
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    for i, arm in enumerate(arms[1:]):
        other = units[units.arm == arm].set_index("pair")[metric]
        both = base.index.intersection(other.index)
        d = (base[both] - other[both]).to_numpy(float)
        finite = np.isfinite(d)
        x = np.full(len(d), i) + np.linspace(-0.2, 0.2, len(d)) if len(d) > 1 else np.full(len(d), i)
        ax.scatter(x[finite], d[finite], s=14)
        cap = np.nanmax(np.abs(d[finite])) * 1.2 if finite.any() else 1.0
        ax.scatter(x[~finite], np.sign(d[~finite]) * cap, marker="x", color="k")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(range(len(arms) - 1), [f"{arms[0]}\n- {a}" for a in arms[1:]], fontsize=7)
    ax.set_ylabel(f"{metric}: paired difference\n(x: a diverged member)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def outcome_map(units: pd.DataFrame, keys: list[str], path: Path) -> None:
    """Two swept keys: median final test loss per cell; diverged and at-cap cells marked."""
    plt = _plt()
    k1, k2 = keys
    show = lambda v: "null" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)  # noqa: E731
    u = units.assign(_r=units[k1].map(show), _c=units[k2].map(show))
    rows, cols = list(dict.fromkeys(u._r)), list(dict.fromkeys(u._c))
    med = u.groupby(["_r", "_c"]).final_test_loss.median().unstack().reindex(index=rows, columns=cols)
    dead = u.groupby(["_r", "_c"]).diverged.mean().unstack().reindex(index=rows, columns=cols)
    cap = u.groupby(["_r", "_c"]).fwd_cap_share.median().unstack().reindex(index=rows, columns=cols) \
        if "fwd_cap_share" in u else dead * 0
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(cols), 1.2 + 0.5 * len(rows)))
    val = np.log10(med.where(np.isfinite(med)).to_numpy(float))
    im = ax.imshow(val, cmap="viridis_r", aspect="auto")
    for i in range(len(rows)):
        for j in range(len(cols)):
            mark = "diverged" if dead.iloc[i, j] >= 0.5 else ("at cap" if cap.iloc[i, j] > 0.5 else "")
            ax.text(j, i, mark, ha="center", va="center", fontsize=7, color="red")
    ax.set_xticks(range(len(cols)), cols, rotation=45, fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel(k2)
    ax.set_ylabel(k1)
    fig.colorbar(im, label="log10 median\nfinal test loss")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _md(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, floatfmt=".4g")


def markdown(c, figures: list[str]) -> str:
    t = c.table
    lines = ["# Comparison", "",
             f"- {len(c.units)} members of {c.units.run.nunique()} completed runs; arms by "
             f"`{', '.join(c.arm_keys)}`, pairs by `{', '.join(c.pair_keys) or 'none'}`.",
             f"- Every test is paired. p_wilcoxon: two-sided Wilcoxon signed-rank (scipy); p_sign: two-sided "
             f"exact sign test (scipy's binomtest); p_holm: Holm's correction of p_wilcoxon over "
             f"all {len(t)} comparisons in this file; the verdict needs p_holm < {ALPHA}.",
             f"- mean_diff, ci_low, ci_high: a - b over the pairs where both are finite (n_finite), with "
             f"a percentile bootstrap interval ({RESAMPLES} resamples, seeded). A diverged member's loss is "
             "inf: it loses its comparisons and is counted in the rank tests, not in the mean.",
             f"- Unpaired members (no partner in the other arm) are left out and counted: "
             f"{int(t.unpaired_a.max() + t.unpaired_b.max()) if len(t) else 0} at most per comparison.", ""]
    if c.selected:
        lines[-1:-1] = ["- Selected before comparing (lowest median best loss per arm): "
                        + "; ".join(c.selected) + "."]
    if c.left_out:
        lines += ["## Runs left out (not complete)", "",
                  _md(pd.DataFrame([(str(p), s) for p, s in c.left_out], columns=["run", "state"])), ""]
    lines += ["## Comparisons", "", _md(t.drop(columns=["n_missing"])), "",
              "## Arms", "", _md(c.arms), ""]
    lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    atomic_write(path, df.to_csv(index=False))


def write_outputs(c, out: Path, wandb: bool = True) -> None:
    """comparison.csv, arms.csv, units.csv, the figures, COMPARE.md (last) and the W&B run."""
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(c.table, out / "comparison.csv")
    _write_csv(c.arms, out / "arms.csv")
    _write_csv(c.units.drop(columns=["pair_key", "arm_order"]), out / "units.csv")
    figures = ["curves.png"]
    curves_figure(c.curves, out / "curves.png")
    if c.pair_keys:
        differences_figure(c.units, "final_test_loss", out / "differences.png")
        figures.append("differences.png")
    if len(c.named_by) == 2:
        outcome_map(c.units, c.named_by, out / "outcome_map.png")
        figures.append("outcome_map.png")
    atomic_write(out / "COMPARE.md", markdown(c, figures))
    if wandb:
        log_wandb(c, out, figures)


def log_wandb(c, out: Path, figures: list[str]) -> None:
    """One offline W&B run named "compare" in ``out``: the tables and the figures."""
    import os

    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")  # W&B's own three lines per run are noise here
    mode = "offline" if os.environ.get("WANDB_MODE") in (None, "", "offline") else os.environ["WANDB_MODE"]
    run = wandb.init(project="deqexp", name="compare", job_type="compare", dir=str(out), mode=mode,
                     config={"arm_keys": c.arm_keys, "pair_keys": c.pair_keys},
                     settings=wandb.Settings(quiet=True, console="off"))
    try:
        tables = {"comparison": c.table, "arms": c.arms}
        run.log({name: wandb.Table(dataframe=df.astype(object).where(df.notna(), None))
                 for name, df in tables.items()}
                | {f.removesuffix(".png"): wandb.Image(str(out / f)) for f in figures})
    finally:
        run.finish()
