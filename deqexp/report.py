"""``deqexp report``: the paper's tables, figures and REPORT.md from finished runs.

Reads every completed run (a ``COMPLETE`` marker) of each experiment and profile under
``runs/paper/EXP/PROFILE`` and ``multirun/paper/EXP/PROFILE``, builds the tables and claim
checks of :mod:`deqexp.claims` and the figures of :mod:`deqexp.figures`, and writes CSV +
Markdown tables, PNGs, REPORT.md (whether each claim held, with the numbers, and whether the
DEQ was at its fixed point) and claims.json.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from . import claims, figures
from .logging import MARKER

# every preset family that `make reproduce-paper` runs (conf/experiment/paper/EXP[_PROFILE])
EXPERIMENTS = ("e1", "e1_count", "e1_converged", "e2", "e2_pd", "e3", "e4", "e5", "e6")
PROFILES = ("smoke", "quick", "full")


def completed_runs(root: Path, exp: str, profile: str) -> list[Path]:
    """Folders of the completed runs of one experiment and profile."""
    dirs = []
    for kind in ("runs", "multirun"):
        base = root / kind / "paper" / exp / profile
        if base.is_dir():
            dirs += sorted(p.parent for p in base.rglob(MARKER))
    return dirs


def load_metrics(dirs: list[Path], filename: str = "metrics.csv") -> pd.DataFrame:
    frames = []
    for i, d in enumerate(dirs):
        if (d / filename).exists():
            df = pd.read_csv(d / filename)
            df["run"] = i
            frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


@dataclass
class Context:
    """Where runs are read from and outputs written to."""

    root: Path
    profile: str
    out: Path

    def runs(self, exp: str, filename: str = "metrics.csv") -> tuple[pd.DataFrame, list[Path]]:
        dirs = completed_runs(self.root, exp, self.profile)
        return (load_metrics(dirs, filename) if dirs else pd.DataFrame()), dirs

    def table(self, df: pd.DataFrame, name: str) -> str:
        df.to_csv(self.out / f"{name}.csv", index=False)
        (self.out / f"{name}.md").write_text(df.to_markdown(index=False, floatfmt=".4g") + "\n")
        return f"{name}.md"


# A section returns (held, evidence, files, jobs) or None when its runs are missing.
Section = Callable[[Context], "tuple[bool | None, str, list[str], int] | None"]


def curves_section(exp: str, title: str) -> Section:
    def build(ctx: Context):
        df, dirs = ctx.runs(exp)
        if df.empty:
            return None
        table = claims.curves_table(df)
        figures.curves_figure(df, ctx.out / f"{exp}_test_loss.png", title)
        figures.convergence_figure(df, ctx.out / f"{exp}_convergence.png", f"{title}: solver and weights")
        held, text = claims.curves_claim(table)
        return held, text, [ctx.table(table, f"{exp}_test_loss"), f"{exp}_test_loss.png",
                            f"{exp}_convergence.png"], len(dirs)
    return build


def equilibrium_section(ctx: Context):
    """E1 with the authors' solver vs one application fewer vs solved to equilibrium."""
    variants = {"authors": "e1", "one fewer": "e1_count", "equilibrium": "e1_converged"}
    frames = {label: ctx.runs(exp)[0] for label, exp in variants.items()}
    if frames["equilibrium"].empty or frames["authors"].empty:
        return None
    tables = {k: claims.curves_table(v) for k, v in frames.items() if not v.empty}
    figures.convergence_figure(frames["equilibrium"], ctx.out / "e1_converged_convergence.png",
                               "E1 solved to equilibrium: solver and weights")
    held, text = claims.curves_claim(tables["equilibrium"])
    answer = ("kglm still beats naive and random when the DEQ is at its equilibrium" if held else
              "kglm does NOT beat every other init when the DEQ is at its equilibrium")
    text = f"{answer}: {text}"
    if "one fewer" in tables:
        _, sens = claims.count_sensitivity(frames["authors"], frames["one fewer"])
        text += f" Sensitivity to the iteration count (authors' solver): {sens}."
    files = [ctx.table(claims.compare_curves(tables), "e1_equilibrium"), "e1_converged_convergence.png"]
    return held, text, files, sum(len(completed_runs(ctx.root, e, ctx.profile)) for e in variants.values())


def sweep_section(exp: str, title: str) -> Section:
    def build(ctx: Context):
        df, dirs = ctx.runs(exp)
        if df.empty:
            return None
        table = claims.sweep_table(df)
        figures.sweep_figure(df, ctx.out / f"{exp}_loss_vs_norm.png", title)
        figures.stability_figure(df, ctx.out / f"{exp}_stability.png", f"{title}: solver and stability")
        held, text = claims.sweep_claim(table)
        return held, text, [ctx.table(table, f"{exp}_sweep"),
                            ctx.table(claims.sweep_convergence(df), f"{exp}_convergence"),
                            f"{exp}_loss_vs_norm.png", f"{exp}_stability.png"], len(dirs)
    return build


