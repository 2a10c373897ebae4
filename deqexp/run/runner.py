"""One Hydra job from start to finish: identity (fingerprint, folder, lock), global state,
the task (training or an analysis), the results, and what is printed.

Bad input exits 2 with one message that names the key or file and the fix, and leaves a
FAILED file saying so. Ctrl-C exits 130 at once; SIGTERM (scancel) and SIGUSR2 (SLURM's
time-limit warning) exit 130 at the next epoch boundary, after a checkpoint of it, and a
SIGUSR2 is then passed to submitit, which requeues the job. Each prints one line saying what a
rerun will do; none leaves a COMPLETE marker.
"""
from __future__ import annotations

import errno
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from ..data.datasets import DataError
from ..theory.families import FamilyDataError
from . import trial
from .build import build_model, load_job_data, members_from_config, resolve_device
from .checkpoints import CHECKPOINT, load_checkpoint
from .effects import check_effects
from .folder import FolderBusy, MetricsLost, RunFolder
from .identity import identify, resolve_data_paths
from .metrics import SolverFailure
from .schemas import ConfigError
from .signals import StopRequested, StopSignals
from .sinks import CsvLog, WandbError, WandbLog, metric_columns
from .train import fit
from .validation import check_sweep_axes, validate

USER_ERRORS = (ConfigError, DataError, FamilyDataError, FolderBusy, MetricsLost, WandbError,
               SolverFailure)


