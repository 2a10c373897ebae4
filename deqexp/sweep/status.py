"""Where a sweep stands: ``deqexp status multirun/NAME``.

The jobs a sweep should have come from its ``multirun.yaml`` (Hydra writes it when the sweep
starts: the command's overrides), expanded as Hydra's basic sweeper does; each job's folder
name is the one deqexp gives it. A job is then, from the files in its folder:

- ``complete`` (COMPLETE and summary.json), or ``diverged`` when every member diverged;
- ``stale``: the folder holds another configuration's results (a preset, default or data file
  changed since), which ``deqexp train`` refuses without ``force=true``. The job's fingerprint
  is composed afresh and judged by :func:`deqexp.run.identity.folder_state`, the rule ``train``
  itself follows, so the two never disagree;
- ``running`` (its folder lock is held);
- ``failed`` (a FAILED file with the error);
- ``interrupted at epoch k`` (a checkpoint, no COMPLETE: a rerun resumes from k);
- ``interrupted before a checkpoint`` (a folder without one: a rerun starts afresh);
- ``missing`` (no folder: not started yet, still queued, or lost).

On a SLURM sweep, the scheduler is asked too (:mod:`deqexp.sweep.scheduler`): a job SLURM
holds is ``queued`` (with its pending reason: a drained node is said as such) or ``running``,
and a job without a folder whose SLURM job has ended is ``lost``.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from ..run.config import job_fingerprints
from ..run.folder import CHECKPOINT, FAILED, lock_held
from ..run.identity import folder_name, folder_state
from ..run.messages import shorten, shown

STATES = ("complete", "diverged", "stale", "running", "queued", "failed", "interrupted", "missing", "lost")
FINISHED = ("complete", "diverged")


@dataclass
class JobStatus:
    """One job of a sweep: its overrides, folder, state and a detail."""

    overrides: list[str]
    folder: Path
    state: str
    epoch: int | None = None
    detail: str = ""


def expand(sweeper_params: dict, overrides: list[str]) -> list[list[str]]:
    """Each job's overrides, as Hydra's basic sweeper makes them: the config's
    ``hydra.sweeper.params`` first, then the command line's overrides (which win)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    given = [f"{k}={v}" for k, v in (sweeper_params or {}).items()] + list(overrides)
    parsed = OverridesParser.create().parse_overrides(given)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def expected_jobs(sweep_dir: Path) -> tuple[list[list[str]], dict]:
    """Each job's overrides from ``multirun.yaml``, and that file's ``hydra.overrides``."""
    saved = OmegaConf.load(sweep_dir / "multirun.yaml")
    given = OmegaConf.to_container(saved.hydra.overrides)
    params = OmegaConf.select(saved, "hydra.sweeper.params")
    params = OmegaConf.to_container(params) if params is not None else {}
    return expand(params, given["task"]), given


def config_dirs(sweep_dir: Path) -> list[str]:
    """The ``--config-dir`` folders the sweep was started with (from its multirun.yaml)."""
    saved = OmegaConf.load(sweep_dir / "multirun.yaml")
    sources = OmegaConf.select(saved, "hydra.runtime.config_sources") or []
    return [str(s.path).removeprefix("file://") for s in sources
            if s.get("provider") == "command-line" and str(s.get("schema")) == "file"]


def _checkpoint_epoch(folder: Path) -> int | None:
    if not (folder / CHECKPOINT).exists():
        return None
    from ..run.checkpoints import read_checkpoint  # torch: only where there is a checkpoint

    ckpt = read_checkpoint(folder / CHECKPOINT)
    return None if ckpt is None else ckpt["state"].epoch


def _last_epoch(folder: Path) -> int | None:
    try:
        lines = (folder / "metrics.csv").read_text().splitlines()
        col = lines[0].split(",").index("epoch")
        return int(lines[-1].split(",")[col]) if len(lines) > 1 else None
    except (OSError, ValueError, IndexError):
        return None


def job_status(overrides: list[str], folder: Path, fp: str | None = None) -> JobStatus:
    """The state of one job from the files in its folder, judged against the fingerprint the
    job would run with now (``fp``; None: whatever configuration the folder holds)."""
    status = lambda state, epoch=None, detail="": JobStatus(overrides, folder, state, epoch, detail)  # noqa: E731
    if not folder.is_dir():
        return status("missing", detail="not started, queued, or lost")
    state = folder_state(folder, fp) if fp is not None else \
        ("complete" if (folder / "COMPLETE").exists() and (folder / "summary.json").exists() else "open")
    if state == "stale":
        return status("stale", _last_epoch(folder), "another configuration's results: a preset, default "
                      "or data file changed since; train refuses it without force=true")
    if state == "complete":
        members = json.loads((folder / "summary.json").read_text()).get("members", [])
        dead = sum(m["status"] == "diverged" for m in members)
        epoch = max((m["epochs_run"] for m in members), default=None)
        if members and dead == len(members):
            return status("diverged", epoch, "every member diverged")
        return status("complete", epoch, f"{dead} of {len(members)} members diverged" if dead else "")
    if lock_held(folder):
        return status("running", _last_epoch(folder), "epoch of the last logged row")
    if (folder / FAILED).exists():
        return status("failed", _last_epoch(folder), shorten((folder / FAILED).read_text(), 200))
    epoch = _checkpoint_epoch(folder)
    if epoch is not None:
        return status("interrupted", epoch, f"a rerun resumes from epoch {epoch}")
    return status("interrupted", None, "no checkpoint: a rerun starts afresh")


