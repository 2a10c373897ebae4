"""``deqexp compare``: paired comparisons of the arms of any set of runs.

Reads the completed runs under the given folders (:mod:`deqexp.sweep.collect`), splits their
members into arms and pairs (:mod:`deqexp.sweep.arms`), measures each member
(:mod:`deqexp.sweep.measures`), and compares every two arms on every measure with paired
statistics (:mod:`deqexp.sweep.stats`), Holm-corrected over every comparison in the report.
Writes comparison.csv, arms.csv, units.csv, COMPARE.md and its figures, a W&B "compare" run,
and a one-screen summary.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import stats
from .arms import CompareError, choose_keys, key_of, label, label_keys, sort_key
from .collect import collect
from .measures import DEFAULT, DESCRIPTIONS, measures

COLUMNS = ["arm_a", "arm_b", "metric", "n_pairs", "mean_diff", "median_diff", "ci_low", "ci_high",
           "p_wilcoxon", "p_sign", "p_holm", "verdict", "n_finite", "n_missing", "unpaired_a",
           "unpaired_b"]


@dataclass
class Comparison:
    """Everything ``deqexp compare`` computed: the inputs' split and the result tables."""

    arm_keys: list[str]
    pair_keys: list[str]
    units: pd.DataFrame        # one row per member: arm, pair, run, member, the measures
    table: pd.DataFrame        # comparison.csv
    arms: pd.DataFrame         # arms.csv
    left_out: list[tuple[Path, str]]
    curves: pd.DataFrame       # epoch, test_loss, arm, pair (for the figures)
    named_by: list[str]        # the arm keys that the arm labels show
    selected: list[str] = dataclasses.field(default_factory=list)  # --select: what was chosen


