"""The report's figures (PNG, matplotlib without a display)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .claims import has_jacobian

COLORS = {"kglm": "tab:blue", "naive": "tab:orange", "random": "tab:red"}

def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    _figure().close(fig)


def curves_figure(df: pd.DataFrame, path: Path, title: str) -> None:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for init, g in df.groupby("init", sort=False):
        stats = g.groupby("epoch").test_loss.agg(["min", "mean", "max"])
        ax.plot(stats.index, stats["mean"], color=COLORS.get(init), label=f"{init} (mean)")
        ax.fill_between(stats.index, stats["min"], stats["max"], color=COLORS.get(init), alpha=0.25)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test loss (min / mean / max over seeds)")
    ax.set_title(title, fontsize=10)
    ax.legend()
    _save(fig, path, 120)


def sweep_figure(df: pd.DataFrame, path: Path, title: str) -> None:
    plt = _figure()
    epochs = sorted(df.epoch.unique())
    fig, axes = plt.subplots(1, len(epochs), figsize=(3.2 * len(epochs), 3.2), sharey=True)
    axes = np.atleast_1d(axes)
    finite = df[np.isfinite(df.test_loss)]
    # losses far above the bulk (blown-up members) are drawn at the cap as triangles
    cap = 100 * float(finite[finite.epoch == 0].test_loss.median()) if len(finite) else np.inf
    for ax, e in zip(axes, epochs):
        g = finite[finite.epoch == e]
        for init, gi in g.groupby("init", sort=False):
            norm = 0.5 * (gi.op_norm_W + gi.op_norm_U)
            high = gi.test_loss > cap
            ax.scatter(norm[~high], gi.test_loss[~high], s=10, alpha=0.6, color=COLORS.get(init),
                       label=init)
            if high.any():
                ax.scatter(norm[high], np.full(int(high.sum()), cap), s=22, marker="^",
                           color=COLORS.get(init), label=f"{init}: loss > {cap:.2g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"epoch {e}", fontsize=9)
        ax.set_xlabel("mean operator norm (W, U)")
    axes[0].set_ylabel("test MSE")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    _save(fig, path, 110)


def agreement_figure(panel: Path, path: Path) -> None:
    plt = _figure()
    arrays = np.load(panel)
    cols = [("noisy", "noisy input"), ("exact", "exact kGLM (stretched)"),
            ("kglm", "DEQ, kglm init"), ("random", "DEQ, random init")]
    n = arrays["noisy"].shape[0]
    fig, axes = plt.subplots(n, len(cols), figsize=(2.1 * len(cols), 2.1 * n), squeeze=False)
    for i in range(n):
        # the fitted probabilities sit close to 0.5 (strong regularisation): one contrast
        # stretch per row, from the exact fit's range, shared by the three predictions
        lo, hi = float(arrays["exact"][i].min()), float(arrays["exact"][i].max())
        for j, (key, label) in enumerate(cols):
            vmin, vmax = (0.0, 1.0) if key == "noisy" else (lo, hi)
            axes[i, j].imshow(arrays[key][i], cmap="gray", vmin=vmin, vmax=vmax)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if i == 0:
                axes[i, j].set_title(label, fontsize=9)
    _save(fig, path, 110)


def timing_figure(df: pd.DataFrame, path: Path) -> None:
    plt = _figure()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, layer, xlabel in ((axes[0], "dense", "width"), (axes[1], "conv", "channels")):
        g = df[df.layer == layer]
        for init, gi in g.groupby("init"):
            s = gi.groupby("size").seconds.agg(["median", "min", "max"])
            ax.plot(s.index, s["median"], marker="o", color=COLORS.get(init), label=init)
            ax.fill_between(s.index, s["min"], s["max"], color=COLORS.get(init), alpha=0.2)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("seconds to initialise")
        ax.set_title(f"{layer} layer", fontsize=10)
        ax.legend()
    _save(fig, path, 110)


def convergence_figure(df: pd.DataFrame, path: Path, title: str) -> None:
    """Per init, mean over seeds against the epoch: the forward solve's relative residual and
    converged fraction, ||W||_2, and (when logged) the fixed-point map's Jacobian norm."""
    plt = _figure()
    panels = [("fwd_residual", "forward relative residual", True),
              ("converged_frac", "converged fraction", False), ("op_norm_W", "||W||_2", False)]
    if has_jacobian(df):
        panels.append(("jac_norm", "||J_f(z)||_2 at the solver's z", False))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.2))
    for ax, (col, label, log) in zip(axes, panels):
        for init, g in df.groupby("init", sort=False):
            ax.plot(*zip(*g.groupby("epoch")[col].mean().items()), color=COLORS.get(init), label=init)
        if log:
            ax.set_yscale("log")
        if col == "jac_norm":
            ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    _save(fig, path, 110)


def stability_figure(df: pd.DataFrame, path: Path, title: str) -> None:
    """A sweep's solver and stability against the epoch, per init: the forward residual and
    (when logged) the fixed-point map's Jacobian norm; a thin line per scale (mean over
    seeds), the median over scales in bold."""
    plt = _figure()
    panels = [("fwd_residual", "forward relative residual")]
    if has_jacobian(df):
        panels.append(("jac_norm", "||J_f(z)||_2 at the solver's z"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (col, label) in zip(axes[0], panels):
        for init, g in df.groupby("init", sort=False):
            per_scale = g.groupby(["scale", "epoch"])[col].mean().unstack("scale")
            ax.plot(per_scale.index, per_scale.values, color=COLORS.get(init), lw=0.6, alpha=0.3)
            ax.plot(per_scale.index, per_scale.median(axis=1), color=COLORS.get(init), lw=2,
                    label=f"{init} (median over scales)")
        if col == "jac_norm":  # 0 is a value here (a dead ReLU layer): linear near 0
            ax.set_yscale("symlog", linthresh=0.05)
            ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        else:
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    _save(fig, path, 110)


def stabilisers_figure(df: pd.DataFrame, path: Path) -> None:
    """Last-epoch test loss (each seed a dot, the mean a bar), converged share of the forward
    solves and Jacobian norm, per stabiliser and init."""
    from .claims import STABILISERS, outcome_share

    plt = _figure()
    last = df[df.epoch == df.epoch.max()]
    stabs = [s for s in STABILISERS if s in set(last.stabiliser)]
    inits = list(dict.fromkeys(last.init))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    width = 0.8 / max(1, len(inits))
    for j, init in enumerate(inits):
        xs = np.arange(len(stabs)) + (j - (len(inits) - 1) / 2) * width
        groups = [last[(last.stabiliser == s) & (last.init == init)] for s in stabs]
        color = COLORS.get(init)
        axes[0].bar(xs, [g.test_loss.mean() for g in groups], width, color=color, alpha=0.5, label=init)
        for x, g in zip(xs, groups):
            axes[0].scatter(np.full(len(g), x), g.test_loss, s=8, color=color)
        axes[1].bar(xs, [outcome_share(g, "fwd") for g in groups], width, color=color, label=init)
        axes[2].bar(xs, [g.jac_norm.mean() for g in groups], width, color=color, label=init)
    for ax, label in zip(axes, ("final test loss (dots: seeds)", "forward solves converged",
                                "||J_f(z)||_2 (mean)")):
        ax.set_xticks(np.arange(len(stabs)), stabs)
        ax.set_ylabel(label)
    axes[2].axhline(1.0, color="k", lw=0.8, ls="--")
    axes[0].legend(fontsize=8)
    fig.suptitle("E1 with stabilisers (last epoch)", fontsize=10)
    _save(fig, path, 110)
