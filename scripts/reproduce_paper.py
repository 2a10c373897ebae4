#!/usr/bin/env python3
"""Run the paper's experiments E1-E6 at a profile, then build the report.

    python scripts/reproduce_paper.py --profile quick            # `make reproduce-paper`
    python scripts/reproduce_paper.py --profile full --launcher slurm -- hydra.launcher.partition=gpu

Each experiment is one `deqexp train experiment=paper/EXP[_PROFILE]` command (a multirun
where the preset sweeps, e.g. E2/E3 over seeds), so its runs land in deterministic folders
under --root: a rerun skips what is complete and finishes what is not. Extra Hydra overrides
after `--` go to every experiment.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

from deqexp.report import EXPERIMENTS, PROFILES


def preset_name(exp: str, profile: str) -> str:
    return f"paper/{exp}" if profile == "full" else f"paper/{exp}_{profile}"


def sweeps(preset: str) -> bool:
    """Whether the preset declares a sweep (hydra.sweeper.params), i.e. runs as a multirun."""
    from deqexp.config import compose

    cfg = compose(f"experiment={preset}", hydra=True)
    return bool(cfg.hydra.sweeper.get("params"))


def command(exp: str, profile: str, root: str, launcher: str, extra: list[str]) -> list[str]:
    preset = preset_name(exp, profile)
    cmd = [sys.executable, "-m", "deqexp.cli", "train"]
    if sweeps(preset):
        cmd.append("-m")
    cmd += [f"experiment={preset}", f"paths.output={root}", f"launcher={launcher}", *extra]
    return cmd


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick", choices=PROFILES)
    parser.add_argument("--root", default=".", help="folder for runs/ and multirun/ (default: .)")
    parser.add_argument("--out", default="results/paper", help="report folder (default: results/paper)")
    parser.add_argument("--launcher", default="local", choices=["local", "joblib", "slurm", "slurm_local"])
    parser.add_argument("--only", nargs="+", default=list(EXPERIMENTS), choices=EXPERIMENTS)
    parser.add_argument("extra", nargs="*", help="Hydra overrides for every experiment (after --)")
    args = parser.parse_args()
    failed = []
    for exp in args.only:
        cmd = command(exp, args.profile, args.root, args.launcher, args.extra)
        print(f"== {exp}: {' '.join(cmd[2:])}", flush=True)
        t0 = time.perf_counter()
        if subprocess.run(cmd).returncode != 0:
            failed.append(exp)
        print(f"== {exp}: {time.perf_counter() - t0:.0f} s", flush=True)
    rc = subprocess.run([sys.executable, "-m", "deqexp.cli", "report", "--profile", args.profile,
                         "--root", args.root, "--out", args.out]).returncode
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
