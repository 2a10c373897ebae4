"""The SLURM launcher (``launcher=slurm``, ``launcher=slurm_gpu``): Hydra's submitit launcher
with the checks and the clean-up that a sweep at scale needs.

- Before anything is submitted, the request is checked against what ``sinfo`` says the
  cluster has (partition, CPUs and memory per node, GPUs) and against its own time limits, so
  an impossible request fails at once with one line naming the key, instead of pending forever.
- sbatch's own refusals become one line naming the likely key.
- It waits for every job, so one failed or cancelled job does not abandon the others; it then
  lists the jobs that did not complete with the command that continues the sweep.
- Interrupted (Ctrl-C, SIGTERM) or failing itself, it cancels its own unfinished jobs.

Time limits: SLURM sends SIGUSR2 ``signal_delay_s`` before ``timeout_min``; the job writes a
checkpoint at its next epoch boundary (:mod:`deqexp.run.signals`) and submitit requeues it, up to
``max_num_timeout`` times; the requeued job resumes from that checkpoint.
"""
from __future__ import annotations

import contextlib
import io
import math
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as _SubmititSlurm

from ..run.messages import shorten, shown
from ..run.signals import StopSignals
from .scheduler import PendingNotes

POLL_S = 2.0
# slurmctld checks time limits periodically and may send the warning this much early (sbatch(1))
SIGNAL_RESOLUTION_S = 60


class SlurmRequestError(ValueError):
    """A request the cluster cannot run; the message names the key and the fix."""


@dataclass
class NodeGroup:
    """One line of ``sinfo``: nodes of a partition with the same resources."""

    partition: str
    default: bool
    cpus: int
    memory_mb: int
    gpus: int


def read_sinfo(text: str) -> list[NodeGroup]:
    """Parse ``sinfo -h -o '%P|%c|%m|%G'``."""
    groups = []
    for line in text.strip().splitlines():
        part, cpus, mem, gres = line.split("|")
        gpus = sum(int(m.group(1)) for m in re.finditer(r"gpu(?::[^:,(]+)?:(\d+)", gres))
        groups.append(NodeGroup(part.rstrip("*"), part.endswith("*"), int(cpus.rstrip("+")),
                                int(re.sub(r"\D", "", mem) or 0), gpus))
    return groups


def _key(name: str) -> str:
    return f"hydra.launcher.{name}"


def _time_fix(timeout_s: int, delay: int) -> str:
    """A fix that is itself valid: a longer time limit, or (when it leaves one) a shorter delay."""
    minutes = math.ceil((delay + SIGNAL_RESOLUTION_S + 1) / 60)
    fix = f"raise {_key('timeout_min')} to at least {minutes}"
    largest = timeout_s - SIGNAL_RESOLUTION_S - 1
    return fix + (f", or choose {_key('signal_delay_s')} <= {largest}" if largest >= 1 else "")


def check_request(params: dict, nodes: list[NodeGroup]) -> None:
    """Raise :class:`SlurmRequestError` when no node of the chosen partition can run one job
    of ``params`` (the launcher's settings), or the time settings defeat the requeue."""
    timeout_s, delay = 60 * (params.get("timeout_min") or 0), params.get("signal_delay_s") or 0
    if timeout_s and timeout_s - delay < SIGNAL_RESOLUTION_S:
        raise SlurmRequestError(
            f"{_key('signal_delay_s')}={delay} leaves less than {SIGNAL_RESOLUTION_S} s of "
            f"{_key('timeout_min')}={params['timeout_min']} ({timeout_s} s): SLURM may send its "
            "time-limit warning up to a minute early, before the job can checkpoint; "
            + _time_fix(timeout_s, delay))
    if (params.get("max_num_timeout") or 0) < 0:
        raise SlurmRequestError(f"{_key('max_num_timeout')} must be >= 0 (requeues after a time-out)")
    names = sorted({n.partition for n in nodes})
    wanted = params.get("partition")
    if wanted:
        pool = [n for n in nodes if n.partition == wanted]
        if not pool:
            raise SlurmRequestError(f"{_key('partition')}={wanted} does not exist on this cluster; "
                                    f"choose one of: {', '.join(names)}")
        where = f"partition {wanted}"
    else:
        pool = [n for n in nodes if n.default] or nodes
        where = f"the default partition ({pool[0].partition})" if pool else "this cluster"
    if not pool:
        raise SlurmRequestError("sinfo lists no nodes; is this a SLURM cluster's login node?")
    tasks = params.get("tasks_per_node") or 1
    cpus = (params.get("cpus_per_task") or 1) * tasks
    if cpus > max(n.cpus for n in pool):
        raise SlurmRequestError(
            f"{_key('cpus_per_task')}={params.get('cpus_per_task')} (x tasks_per_node={tasks}) is more "
            f"CPUs than any node of {where} has ({max(n.cpus for n in pool)}); lower trainer.threads "
            "(the CPUs per job come from it) or choose another partition")
    mem_gb = params.get("mem_gb")
    if mem_gb and mem_gb * 1024 > max(n.memory_mb for n in pool):
        raise SlurmRequestError(
            f"{_key('mem_gb')}={mem_gb} is more memory than any node of {where} has "
            f"({max(n.memory_mb for n in pool) / 1024:.1f} GB); lower it")
    gpus = params.get("gpus_per_node") or 0
    if gpus > max(n.gpus for n in pool):
        have = max(n.gpus for n in pool)
        raise SlurmRequestError(
            f"{_key('gpus_per_node')}={gpus} but the nodes of {where} have "
            f"{have or 'no'} GPUs; use launcher=slurm (CPU) here, or a GPU partition with "
            f"{_key('partition')}=...")


