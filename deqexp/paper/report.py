"""``deqexp report``: the paper's tables, figures and REPORT.md from finished runs.

Reads the completed runs (a ``COMPLETE`` marker) of each experiment and profile under
``runs/paper/EXP/PROFILE`` and ``multirun/paper/EXP/PROFILE``. A run counts for the profile
only when its fingerprint is one of the preset's jobs exactly (``experiment=paper/EXP_PROFILE``
and its sweep, with nothing that changes results overridden); any other run found there (e.g.
``trainer.epochs=3`` added) is listed apart as "other runs" and never enters a claim. From the
counted runs it builds the tables and claim checks of :mod:`deqexp.paper.claims` and the figures of
:mod:`deqexp.paper.figures`, and writes CSV + Markdown tables, PNGs, REPORT.md (each claim's verdict
with the numbers, and whether the DEQ was at its fixed point) and claims.json.

The committed ``results/paper`` is written only from a complete profile (every job of every
experiment) or with ``--overwrite-results``; by default the report goes to ``report/PROFILE``
under ``--root``.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from . import claims, figures
from .presets import (
    EXPERIMENTS,
    PROFILES,
    Found,
    completed_runs,
    load_metrics,
)
from .report_text import HEADER, family_note, others_note, verdict_word

COMMITTED = Path("results/paper")  # the report in the repository, relative to its root

@dataclass
class Context:
    """Where runs are read from and outputs written to; what was found, per experiment."""

    root: Path
    profile: str
    out: Path
    found: dict[str, Found] = field(default_factory=dict)

    def completed(self, exp: str) -> Found:
        if exp not in self.found:
            self.found[exp] = completed_runs(self.root, exp, self.profile)
        return self.found[exp]

    def runs(self, exp: str, filename: str = "metrics.csv") -> tuple[pd.DataFrame, list[Path]]:
        dirs = self.completed(exp).runs
        return (load_metrics(dirs, filename) if dirs else pd.DataFrame()), dirs

    def table(self, df: pd.DataFrame, name: str) -> str:
        df.to_csv(self.out / f"{name}.csv", index=False)
        (self.out / f"{name}.md").write_text(df.to_markdown(index=False, floatfmt=".4g") + "\n")
        return f"{name}.md"


# A section returns (verdict, evidence, files, jobs) or None when its runs are missing.
Section = Callable[[Context], "tuple[bool | None, str, list[str], int] | None"]


def curves_section(exp: str, title: str) -> Section:
    def build(ctx: Context):
        df, dirs = ctx.runs(exp)
        if df.empty:
            return None
        table = claims.curves_table(df)
        figures.curves_figure(df, ctx.out / f"{exp}_test_loss.png", title)
        figures.convergence_figure(df, ctx.out / f"{exp}_convergence.png", f"{title}: solver and weights")
        verdict, text = claims.curves_claim(table)
        return verdict, text, [ctx.table(table, f"{exp}_test_loss"), f"{exp}_test_loss.png",
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
    verdict, text = claims.curves_claim(tables["equilibrium"])
    answer = {claims.HELD: "kglm still beats naive and random when the DEQ is at its equilibrium",
              claims.NOT_HELD: "kglm does NOT beat every other init when the DEQ is at its equilibrium"}
    text = f"{answer.get(verdict, 'at equilibrium the seeds do not decide between the inits')}: {text}"
    if "one fewer" in tables:
        _, sens = claims.count_sensitivity(frames["authors"], frames["one fewer"])
        text += f" Sensitivity to the iteration count (authors' solver): {sens}."
    files = [ctx.table(claims.compare_curves(tables), "e1_equilibrium"), "e1_converged_convergence.png"]
    return verdict, text, files, sum(len(ctx.completed(e).runs) for e in variants.values())


def first_config(dirs: list[Path]) -> dict:
    """The resolved config of the first run (its summary.json; {} when unreadable)."""
    try:
        return json.loads((dirs[0] / "summary.json").read_text())["config"]
    except (OSError, KeyError, ValueError, IndexError):
        return {}


def streams_note(config: dict) -> str:
    """How the runs drew their random numbers, for the reader comparing with the authors'."""
    authors = config.get("trainer", {}).get("rng") == "authors"
    batch = config.get("dataset", {}).get("noise_pairing") == "batch"
    return (" Random stream: " + ("the authors' (trainer.rng=authors: seed s draws their seed s's random "
                                  "init and batch order)" if authors else "deqexp's own (trainer.rng=deqexp)")
            + (", noise paired by batch position as theirs." if batch else "."))


