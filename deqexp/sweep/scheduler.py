"""What SLURM says about a sweep's jobs, for ``deqexp status`` and the waiting sweep.

A job's folder tells what the job wrote; only the scheduler knows whether a job without a
result is queued (and why it waits: a drained node is not the same as a busy one), running,
or gone. The SLURM job of each job folder comes from submitit's ``.submitit/<id>/<id>_submitted.pkl``
(the job's overrides, pickled at submission); the latest submission counts.
"""
from __future__ import annotations

import pickle
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..run.identity import folder_name

# pending reasons that only mean "waiting its turn"; any other (ReqNodeNotAvail for a drained
# or down node, PartitionDown, QOS limits, ...) is worth a line
ORDINARY_WAITS = ("None", "Resources", "Priority", "BeginTime", "Dependency", "JobArrayTaskLimit")


@dataclass(frozen=True)
class SlurmJob:
    """One SLURM job (an array task) as the scheduler reports it."""

    job_id: str
    state: str          # PENDING, RUNNING, COMPLETED, CANCELLED, FAILED, TIMEOUT, ... or UNKNOWN
    reason: str = ""    # squeue's pending reason


def _task_key(job_id: str) -> tuple[int, int]:
    array, _, task = job_id.partition("_")
    return int(array), int(task or 0)


def submitted_jobs(sweep_dir: Path) -> dict[str, str]:
    """``{job folder name: latest SLURM job id}`` from submitit's pickles in the sweep folder."""
    latest: dict[str, str] = {}
    root = Path(sweep_dir) / ".submitit"
    found = [p for p in root.glob("*/*_submitted.pkl") if re.fullmatch(r"\d+(_\d+)?", p.parent.name)]
    for path in sorted(found, key=lambda p: _task_key(p.parent.name)):
        try:
            with open(path, "rb") as fh:
                overrides = pickle.load(fh).args[0]
        except Exception:  # a damaged or foreign pickle: that job is simply not known
            continue
        latest[folder_name(overrides)] = path.parent.name
    return latest


def _run(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout if done.returncode == 0 else ""


def job_states(job_ids: list[str]) -> dict[str, SlurmJob]:
    """Each job's state: squeue for queued and running ones (with the pending reason), sacct
    for the ended ones; UNKNOWN where neither knows it (no SLURM here, or records expired)."""
    if not job_ids:
        return {}
    arrays = sorted({j.split("_")[0] for j in job_ids})
    out: dict[str, SlurmJob] = {}
    for line in _run(["squeue", "-h", "-r", "-j", ",".join(arrays), "-o", "%i|%T|%r"]).splitlines():
        job, state, reason = (line.split("|") + ["", ""])[:3]
        out[job.strip()] = SlurmJob(job.strip(), state.strip(), reason.strip())
    ended = [j for j in job_ids if j not in out]
    if ended:
        acct = _run(["sacct", "-n", "-X", "-P", "-j", ",".join(sorted({j.split("_")[0] for j in ended})),
                     "-o", "JobID,State"])
        for line in acct.splitlines():
            job, _, state = line.partition("|")
            if job.strip() in ended and job.strip() not in out:
                out[job.strip()] = SlurmJob(job.strip(), state.split()[0] if state.strip() else "UNKNOWN")
    return {j: out.get(j, SlurmJob(j, "UNKNOWN")) for j in job_ids}


def unusual_wait(job: SlurmJob) -> bool:
    """A pending job that waits for something other than its turn (e.g. a drained node)."""
    return job.state == "PENDING" and job.reason not in ORDINARY_WAITS


class PendingNotes:
    """For a waiting sweep: one line per job and unusual pending reason, said once, at most
    every ``every`` seconds of asking (squeue is not asked at every poll)."""

    def __init__(self, every: float = 20.0):
        self.every, self.last, self.said = every, float("-inf"), set()

    def __call__(self, job_ids: list[str], now: float) -> list[str]:
        if now - self.last < self.every or not job_ids:
            return []
        self.last = now
        lines = []
        for job in job_states(job_ids).values():
            if unusual_wait(job) and (job.job_id, job.reason) not in self.said:
                self.said.add((job.job_id, job.reason))
                lines.append(f"deqexp: SLURM job {job.job_id} is pending: {job.reason} (not a busy cluster: "
                             "e.g. a drained or down node); the sweep waits for it, Ctrl-C cancels")
        return lines