def ask_scheduler(found: list[JobStatus], sweep_dir: Path) -> None:
    """Correct the unfinished jobs' states with what SLURM says about them (in place)."""
    from .scheduler import job_states, submitted_jobs, unusual_wait

    ids = submitted_jobs(sweep_dir)
    open_jobs = [s for s in found if s.state not in FINISHED and s.folder.name in ids]
    states = job_states([ids[s.folder.name] for s in open_jobs])
    for s in open_jobs:
        job = states[ids[s.folder.name]]
        if job.state == "PENDING":
            why = " (not a busy cluster: e.g. a drained or down node)" if unusual_wait(job) else ""
            s.state, s.detail = "queued", f"SLURM {job.job_id} pending: {job.reason}{why}"
        elif job.state in ("RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED"):
            s.state, s.detail = "running", f"SLURM {job.job_id} {job.state.lower()}"
        elif s.state == "missing" and job.state not in ("UNKNOWN", "COMPLETED"):
            s.state, s.detail = "lost", f"SLURM {job.job_id} ended {job.state} before the run started"


def sweep_status(sweep_dir: Path) -> tuple[list[JobStatus], list[JobStatus], dict]:
    """The sweep's jobs, the other job folders found there (earlier sweeps of the same name),
    and the sweep's overrides."""
    jobs, given = expected_jobs(sweep_dir)
    fps = job_fingerprints(jobs, config_dirs(sweep_dir))
    found = [job_status(job, sweep_dir / folder_name(job), fp) for job, fp in zip(jobs, fps)]
    if "slurm" in str(OmegaConf.select(OmegaConf.load(sweep_dir / "multirun.yaml"),
                                       "hydra.launcher._target_", default="")).lower():
        ask_scheduler(found, sweep_dir)
    known = {s.folder.name for s in found}
    others = [job_status([], p) for p in sorted(sweep_dir.iterdir())
              if p.is_dir() and p.name not in known and (p / "FINGERPRINT").exists()]
    return found, others, given


def format_status(found: list[JobStatus], others: list[JobStatus], given: dict) -> str:
    """The table that ``deqexp status`` prints."""
    from .cluster import continue_command

    def line(s: JobStatus, name: str) -> str:
        epoch = "" if s.epoch is None else str(s.epoch)
        return f"{s.state:<12} {epoch:>6}  {name}" + (f"  ({s.detail})" if s.detail else "")

    shared = [o for o in found[0].overrides if all(o in s.overrides for s in found)] if found else []
    out = [f"sweep: {' '.join(map(shown, shared))}", f"{'state':<12} {'epoch':>6}  job"]
    out += [line(s, " ".join(shown(o) for o in s.overrides if o not in shared) or "(the only job)")
            for s in found]
    if others:
        out.append(f"\nother job folders here (earlier sweeps of this name): {len(others)}")
        out += [line(s, s.folder.name) for s in others]
    counts = {k: sum(s.state == k for s in found) for k in STATES}
    out.append("\n" + ", ".join(f"{n} {k}" for k, n in counts.items() if n) + f" of {len(found)} jobs")
    if counts["stale"]:
        out.append("stale jobs hold another configuration's results: rerun them with force=true, or "
                   "give this sweep another name=")
    if counts["running"] or counts["queued"]:  # the same command now would start them twice
        out.append(f"{counts['running'] + counts['queued']} job(s) still running or queued: once none "
                   "is, `deqexp status` gives the command that continues the sweep")
    elif sum(counts[k] for k in FINISHED) < len(found):
        out.append("continue (skips the finished jobs, resumes the interrupted ones):\n  "
                   + continue_command(given["task"], given.get("hydra", [])))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="deqexp status",
        description="List each job of a sweep (deqexp train -m ...) as complete, diverged, running, "
                    "failed, interrupted at epoch k, or missing, with the command that continues the "
                    "sweep. Exit 0 when every job has finished, 1 otherwise.")
    parser.add_argument("sweep_dir", type=Path, help="the sweep's folder, e.g. multirun/NAME")
    args = parser.parse_args(argv)
    if (args.sweep_dir / "optuna.journal").exists():  # hydra/sweeper=optuna: the studies' trials
        from .search_outputs import search_status

        text, finished = search_status(args.sweep_dir)
        print(text)
        return 0 if finished else 1
    if not args.sweep_dir.exists():
        print(f"deqexp status: error: {args.sweep_dir} does not exist; point to the folder a "
              "`deqexp train -m` printed, e.g. multirun/NAME", file=sys.stderr)
        return 2
    if not (args.sweep_dir / "multirun.yaml").exists():
        print(f"deqexp status: error: {args.sweep_dir} is not a sweep folder (it has no multirun.yaml); "
              "point to the folder a `deqexp train -m` printed, e.g. multirun/NAME", file=sys.stderr)
        return 2
    found, others, given = sweep_status(args.sweep_dir)
    print(format_status(found, others, given))
    return 0 if all(s.state in FINISHED for s in found) else 1