def sweep_section(exp: str, title: str) -> Section:
    def build(ctx: Context):
        df, dirs = ctx.runs(exp)
        if df.empty:
            return None
        table = claims.sweep_table(df)
        figures.sweep_figure(df, ctx.out / f"{exp}_loss_vs_norm.png", title)
        figures.stability_figure(df, ctx.out / f"{exp}_stability.png", f"{title}: solver and stability")
        verdict, text = claims.sweep_claim(table, df)
        config = first_config(dirs)
        grid = list(config.get("trainer", {}).get("ensemble", {}).get("scales", [])) or None
        convergence = claims.sweep_convergence(df, grid)
        return verdict, text + streams_note(config), [
            ctx.table(table, f"{exp}_sweep"), ctx.table(convergence, f"{exp}_convergence"),
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
    verdict, text = claims.sweep_claim(b, pd_runs)
    kglm = last[last.init == "kglm"].set_index("construction").best_mean_test_loss
    text = ("with the positive-semi-definite filters: " + text + ". kglm best-scale test MSE: "
            + "; ".join(f"{c} {v:.4g}" for c, v in kglm.items()))
    return verdict, text, [ctx.table(both, "e2_construction")], len(ctx.completed("e2_pd").runs)


def agreement_section(ctx: Context):
    df, dirs = ctx.runs("e4", "agreement.csv")
    if df.empty:
        return None
    table = claims.agreement_table(df)
    figures.agreement_figure(dirs[0] / "panel.npz", ctx.out / "e4_panel.png")
    verdict, text = claims.agreement_claim(table)
    return verdict, text, [ctx.table(table, "e4_agreement"), "e4_panel.png"], len(dirs)


def timing_section(ctx: Context):
    df, dirs = ctx.runs("e5", "timing.csv")
    if df.empty:
        return None
    table = claims.timing_table(df)
    figures.timing_figure(df, ctx.out / "e5_timing.png")
    verdict, text = claims.timing_claim(table)
    return verdict, text, [ctx.table(table, "e5_timing"), "e5_timing.png"], len(dirs)


def stabilisers_section(ctx: Context):
    """Issue 18: E1 once per stabiliser; the inits compared by seed within each."""
    from omegaconf import OmegaConf

    df, dirs = ctx.runs("stability_e1")
    if df.empty:
        return None
    labels = [claims.stabiliser_of(OmegaConf.to_container(OmegaConf.load(d / "config.yaml"))) for d in dirs]
    df["stabiliser"] = df.run.map(dict(enumerate(labels)))
    table = claims.stability_table(df)
    figures.stabilisers_figure(df, ctx.out / "stability_e1.png")
    verdict, text = claims.stability_claim(table)
    return verdict, text, [ctx.table(table, "stability_e1"), "stability_e1.png"], len(dirs)


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
    "stability_e1": ("Stability: E1 with Jacobian regularisation, spectral normalisation and the "
                     "monotone parametrisation (not a claim of the paper)", stabilisers_section),
}