# sbatch's refusals, with the launcher key that most likely caused each
SBATCH_KEYS = [("qos", "qos"), ("account", "account"), ("partition", "partition"),
               ("feature", "constraint"), ("node name", "exclude"),
               ("gres", "gpus_per_node"), ("memory", "mem_gb"), ("processors", "cpus_per_task"),
               ("time limit", "timeout_min"), ("node configuration", "cpus_per_task / mem_gb")]


def explain_sbatch(stderr: str) -> str:
    """One line from sbatch's error output, with the key it points at."""
    lines = [ln.strip() for ln in stderr.splitlines() if "error" in ln.lower()] or [stderr.strip()]
    line = shorten(lines[-1])
    key = next((k for word, k in SBATCH_KEYS if word in line.lower()), "*")
    return f"SLURM refused the jobs ({line}); check {_key(key)}"


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout
    except FileNotFoundError:
        raise SlurmRequestError(
            f"launcher=slurm needs SLURM's commands ({cmd[0]} was not found); run the sweep on the "
            "cluster's login node, or use launcher=slurm_local to try the path without a "
            "cluster") from None
    except subprocess.CalledProcessError as err:
        raise SlurmRequestError(f"{' '.join(cmd[:2])} failed: {shorten(err.stderr.strip())}") from None


def continue_command(task_overrides: list[str], hydra_overrides: list[str]) -> str:
    """The command line that continues a sweep: completed jobs are skipped, interrupted ones
    resume from their checkpoints."""
    extra = [o for o in hydra_overrides if not o.startswith("hydra.mode=")]
    return "deqexp train -m " + " ".join(shlex.quote(o) for o in [*task_overrides, *extra])