def unit_table(units, arm_keys, pair_keys, threshold, shown=()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row of measures per unit (with the arm keys' values and those of ``shown``), and
    their test-loss curves."""
    rows, curves = [], []
    named_by = label_keys(units, arm_keys)
    for u in units:
        arm, pair = label(u, named_by), label(u, pair_keys) if pair_keys else "(one)"
        rows.append({"arm": arm, "arm_order": sort_key(u, arm_keys), "pair": pair,
                     "pair_key": key_of(u, pair_keys), "run": str(u.run),
                     "member": u.member, **{k: u.config.get(k) for k in [*arm_keys, *shown]},
                     **measures(u.curve, u.diverged, threshold)})
        curves.append(pd.DataFrame({"epoch": u.curve["epoch"], "test_loss": u.curve["test_loss"],
                                    "arm": arm, "pair": pair}))
    return pd.DataFrame(rows), pd.concat(curves, ignore_index=True)


def compare_arms(df: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """comparison.csv: every two arms (in order of first appearance) on every measure."""
    out = []
    order = list(dict.fromkeys(df.sort_values("arm_order", kind="stable")["arm"]))
    for a, b in itertools.combinations(order, 2):
        da, db = df[df.arm == a].set_index("pair_key"), df[df.arm == b].set_index("pair_key")
        both = da.index.intersection(db.index)
        for m in metrics:
            va, vb = da.loc[both, m].to_numpy(float), db.loc[both, m].to_numpy(float)
            res = stats.compare_paired(va, vb)
            out.append({"arm_a": a, "arm_b": b, "metric": m, **res.as_dict(),
                        "n_missing": int(np.sum(np.isnan(va) | np.isnan(vb))),
                        "unpaired_a": len(da) - len(both), "unpaired_b": len(db) - len(both)})
    table = pd.DataFrame(out)
    table["p_holm"] = stats.holm(table["p_wilcoxon"])
    table["verdict"] = [stats.verdict(r.lower, r.p_holm, r.arm_a, r.arm_b, r.n_pairs)
                        for r in table.itertuples()]
    return table[COLUMNS]


def arm_summary(df: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """arms.csv: per arm and measure, n, mean, sd, median, quartiles and diverged members."""
    out = []
    for arm, g in df.sort_values("arm_order", kind="stable").groupby("arm", sort=False):
        for m in metrics:
            v = g[m].to_numpy(float)
            v = v[~np.isnan(v)]
            with np.errstate(invalid="ignore"):  # quartiles of infinities (diverged members)
                q = np.quantile(v, [0.25, 0.5, 0.75]) if v.size else [math.nan] * 3
            with np.errstate(invalid="ignore"):
                out.append({"arm": arm, "metric": m, "n": int(v.size), "mean": float(np.mean(v)) if v.size
                            else math.nan, "sd": float(np.std(v, ddof=1)) if v.size > 1 else math.nan,
                            "median": q[1], "q25": q[0], "q75": q[2], "diverged": int(g["diverged"].sum())})
    return pd.DataFrame(out)


SELECT_ON = {"val": "best_val_loss", "test": "best_test_loss"}


def select(units, df: pd.DataFrame, key: str, on: str, arm_keys: list[str]) -> tuple[list, list[str]]:
    """``--select KEY --select-on val|test``: per arm (the other arm keys), the units at the value
    of ``key`` whose median best validation (or test) loss is lowest; and a line per choice."""
    if key not in arm_keys:
        raise CompareError(f"--select {key}: not one of the arm keys ({', '.join(arm_keys)}); "
                           "it must be a key the runs sweep")
    measure = SELECT_ON[on]
    if measure not in df.columns or df[measure].isna().all():
        raise CompareError(f"--select-on {on}: these runs have no validation split; rerun them with "
                           "dataset.val_fraction=0.2 (or give val_input/val_target), or --select-on "
                           "test (optimistic: chosen on the data it is scored on)")
    rest = [k for k in arm_keys if k != key]
    group = [key_of(u, rest) for u in units]
    value = [key_of(u, [key]) for u in units]
    frame = pd.DataFrame({"g": group, "v": value, "m": df[measure].to_numpy(float)})
    best = frame.groupby(["g", "v"], sort=False).m.median().reset_index()
    chosen = best.loc[best.groupby("g", sort=False).m.idxmin()]
    keep = set(zip(chosen.g, chosen.v))
    kept = [u for u, g, v in zip(units, group, value) if (g, v) in keep]
    lines = [f"{label(next(u for u in kept if key_of(u, rest) == r.g), rest) if rest else 'all'}: "
             f"{key}={label(next(u for u in kept if key_of(u, rest) == r.g), [key])} "
             f"(median {measure} {r.m:.4g})" for r in chosen.itertuples()]
    return kept, lines


def run_compare(paths: list[Path], by=None, pair=None, metrics=None, threshold=None,
                select_key: str | None = None, select_on: str = "val") -> Comparison:
    """Collect, split, measure and compare; raises :class:`CompareError` on bad input."""
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise CompareError(f"{missing[0]} does not exist")
    found = collect(paths)
    if not found.units:
        states = ", ".join(f"{p.name}: {s}" for p, s in found.left_out[:5])
        raise CompareError(f"no completed runs under {', '.join(map(str, paths))}"
                           + (f" (found only: {states})" if states else ""))
    arm_keys, pair_keys = choose_keys(found.units, by, pair)
    units, selected = found.units, []
    df, curves = unit_table(units, arm_keys, pair_keys, threshold)
    if select_key:
        units, selected = select(units, df, select_key, select_on, arm_keys)
        arm_keys = [k for k in arm_keys if k != select_key]
        if not arm_keys or len({key_of(u, arm_keys) for u in units}) < 2:
            raise CompareError(f"--select {select_key} leaves one arm only; add the key to compare "
                               "across with --by")
        df, curves = unit_table(units, arm_keys, pair_keys, threshold, [select_key])
    metrics = list(metrics or [m for m in DEFAULT if m in df.columns])
    if threshold is not None and "epochs_to_threshold" not in metrics:
        metrics.append("epochs_to_threshold")
    for m in metrics:
        if m not in df.columns or df[m].isna().all():
            known = sorted(c for c in df.columns if c not in (
                "arm", "arm_order", "pair", "pair_key", "run", "member", *arm_keys, select_key))
            fix = " (give --threshold)" if m == "epochs_to_threshold" else ""
            raise CompareError(f"--metric {m}: no run logged it{fix}; measures these runs have: "
                               + ", ".join(known))
    return Comparison(arm_keys, pair_keys, df, compare_arms(df, metrics), arm_summary(df, metrics),
                      found.left_out, curves, label_keys(units, arm_keys), selected)


def summary_lines(c: Comparison, max_rows: int = 14) -> list[str]:
    """The one-screen terminal summary."""
    n_runs = c.units["run"].nunique()
    lines = [f"compared {len(c.units)} members of {n_runs} completed runs: arms by "
             f"{', '.join(c.arm_keys)}; pairs by {', '.join(c.pair_keys) or '(none: one per arm)'}"]
    if c.selected:
        lines.append("selected: " + "; ".join(c.selected))
    if c.left_out:
        lines.append(f"left out {len(c.left_out)} runs that are not complete: " + ", ".join(
            f"{p.name} ({s})" for p, s in c.left_out[:4]) + (" ..." if len(c.left_out) > 4 else ""))
    t = c.table
    for r in t.head(max_rows).itertuples():
        lines.append(f"  {r.metric:<16} {r.arm_a} - {r.arm_b}: median {r.median_diff:+.4g}, mean "
                     f"{r.mean_diff:+.4g} [{r.ci_low:+.3g}, {r.ci_high:+.3g}], n={r.n_pairs}, "
                     f"p_holm={r.p_holm:.3g}: {r.verdict}")
    lines.append(f"{len(t)} comparisons (Holm-corrected together); the rest in comparison.csv")
    return lines


def main(argv: list[str] | None = None) -> int:
    from .compare_report import write_outputs

    parser = argparse.ArgumentParser(
        prog="deqexp compare",
        description="Compare the arms of any set of finished runs (e.g. init=kglm vs init=random over "
                    "seeds): paired by seed, Wilcoxon signed-rank and sign tests, a bootstrap interval "
                    "of the mean difference, Holm-corrected over every comparison written. Ensemble "
                    "members count as separate runs. Exit 2 on bad input, with nothing written.",
        epilog="measures: " + "; ".join(f"{k}: {v}" for k, v in DESCRIPTIONS.items())
               + ". Any other metrics.csv column is its value at the last epoch.")
    parser.add_argument("paths", nargs="+", type=Path, help="sweep or run folders, or any folder above them")
    parser.add_argument("--by", help="comma-separated config keys that make the arms (default: every "
                        "result-changing key that varies, except the pairing keys)")
    parser.add_argument("--pair", help="comma-separated keys that pair runs across arms "
                        "(default: trainer.seed; with --by: every other key that varies)")
    parser.add_argument("--metric", help="comma-separated measures to compare (default: accuracy and "
                        "stability, see below)")
    parser.add_argument("--threshold", type=float, help="test loss for epochs_to_threshold")
    parser.add_argument("--select", metavar="KEY", help="a swept key to choose per arm (e.g. init.scale "
                        "per init) by its lowest median best loss on --select-on, before comparing")
    parser.add_argument("--select-on", choices=("val", "test"), default="val",
                        help="the split --select chooses on (default val; test is optimistic)")
    parser.add_argument("--out", type=Path, help="output folder (default: compare/ inside the first path)")
    parser.add_argument("--no-wandb", action="store_true", help="do not log the W&B 'compare' run")
    args = parser.parse_args(argv)
    split = lambda s: [k.strip() for k in s.split(",") if k.strip()] if s else None  # noqa: E731
    try:
        c = run_compare(args.paths, split(args.by), split(args.pair), split(args.metric), args.threshold,
                        args.select, args.select_on)
    except CompareError as err:
        print(f"deqexp compare: error: {err}", file=sys.stderr)
        return 2
    out = args.out or args.paths[0] / "compare"
    write_outputs(c, out, wandb=not args.no_wandb)
    print("\n".join(summary_lines(c)) + f"\nfiles: {out}/COMPARE.md, comparison.csv, arms.csv")
    return 0