def usable_cores() -> int:
    """The cores this process may run on (a SLURM or taskset allocation, not the whole node;
    SLURM_CPUS_PER_TASK where the cluster does not bind CPUs)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return min(cores, int(slurm)) if slurm.isdigit() and int(slurm) > 0 else cores


def job_threads(cfg, parallel_jobs: int = 1) -> int:
    """torch threads for this job: as configured, else ``$OMP_NUM_THREADS`` (a cap the user or
    a test runner chose), else the cores shared among the parallel jobs (more threads than
    cores slows every job several-fold)."""
    if cfg.trainer.threads > 0:
        return cfg.trainer.threads
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        return int(omp)
    return max(1, usable_cores() // max(1, parallel_jobs))


def reset_global_state(cfg, parallel_jobs: int = 1) -> None:
    """Seeds and threads, per job (the joblib launcher reuses worker processes)."""
    torch.set_num_threads(job_threads(cfg, parallel_jobs))
    random.seed(cfg.trainer.seed)
    np.random.seed(cfg.trainer.seed % 2**32)
    torch.manual_seed(cfg.trainer.seed)


def run_analysis(cfg, folder: RunFolder, parallel_jobs: int = 1) -> dict:
    """A non-training task (E4 agreement, E5 timing): its CSV, summary.json and the marker."""
    from . import tasks

    validate(cfg)
    reset_global_state(cfg, parallel_jobs)
    folder.start(cfg.force, OmegaConf.to_yaml(cfg, resolve=True))
    t0 = time.perf_counter()
    summary = getattr(tasks, cfg.task)(cfg, folder)
    summary.update(config=OmegaConf.to_container(cfg, resolve=True), run_dir=str(folder.path),
                   total_time_s=round(time.perf_counter() - t0, 3), torch=torch.__version__)
    folder.finish(summary)
    return summary


def train_job(cfg, folder: RunFolder, run_name: str = "default", parallel_jobs: int = 1,
              stop: StopSignals | None = None, given_paths: dict | None = None) -> dict:
    """Train and evaluate one job; write metrics.csv, W&B, summary.json and the marker.

    Everything that can fail on bad input (config, data, model, W&B) runs before the first
    metrics row is written. ``stop`` holds the signals that end training at an epoch boundary.
    ``given_paths``: data paths as the user wrote them (recorded in summary.json).
    """
    if cfg.task != "train":
        return run_analysis(cfg, folder, parallel_jobs)
    validate(cfg)
    reset_global_state(cfg, parallel_jobs)
    device = resolve_device(cfg.trainer.device)
    dtype = torch.float64 if cfg.trainer.dtype == "float64" else torch.float32
    members = members_from_config(cfg)
    job = load_job_data(cfg, members, device, dtype)
    model = build_model(cfg, job, members, device, dtype)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resume = None if cfg.force else load_checkpoint(folder.path, folder.fingerprint, say=True)
    epoch = resume["state"].epoch if resume else None
    # the last epoch evaluated before the checkpoint: metrics.csv must reach it
    evaluated = epoch - epoch % cfg.trainer.eval_every if resume and cfg.logger.csv else None
    folder.start(cfg.force, OmegaConf.to_yaml(cfg, resolve=True), resume_epoch=epoch, evaluated=evaluated)
    if resume:
        print(f"deqexp: resuming from the checkpoint at epoch {epoch} in {folder.path} "
              "(metrics.csv cut back to it; W&B continues the folder's run)")
    logs, failed = [], True
    try:
        if cfg.logger.wandb.enabled:
            logs.append(WandbLog(folder.path, cfg.logger.wandb, resolved, run_name, len(members),
                                 resume=resume is not None))
        if cfg.logger.csv:
            logs.append(CsvLog(folder.path / "metrics.csv", metric_columns(job.val_x is not None),
                               append=resume is not None))
        summary = fit(cfg, model, job, members, device, logs, run_name, folder.path,
                      folder.fingerprint, resume, stop, trial.reporter(cfg))
        summary.update(config=resolved, device=str(device), torch=torch.__version__,
                       run_dir=str(folder.path), **({"given_paths": given_paths} if given_paths else {}))
        for log in logs:
            log.summarise(summary)
        failed = False
    finally:
        for log in logs:
            log.close(failed)
    folder.finish(summary)
    return summary


def describe_summary(summary: dict, run_dir: Path | str) -> str:
    """The lines printed at the end of a run."""
    lines = []
    for m in summary["members"][:10]:
        first, last = m["initial_test_loss"], m["final_test_loss"]
        ok = all(v is not None and math.isfinite(v) for v in (first, last)) and min(first, last) > 0
        ratio = "vs" if not ok else (f"{first / last:.2f}x lower than" if last <= first
                                     else f"{last / first:.2f}x higher than")
        scale = "" if m.get("scale") is None else f", scale {m['scale']:.4g}"
        label = f"member {m['member']} ({m['init']}{scale}, seed {m['seed']})" \
            if len(summary["members"]) > 1 else f"{m['init']} init, seed {m['seed']}"
        fmt = lambda v: "nan" if v is None else f"{v:.5g}"  # noqa: E731
        lines.append(f"{label}: final test loss {fmt(last)} ({ratio} epoch 0: {fmt(first)}), "
                     f"status {m['status']}")
    if len(summary["members"]) > 10:
        lines.append(f"... and {len(summary['members']) - 10} more members (see summary.json)")
    shown = Path(run_dir).resolve()
    if shown.is_relative_to(Path.cwd()):
        shown = shown.relative_to(Path.cwd())
    lines.append(f"files: {shown}{os.sep}metrics.csv, summary.json")
    return "\n".join(lines)


def _parallel_jobs(hc) -> int:
    """How many jobs the launcher runs at once (joblib's n_jobs; 1 otherwise)."""
    n = hc.launcher.get("n_jobs") if "launcher" in hc else None
    if not isinstance(n, int) or n == 0:
        return 1
    return usable_cores() if n < 0 else n


def rerun_hint(folder: RunFolder) -> str:
    """What running the same command again will do with this folder."""
    ckpt = load_checkpoint(folder.path, folder.fingerprint)
    if ckpt is None:
        why = "its checkpoint is unreadable or another configuration's" \
            if (folder.path / CHECKPOINT).exists() else "no checkpoint yet"
        return f"a rerun of the same command starts it afresh ({why})"
    return f"a rerun of the same command resumes from the checkpoint at epoch {ckpt['state'].epoch}"


def _record_failure(folder: RunFolder, err: Exception) -> None:
    try:
        folder.failed(f"{type(err).__name__}: {err}")
    except OSError:  # the folder itself may be what failed
        pass


def run_from_hydra(cfg) -> dict | None:
    """The Hydra task: skip a completed run, else train under the folder's lock."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    run_name = run_dir.name if run_dir.name != "defaults" else cfg.name
    given_paths = resolve_data_paths(cfg)  # config.yaml keeps them absolute; summary.json as given
    folder = RunFolder(run_dir, *identify(cfg))
    if folder.is_complete() and not cfg.force:
        print(f"deqexp: already complete, skipped (force=true reruns it): {run_dir}")
        summary = folder.summary()
        if "members" in summary:
            print(describe_summary(summary, run_dir))
        return summary
    stop = StopSignals(defer=cfg.task == "train")  # only training has epochs to stop between
    try:
        with stop:
            check_sweep_axes(cfg, list(hc.overrides.task))
            check_effects(cfg, list(hc.overrides.task))
            folder.acquire()
            summary = train_job(cfg, folder, run_name, _parallel_jobs(hc), stop, given_paths)
    except USER_ERRORS as err:
        print(f"deqexp train: error: {err}", file=sys.stderr)
        if not isinstance(err, FolderBusy):  # a busy folder belongs to the run that holds it
            folder.failed(str(err))
        raise SystemExit(2) from None
    except trial.Pruned as err:  # a result of the study, not a failure: the sweep goes on
        (folder.path / trial.PRUNED).write_text(f"{err.epoch}\n")
        print(f"deqexp train: {err}; {run_dir} keeps the metrics so far", file=sys.stderr, flush=True)
        return {"pruned_at": err.epoch, "run_dir": str(run_dir)}
    except (KeyboardInterrupt, StopRequested) as err:
        what = err if isinstance(err, StopRequested) else "interrupted"
        print(f"deqexp train: {what}; {run_dir} keeps the metrics so far and no COMPLETE marker: "
              f"{rerun_hint(folder)}", file=sys.stderr, flush=True)
        if isinstance(err, StopRequested):
            stop.forward(err.signum)  # submitit requeues on SIGUSR2 (and exits)
        raise SystemExit(130) from None
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
            _record_failure(folder, err)
            raise
        _record_failure(folder, err)  # may itself fail on a full disk: then the line below says it
        print(f"deqexp train: error: cannot write to {run_dir} ({err.strerror}: {err.filename or ''}); "
              f"free space or point paths.output elsewhere, then rerun: {rerun_hint(folder)}",
              file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except Exception as err:
        _record_failure(folder, err)
        raise
    finally:
        folder.release()
    print(describe_summary(summary, run_dir) if "members" in summary
          else f"{cfg.task} complete; files: {run_dir}")
    return summary
