#!/usr/bin/env python3
"""Run the paper's experiments E1-E6 at a profile, then build the report.

    python scripts/reproduce_paper.py --profile quick            # `make reproduce-paper`
    python scripts/reproduce_paper.py --profile full --launcher slurm -- hydra.launcher.partition=gpu
    python scripts/reproduce_paper.py --profile smoke --parallel 2   # two experiments at a time

Each experiment is one `deqexp train experiment=paper/EXP[_PROFILE]` command (a multirun
where the preset sweeps, e.g. E2/E3 over seeds), so its runs land in deterministic folders
under --root: a rerun skips what is complete and finishes what is not. Extra Hydra overrides
after `--` go to every experiment.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from deqexp.paper.presets import EXPERIMENTS, PROFILES, preset_name


def sweeps(preset: str) -> bool:
    """Whether the preset declares a sweep (hydra.sweeper.params), i.e. runs as a multirun."""
    from deqexp.run.config import compose

    cfg = compose(f"experiment={preset}", hydra=True)
    return bool(cfg.hydra.sweeper.get("params"))


def command(exp: str, profile: str, root: str, launcher: str, extra: list[str]) -> list[str]:
    preset = preset_name(exp, profile)
    cmd = [sys.executable, "-m", "deqexp.cli", "train"]
    if sweeps(preset):
        cmd.append("-m")
    cmd += [f"experiment={preset}", f"paths.output={root}", f"launcher={launcher}", *extra]
    return cmd


def run_all(commands: dict[str, list[str]], parallel: int) -> list[str]:
    """Run the experiments' commands, ``parallel`` at a time (each one's output printed when
    it ends, so that they do not interleave); return those that failed."""
    failed, running, queue = [], {}, list(commands.items())
    while queue or running:
        while queue and len(running) < parallel:
            exp, cmd = queue.pop(0)
            print(f"== {exp}: {' '.join(cmd[2:])}", flush=True)
            out = None if parallel == 1 else subprocess.PIPE
            running[exp] = (subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT if out else None,
                                             text=True), time.perf_counter())
        for exp, (proc, t0) in list(running.items()):
            if proc.poll() is None:
                continue
            if proc.stdout is not None:
                print(proc.stdout.read(), end="", flush=True)
            print(f"== {exp}: {time.perf_counter() - t0:.0f} s", flush=True)
            if proc.returncode != 0:
                failed.append(exp)
            del running[exp]
        time.sleep(0.2)
    return failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick", choices=PROFILES)
    parser.add_argument("--root", default=".", help="folder for runs/ and multirun/ (default: .)")
    parser.add_argument("--out", default="results/paper",
                        help="report folder (default: results/paper, written only when every experiment "
                             "of the profile completed; see deqexp report --help)")
    parser.add_argument("--launcher", default="local",
                        choices=["local", "joblib", "slurm", "slurm_gpu", "slurm_local"])
    parser.add_argument("--parallel", type=int, default=1,
                        help="experiments run at once, each with trainer.threads=cores/N (default 1)")
    parser.add_argument("--only", nargs="+", default=list(EXPERIMENTS), choices=EXPERIMENTS)
    parser.add_argument("extra", nargs="*", help="Hydra overrides for every experiment (after --)")
    args = parser.parse_args()
    if args.parallel > 1:  # cores shared among the experiments that run at once
        args.extra = [f"trainer.threads={max(1, len(os.sched_getaffinity(0)) // args.parallel)}", *args.extra]
    failed = run_all({exp: command(exp, args.profile, args.root, args.launcher, args.extra)
                      for exp in args.only}, args.parallel)
    rc = subprocess.run([sys.executable, "-m", "deqexp.cli", "report", "--profile", args.profile,
                         "--root", args.root, "--out", args.out]).returncode
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