class SlurmLauncher(_SubmititSlurm):
    """Hydra's submitit SLURM launcher, checked before submission and cleaned up after."""

    def setup(self, **kwargs) -> None:
        """Check the request against the cluster here, before the sweeper writes multirun.yaml:
        a refused request leaves the sweep folder as it was."""
        super().setup(**kwargs)
        try:
            check_request(self.params, read_sinfo(_run(["sinfo", "-h", "-o", "%P|%c|%m|%G"])))
        except SlurmRequestError as err:
            _fail(str(err), 2)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        saved = sweep_dir / "multirun.yaml"  # as it was: put back if sbatch refuses the request
        self._before = (sweep_dir, sweep_dir.exists(), saved.read_bytes() if saved.exists() else None)

    def _restore_sweep_folder(self) -> None:
        """Undo what the sweeper wrote before a submission that sbatch refused."""
        sweep_dir, existed, text = getattr(self, "_before", (None, True, None))
        if sweep_dir is None:
            return
        saved = sweep_dir / "multirun.yaml"
        if text is None:
            saved.unlink(missing_ok=True)
        else:
            saved.write_bytes(text)
        if not existed:
            shutil.rmtree(sweep_dir / ".submitit", ignore_errors=True)
            with contextlib.suppress(OSError):
                sweep_dir.rmdir()  # only if empty

    def launch(self, job_overrides, initial_job_idx):
        executor = self._executor()
        state = Singleton.get_state()
        args = [(list(o), "hydra.sweep.dir", initial_job_idx + i, f"job_id_for_{initial_job_idx + i}", state)
                for i, o in enumerate(job_overrides)]
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        caught = io.StringIO()
        try:
            with contextlib.redirect_stderr(caught):  # submitit prints sbatch's stderr itself
                jobs = executor.map_array(self, *zip(*args))
        except Exception as err:  # submitit's FailedJobError carries sbatch's stderr
            self._restore_sweep_folder()
            _fail(explain_sbatch(str(err) or caught.getvalue()), 2)
        print(f"deqexp: {len(jobs)} job(s) submitted as SLURM array {jobs[0].job_id.split('_')[0]} "
              f"(squeue --me); waiting for them; Ctrl-C cancels them. Progress: deqexp status {sweep_dir}",
              flush=True)
        wait_all(jobs)
        returns = self._collect(jobs, job_overrides, sweep_dir)
        print(f"deqexp: all {len(jobs)} job(s) complete; results under {sweep_dir}", flush=True)
        return returns

    def _executor(self):
        """submitit's executor with this launcher's parameters (as Hydra's launcher builds it)."""
        import submitit
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
        from omegaconf import OmegaConf

        init_keys = {"submitit_folder", "max_num_timeout"}
        executor = submitit.AutoExecutor(cluster="slurm", folder=self.params["submitit_folder"],
                                         slurm_max_num_timeout=self.params.get("max_num_timeout", 0))
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"slurm_{k}": v
                                      for k, v in self.params.items() if k not in init_keys})
        return executor

    def _collect(self, jobs, job_overrides, sweep_dir: Path):
        """Hydra's job returns; exit 1 listing the jobs that did not complete."""
        from hydra.core.utils import JobStatus

        returns, failed = [], []
        for job, overrides in zip(jobs, job_overrides):
            try:
                ret = job.results()[0]
            except Exception:  # cancelled, killed, or exited with deqexp's own error
                why = f"{job.state}{_last_error(job)}"
            else:
                if ret.status != JobStatus.FAILED:
                    returns.append(ret)
                    continue
                err = ret._return_value  # an exception raised in the job (Hydra keeps it)
                why = f"FAILED: {type(err).__name__}: {shorten(str(err))}"
            failed.append(f"  {' '.join(map(shown, overrides))}: SLURM job {job.job_id} {why}")
        if failed:
            hc = self.config.hydra.overrides
            print(f"deqexp train: {len(failed)} of {len(jobs)} job(s) did not complete:\n"
                  + "\n".join(failed) + f"\nstatus: deqexp status {sweep_dir}\ncontinue: "
                  + continue_command(list(hc.task), list(hc.hydra)), file=sys.stderr, flush=True)
            raise SystemExit(1)
        return returns


def wait_all(jobs) -> None:
    """Until every job has ended; interrupted (Ctrl-C, SIGTERM, SIGUSR2) or failing here,
    cancel the unfinished ones and exit 130."""
    pending, notes = list(jobs), PendingNotes()
    try:
        with StopSignals(defer=False):  # the sweep has no epochs: its signals interrupt at once
            while pending:
                for job in list(pending):  # one at a time: an interrupt leaves only the unfinished
                    if job.done():
                        pending.remove(job)
                for line in notes([j.job_id for j in pending], time.monotonic()):
                    print(line, flush=True)  # e.g. queued behind a drained node
                if pending:
                    time.sleep(POLL_S)
    except BaseException as err:
        cancelled = cancel(pending)
        what = "interrupted" if isinstance(err, KeyboardInterrupt) else f"gave up ({err!r:.200})"
        _fail(f"{what}; cancelled its {len(cancelled)} unfinished SLURM job(s) "
              f"{' '.join(cancelled)}; they checkpoint on the way out, and the same command again "
              "skips the completed jobs and resumes the others", 130)


def cancel(jobs) -> list[str]:
    """scancel ``jobs``; their ids."""
    ids = [j.job_id for j in jobs]
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=60)
    return ids


def _last_error(job) -> str:
    """The last line deqexp printed to the job's stderr (its own one-line errors)."""
    try:
        lines = [ln for ln in Path(job.paths.stderr).read_text().splitlines() if ln.startswith("deqexp")]
    except OSError:
        return ""
    return f": {shorten(lines[-1])}" if lines else ""


def _fail(message: str, code: int):
    print(f"deqexp train: {'' if code == 130 else 'error: '}{message}", file=sys.stderr, flush=True)
    raise SystemExit(code)