def construction_section(ctx: Context):
    """E2 with the authors' filters against the positive-semi-definite construction."""
    paper, pd_runs = ctx.runs("e2")[0], ctx.runs("e2_pd")[0]
    if paper.empty or pd_runs.empty:
        return None
    a, b = claims.sweep_table(paper), claims.sweep_table(pd_runs)
    a.insert(0, "construction", "authors (truncated SE, DFT norm)")
    b.insert(0, "construction", "pd (triangle window, exact norm)")
    both = pd.concat([a, b], ignore_index=True)
    last = both[both.epoch == both.epoch.max()]
    held, text = claims.sweep_claim(b)
    kglm = last[last.init == "kglm"].set_index("construction").best_mean_test_loss
    text = ("with the positive-semi-definite filters: " + text + ". kglm best-scale test MSE: "
            + "; ".join(f"{c} {v:.4g}" for c, v in kglm.items()))
    jobs = len(completed_runs(ctx.root, "e2_pd", ctx.profile))
    return held, text, [ctx.table(both, "e2_construction")], jobs


def agreement_section(ctx: Context):
    df, dirs = ctx.runs("e4", "agreement.csv")
    if df.empty:
        return None
    table = claims.agreement_table(df)
    figures.agreement_figure(dirs[0] / "panel.npz", ctx.out / "e4_panel.png")
    held, text = claims.agreement_claim(table)
    return held, text, [ctx.table(table, "e4_agreement"), "e4_panel.png"], len(dirs)


def timing_section(ctx: Context):
    df, dirs = ctx.runs("e5", "timing.csv")
    if df.empty:
        return None
    table = claims.timing_table(df)
    figures.timing_figure(df, ctx.out / "e5_timing.png")
    held, text = claims.timing_claim(table)
    return held, text, [ctx.table(table, "e5_timing"), "e5_timing.png"], len(dirs)


SECTIONS: dict[str, tuple[str, Section]] = {
    "e1": ("E1: smooth 1-D sequence regression (dense DEQ, the authors' solver)",
           curves_section("e1", "E1: smooth 1-D sequence regression")),
    "e1_equilibrium": ("E1 at equilibrium: the same comparison with the fixed point solved",
                       equilibrium_section),
    "e2": ("E2: image denoising (conv DEQ), spectral-norm sweep",
           sweep_section("e2", "E2: image denoising")),
    "e2_construction": ("E2: the authors' filters vs positive-semi-definite filters",
                        construction_section),
    "e3": ("E3: image deblurring (conv DEQ), spectral-norm sweep",
           sweep_section("e3", "E3: image deblurring")),
    "e4": ("E4: DEQ at kglm init vs kernel logistic regression", agreement_section),
    "e5": ("E5: cost of the initialisation", timing_section),
    "e6": ("E6: copy-memory task", curves_section("e6", "E6: copy-memory task")),
}

HEADER = ("# Reproducing \"Declarative nets that are equilibrium models\" (profile `{profile}`)\n\n"
          "The paper's claim: kGLM initialisation trains more stably and reaches lower error than "
          "random initialisation (E1-E3, E6); at initialisation the DEQ is the kGLM (E4); the "
          "initialisation is cheap (E5). Each section states whether that held in the runs found "
          "here, with the numbers, and whether the DEQ was at its fixed point. Comparisons between "
          "inits are paired by seed. Settings: PAPER-PROTOCOL.md and `conf/experiment/paper/`.\n")


def verdict_word(held: bool | None) -> str:
    return {True: "**held**", False: "**did not hold**", None: "measured"}[held]


def report(root: Path, profile: str, out: Path) -> dict:
    """Build every table and figure that the runs on disk allow; return the claims."""
    out.mkdir(parents=True, exist_ok=True)
    ctx, sections, found = Context(root, profile, out), [], {}
    for key, (title, build) in SECTIONS.items():
        result = build(ctx)
        if result is None:
            sections.append(f"## {title}\n\nNo completed runs for profile `{profile}`.\n")
            continue
        held, text, files, jobs = result
        found[key] = {"held": held, "evidence": text, "runs": jobs}
        links = "\n".join(f"![{f}]({f})" if f.endswith(".png") else f"- table: [{f}]({f})" for f in files)
        sections.append(f"## {title}\n\n{verdict_word(held).capitalize()} in this run ({jobs} completed "
                        f"job(s)): {text}\n\n{links}\n")
    (out / "REPORT.md").write_text(HEADER.format(profile=profile) + "\n" + "\n".join(sections))
    (out / "claims.json").write_text(json.dumps(found, indent=2, default=str))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="deqexp report",
        description="Aggregate the completed paper runs (E1-E6) of a profile into CSV/Markdown "
                    "tables, PNG figures and REPORT.md (which says whether each claim held).")
    parser.add_argument("--profile", default="quick", choices=PROFILES)
    parser.add_argument("--root", type=Path, default=Path("."),
                        help="folder holding runs/ and multirun/ (default: .)")
    parser.add_argument("--out", type=Path, default=Path("results/paper"),
                        help="where tables and figures go (default: results/paper)")
    args = parser.parse_args(argv)
    found = report(args.root, args.profile, args.out)
    for key, c in found.items():
        print(f"{key}: {verdict_word(c['held']).strip('*')}: {c['evidence']}")
    missing = [k for k in SECTIONS if k not in found]
    if missing:
        print(f"no completed runs for: {', '.join(missing)} (profile {args.profile})")
    print(f"report: {args.out / 'REPORT.md'}")
    return 0