def build_sections(ctx: Context) -> tuple[list[str], dict]:
    """Every section's text and the claims found, each section's tests registered with the
    current family under the section's key."""
    family = claims.family.current()
    sections, found = [], {}
    for key, (title, build) in SECTIONS.items():
        family.section = key
        result = build(ctx)
        if result is None:
            sections.append(f"## {title}\n\nNo completed runs of the `{ctx.profile}` preset.\n")
            continue
        verdict, text, files, jobs = result
        found[key] = {"verdict": verdict, "held": verdict == claims.HELD, "evidence": text, "runs": jobs}
        links = "\n".join(f"![{f}]({f})" if f.endswith(".png") else f"- table: [{f}]({f})" for f in files)
        sections.append(f"## {title}\n\n{verdict_word(verdict).capitalize()} in this run ({jobs} completed "
                        f"job(s)): {text}\n\n{links}\n")
    return sections, found


def report(ctx: Context) -> dict:
    """Build every table and figure that the runs on disk allow; return the claims. Built twice:
    the first pass collects the verdict-deciding tests, which are then Holm-corrected together,
    and the second writes each verdict from its adjusted p."""
    ctx.out.mkdir(parents=True, exist_ok=True)
    with claims.using(claims.Family()) as family:
        build_sections(ctx)
        family.correct()
        sections, found = build_sections(ctx)
    tests = family.table()
    sections += [family_note(tests, ctx.table(tests, "corrected_tests")) if len(tests) else "",
                 others_note(ctx.found, ctx.root, ctx.profile)]
    header = HEADER.format(profile=ctx.profile, alpha=claims.ALPHA, tests=family.size)
    (ctx.out / "REPORT.md").write_text(header + "\n" + "\n".join(s for s in sections if s))
    (ctx.out / "claims.json").write_text(json.dumps(
        {**found, "corrected_tests": tests.to_dict("records")}, indent=2, default=str))
    return found


def incomplete(ctx: Context) -> dict[str, str]:
    """The experiments of the profile that lack a completed run of some preset job:
    experiment -> 'k of n jobs'."""
    found = {exp: ctx.completed(exp) for exp in EXPERIMENTS}
    return {exp: f"{len(f.runs)} of {f.expected} jobs" for exp, f in found.items() if not f.complete}


def _is_committed(out: Path) -> bool:
    repo = Path(__file__).resolve().parents[2]
    return out.resolve() in {(repo / COMMITTED).resolve(), COMMITTED.resolve()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="deqexp report",
        description="Aggregate the completed paper runs (E1-E6) of a profile into CSV/Markdown "
                    "tables, PNG figures and REPORT.md (each claim's verdict, with a paired "
                    "test over seeds, Holm-corrected over the report). Only runs of the "
                    "profile's presets exactly are counted; others are listed apart.")
    parser.add_argument("--profile", default="quick", choices=PROFILES)
    parser.add_argument("--root", type=Path, default=Path("."),
                        help="folder holding runs/ and multirun/ (default: .)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where tables and figures go (default: ROOT/report/PROFILE); "
                             f"{COMMITTED} only from a complete profile or with --overwrite-results")
    parser.add_argument("--overwrite-results", action="store_true",
                        help=f"write {COMMITTED} although some experiment of the profile is incomplete")
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else args.root / "report" / args.profile
    ctx = Context(args.root, args.profile, out)  # the runs found once, for the check and the report
    if _is_committed(out) and not args.overwrite_results:
        missing = incomplete(ctx)
        if missing:
            print(f"deqexp report: error: {out} holds the committed report and the {args.profile} "
                  "profile is not complete here (" + "; ".join(f"{e}: {n}" for e, n in missing.items())
                  + f"); nothing was written. Run the missing jobs (make reproduce-paper PROFILE="
                  f"{args.profile}), write elsewhere with --out DIR, or replace it anyway with "
                  "--overwrite-results", file=sys.stderr)
            return 2
    found = report(ctx)
    for key, c in found.items():
        print(f"{key}: {c['verdict']}: {c['evidence']}")
    missing = [k for k in SECTIONS if k not in found]
    if missing:
        print(f"no completed runs of the {args.profile} presets for: {', '.join(missing)}")
    print(f"report: {out / 'REPORT.md'}")
    return 0
