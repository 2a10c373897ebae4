"""The cluster path without a cluster (issue 15): the launcher's checks and clean-up, stop
signals, the ignored-init guard and `deqexp status`. tests/test_slurm.py runs it for real."""
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from deqexp.run import train as train_module
from deqexp.run.build import members_from_config
from deqexp.run.checkpoints import CHECKPOINT, LoopState, atomic_save, read_checkpoint
from deqexp.run.config import compose, job_fingerprints
from deqexp.run.folder import RunFolder
from deqexp.run.identity import fingerprint
from deqexp.run.runner import train_job, usable_cores
from deqexp.run.schemas import ConfigError
from deqexp.run.signals import StopRequested, StopSignals
from deqexp.run.validation import check_sweep_axes
from deqexp.sweep import cluster
from deqexp.sweep.status import main as status_main
from deqexp.sweep.status import sweep_status
from tests.cli import deqexp, interruptible
from tests.compose import compose_config

CPU_NODE = "debug*|2|7900|(null)\n"     # sinfo -h -o '%P|%c|%m|%G' of a small CPU node
GPU_NODES = "cpu*|64|256000|(null)\ngpu|32|512000|gpu:a100:4(S:0-1)\n"


def _launcher(*overrides):
    cfg = compose(*overrides, hydra=True)
    return OmegaConf.to_container(cfg.hydra.launcher, resolve=True)


# --------------------------------------------------------------------------- requests
def test_sinfo_lines_are_read_with_the_default_partition_and_gpus():
    cpu, gpu = cluster.read_sinfo(GPU_NODES)
    assert (cpu.partition, cpu.default, cpu.cpus, cpu.memory_mb, cpu.gpus) == ("cpu", True, 64, 256000, 0)
    assert (gpu.partition, gpu.default, gpu.gpus) == ("gpu", False, 4)
    assert cluster.read_sinfo("p|8+|1000+|gpu:2,gpu:v100:1\n")[0].gpus == 3


def test_the_shipped_launchers_fit_the_nodes_they_are_for():
    cpu = _launcher("launcher=slurm")
    cluster.check_request(cpu, cluster.read_sinfo(CPU_NODE))  # 2 CPUs, 8 GB, no GPU
    assert cpu["cpus_per_task"] == compose("launcher=slurm").trainer.threads  # CPUs from threads
    assert cpu["max_num_timeout"] >= 1  # a job at its time limit is requeued
    assert cpu["timeout_min"] * 60 - cpu["signal_delay_s"] >= cluster.SIGNAL_RESOLUTION_S
    assert _launcher("launcher=slurm", "trainer.threads=1")["cpus_per_task"] == 1
    gpu = _launcher("launcher=slurm_gpu", "hydra.launcher.partition=gpu")
    cluster.check_request(gpu, cluster.read_sinfo(GPU_NODES))
    assert gpu["gpus_per_node"] == 1 and compose("launcher=slurm_gpu").trainer.device == "cuda"
    with pytest.raises(cluster.SlurmRequestError, match=r"gpus_per_node=1 but the nodes of the default"):
        cluster.check_request(_launcher("launcher=slurm_gpu"), cluster.read_sinfo(GPU_NODES))


@pytest.mark.parametrize("change, message", [
    ({"cpus_per_task": 4}, r"hydra.launcher.cpus_per_task=4 .* more CPUs than any node of the default "
                           r"partition \(debug\) has \(2\)"),
    ({"cpus_per_task": 1, "tasks_per_node": 3}, r"x tasks_per_node=3"),
    ({"mem_gb": 32}, r"hydra.launcher.mem_gb=32 is more memory than any node .* \(7.7 GB\)"),
    ({"gpus_per_node": 1}, r"gpus_per_node=1 but the nodes of the default partition \(debug\) have no GPUs"),
    ({"partition": "gpu"}, r"partition=gpu does not exist on this cluster; choose one of: debug"),
    ({"timeout_min": 1, "signal_delay_s": 30}, r"signal_delay_s=30 leaves less than 60 s of "
                                               r"hydra.launcher.timeout_min=1 .*; raise "
                                               r"hydra.launcher.timeout_min to at least 2$"),
    ({"timeout_min": 3, "signal_delay_s": 150}, r"raise hydra.launcher.timeout_min to at least 4, or "
                                                r"choose hydra.launcher.signal_delay_s <= 119$"),
    ({"max_num_timeout": -1}, r"max_num_timeout must be >= 0"),
])
def test_impossible_requests_are_refused_naming_the_key(change, message):
    params = {**_launcher("launcher=slurm"), **change}
    with pytest.raises(cluster.SlurmRequestError, match=message):
        cluster.check_request(params, cluster.read_sinfo(CPU_NODE))


def test_sbatch_refusals_name_the_key():
    for err, key in [("sbatch: error: Batch job submission failed: Invalid qos specification", "qos"),
                     ("sbatch: error: Batch job submission failed: Invalid feature specification",
                      "constraint"),
                     ("sbatch: error: Memory specification can not be satisfied", "mem_gb")]:
        line = cluster.explain_sbatch("some noise\n" + err)
        assert line.startswith("SLURM refused the jobs (") and line.endswith(f"check hydra.launcher.{key}")


def test_the_continue_command_quotes_lists_and_drops_the_mode():
    got = cluster.continue_command(["trainer.seed=0,1", "trainer.ensemble.inits=[kglm,random]"],
                                   ["hydra.mode=MULTIRUN", "hydra.launcher.partition=cpu"])
    assert got == ("deqexp train -m trainer.seed=0,1 'trainer.ensemble.inits=[kglm,random]' "
                   "hydra.launcher.partition=cpu")


class _Job:
    def __init__(self, job_id, finished):
        self.job_id, self.finished = job_id, finished

    def done(self):
        if self.finished == "interrupt":
            raise KeyboardInterrupt
        if self.finished == "error":
            raise RuntimeError("sacct broke")
        return self.finished


@pytest.mark.parametrize("how", ["interrupt", "error"])
def test_a_sweep_that_gives_up_cancels_its_unfinished_jobs(monkeypatch, capsys, how):
    calls = []
    monkeypatch.setattr(cluster.subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    jobs = [_Job("9_0", True), _Job("9_1", False), _Job("9_2", False)]
    jobs[1].finished = how  # raises on the first poll, with 9_1 and 9_2 unfinished
    with pytest.raises(SystemExit) as exit_:
        cluster.wait_all(jobs)
    assert exit_.value.code == 130 and calls == [["scancel", "9_1", "9_2"]]
    assert "cancelled its 2 unfinished SLURM job(s) 9_1 9_2" in capsys.readouterr().err


def test_threads_follow_slurms_cpus_where_it_does_not_bind_them(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert usable_cores() == 1
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert usable_cores() == len(os.sched_getaffinity(0))


# --------------------------------------------------------------------------- stop signals
RUN = ["dataset.n_train=40", "dataset.n_test=12", "dataset.length=20", "logger=csv", "logger.progress=false",
       "trainer.dtype=float64", "trainer.epochs=6", "trainer.batch_size=8", "trainer.checkpoint_every=100",
       "optim=adam_cosine", "trainer.ensemble.inits=[kglm,random]"]
NUMBERS = ["train_loss", "test_loss", "fwd_iters_mean", "bwd_iters_mean", "op_norm_W", "jac_norm"]


@pytest.mark.parametrize("sig", [signal.SIGUSR2, signal.SIGTERM])
def test_a_stop_signal_mid_epoch_checkpoints_the_last_finished_one_and_the_rerun_ends_as_if_uninterrupted(
        tmp_path, monkeypatch, sig):
    cfg = compose_config(*RUN)
    whole = RunFolder(tmp_path / "whole", fingerprint(cfg))
    train_job(cfg, whole)
    real, calls = train_module.train_epoch, []

    def signalled_in_epoch_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), sig)  # arrives as epoch 3 starts: honoured at its first batch
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_epoch", signalled_in_epoch_3)
    stopped = RunFolder(tmp_path / "stopped", fingerprint(cfg))
    forwarded = []
    submitits = lambda s, f: forwarded.append(s)  # noqa: E731
    previous = signal.signal(sig, submitits)  # as submitit's handler
    try:
        stop = StopSignals()
        with pytest.raises(StopRequested, match="after epoch 2"), stop:
            train_job(cfg, stopped, stop=stop)
        assert signal.getsignal(sig) is submitits  # handlers restored (a bound method is new
        # at each access: `is not stop._record` could never fail)
        stop.forward(sig)
    finally:
        signal.signal(sig, previous)
    assert forwarded == [sig]
    # the last finished epoch's (periodic ones are every 100 epochs), as epoch 3 began
    assert read_checkpoint(stopped.path / CHECKPOINT)["state"].epoch == 2
    assert not (stopped.path / "COMPLETE").exists()
    monkeypatch.setattr(train_module, "train_epoch", real)
    train_job(cfg, stopped)
    a, b = pd.read_csv(whole.path / "metrics.csv"), pd.read_csv(stopped.path / "metrics.csv")
    assert list(a.epoch) == list(b.epoch)
    assert np.allclose(a[NUMBERS], b[NUMBERS], rtol=1e-12, atol=1e-14, equal_nan=True)


def test_without_epochs_to_stop_between_a_stop_signal_interrupts_at_once():
    with pytest.raises(KeyboardInterrupt), StopSignals(defer=False):  # E4/E5's analyses
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs between bytecodes: this never finishes
    with StopSignals() as deferred:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
    assert deferred.signum == signal.SIGTERM


@pytest.mark.slow
# SIGTERM takes SIGUSR2's path (in-process above, and scancel in test_slurm.py)
@pytest.mark.parametrize("sig, says", [(signal.SIGUSR2, "stopped by SIGUSR2"),
                                       (signal.SIGINT, "interrupted")])
def test_the_interrupt_message_says_what_a_rerun_will_do(tmp_path, sig, says):
    args = [sys.executable, "-m", "deqexp.cli", "train", "trainer.epochs=100000", "dataset.n_train=50",
            "dataset.n_test=10", "logger.wandb.mode=offline", "trainer.checkpoint_every=1000",
            f"paths.output={tmp_path}"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HYDRA_FULL_ERROR": "0", "WANDB_SILENT": "true"},
                            preexec_fn=interruptible)
    deadline = time.time() + 120
    while not any(len(p.read_text().splitlines()) > 3 for p in tmp_path.rglob("metrics.csv")):
        assert time.time() < deadline
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and says in err and "Traceback" not in err, err[-2000:]
    assert not list(tmp_path.rglob("COMPLETE"))
    debug = list(tmp_path.rglob("debug.log"))
    assert debug and any("exit" in p.read_text().lower() for p in debug)  # W&B finished
    # every way of stopping leaves the checkpoint of the last finished epoch (periodic ones are
    # every 1000 epochs), and says that a rerun resumes from it
    (ckpt,) = tmp_path.rglob(CHECKPOINT)
    epoch = read_checkpoint(ckpt)["state"].epoch
    assert epoch >= 2 and f"resumes from the checkpoint at epoch {epoch}" in err
    assert sig == signal.SIGINT or f"after epoch {epoch}" in err


@pytest.mark.slow
def test_a_stop_signal_ends_a_solve_that_would_run_for_hours_within_seconds(tmp_path):
    # forward iteration to a tolerance it never reaches, with 10^8 iterations allowed: the
    # first evaluation alone would take hours; SIGTERM is honoured within an iteration
    args = [sys.executable, "-m", "deqexp.cli", "train", "solver=forward", "solver.forward.tol=1e-300",
            "solver.forward.max_iter=100000000", "logger=csv", f"paths.output={tmp_path}"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HYDRA_FULL_ERROR": "0"}, preexec_fn=interruptible)
    deadline = time.time() + 120
    while not list(tmp_path.rglob("config.yaml")):  # written just before the first evaluation
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    t0 = time.time()
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()  # a stop that did not act: never leave the process behind
    assert time.time() - t0 < 15 and proc.returncode == 130, err[-2000:]
    assert "stopped by SIGTERM after epoch 0" in err and "Traceback" not in err


# --------------------------------------------------------------------------- sweep axes
def test_an_init_the_ensemble_would_ignore_is_refused():
    cfg = compose_config("experiment=paper/e1_smoke")
    with pytest.raises(ConfigError, match=r"init=random would be ignored: trainer.ensemble.inits="
                                          r"\[kglm,naive,random\]"):
        check_sweep_axes(cfg, ["experiment=paper/e1_smoke", "init=random"])
    check_sweep_axes(cfg, ["experiment=paper/e1_smoke"])
    one_init = compose_config("experiment=paper/e1_smoke", "trainer.ensemble.inits=[]", "init=random")
    check_sweep_axes(one_init, ["init=random", "trainer.ensemble.inits=[]"])


@pytest.mark.slow
def test_sweeping_init_over_an_ensemble_preset_stops_with_the_fix_and_status_shows_it(tmp_path):
    got = deqexp("train", "-m", "experiment=paper/e1_smoke", "init=kglm,random", "logger=csv",
                 f"paths.output={tmp_path}", cwd=tmp_path)
    assert got.returncode == 2 and "init=kglm would be ignored" in got.stderr
    assert "add trainer.ensemble.inits=[]" in got.stderr and not list(tmp_path.rglob("metrics.csv"))
    found, _, _ = sweep_status(tmp_path / "multirun/paper/e1/smoke")
    assert [s.state for s in found] == ["failed", "missing"]
    assert found[0].detail.startswith("init=kglm would be ignored")
    for init in ("kglm", "random"):  # the first fix: one init per job, as swept
        cfg = compose_config("experiment=paper/e1_smoke", f"init={init}", "trainer.ensemble.inits=[]")
        assert {m.spec.name for m in members_from_config(cfg)} == {init}


# --------------------------------------------------------------------------- deqexp status
def _sweep_of_every_state(root):
    """A sweep folder over trainer.seed=0..5 with one job in each state."""
    sweep = root / "multirun" / "demo"
    sweep.mkdir(parents=True)
    given = {"task": ["name=demo", "trainer.seed=0,1,2,3,4,5"],
             "hydra": ["hydra.mode=MULTIRUN", "hydra.launcher.partition=cpu"]}
    OmegaConf.save({"hydra": {"overrides": given}}, sweep / "multirun.yaml")
    fps = job_fingerprints([["name=demo", f"trainer.seed={seed}"] for seed in range(6)])
    folder = lambda seed: RunFolder(sweep / f"trainer.seed={seed}", fps[seed])  # noqa: E731
    members = lambda *states: {"members": [{"status": s, "epochs_run": 9} for s in states]}  # noqa: E731
    folder(0).finish(members("completed", "diverged"))
    folder(1).finish(members("diverged", "diverged"))
    folder(2).failed("ConfigError: dataset.n_train=-1 is not valid")
    alive = torch.ones(1, dtype=torch.bool)
    state = LoopState(7, alive, [[1.0]], [0], torch.ones(1, dtype=torch.float64), {})
    atomic_save({"fingerprint": fps[3], "state": state}, folder(3).path / CHECKPOINT)
    folder(4)  # a folder, nothing in it yet
    running = folder(5)
    (running.path / "metrics.csv").write_text("member,seed,init,scale,epoch\n0,5,kglm,,4\n")
    running.acquire()
    return sweep, running


def test_status_names_every_state_and_the_command_that_continues(tmp_path, capsys):
    sweep, running = _sweep_of_every_state(tmp_path)
    try:
        found, others, _ = sweep_status(sweep)
        got = [(s.state, s.epoch) for s in found]
        assert got == [("complete", 9), ("diverged", 9), ("failed", None), ("interrupted", 7),
                       ("interrupted", None), ("running", 4)]
        assert found[0].detail == "1 of 2 members diverged" and "n_train=-1" in found[2].detail
        code = status_main([str(sweep)])
    finally:
        running.release()
    out = capsys.readouterr().out
    assert code == 1
    assert "sweep: name=demo" in out and re.search(r"interrupted\s+7\s+trainer.seed=3", out)
    assert "1 complete, 1 diverged, 1 running, 1 failed, 2 interrupted of 6 jobs" in out
    continuing = "deqexp train -m name=demo trainer.seed=0,1,2,3,4,5 hydra.launcher.partition=cpu"
    # while a job runs, the same command would start it twice: no command yet
    assert continuing not in out and "1 job(s) still running or queued: once none is" in out
    status_main([str(sweep)])  # the running job's process has ended (its lock released)
    assert continuing in capsys.readouterr().out


def test_status_writes_booleans_as_the_command_line_does(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    sweep.mkdir()  # Hydra's sweeper renders the jobs' booleans as Python's True/False
    task = ["logger.progress=false", "trainer.eval_train=true,false"]
    OmegaConf.save({"hydra": {"overrides": {"task": task}}}, sweep / "multirun.yaml")
    status_main([str(sweep)])
    out = capsys.readouterr().out
    assert "sweep: logger.progress=false" in out and "trainer.eval_train=true" in out
    assert "False" not in out and "True" not in out


def test_status_asks_slurm_which_jobs_are_queued_running_or_lost(tmp_path, capsys, monkeypatch):
    import pickle

    from submitit.core.utils import DelayedSubmission

    from deqexp.sweep import scheduler

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    task = ["name=demo", "trainer.seed=0,1,2,3"]
    OmegaConf.save({"hydra": {"overrides": {"task": task, "hydra": []},
                              "launcher": {"_target_": "hydra_plugins.deqexp_launcher.SlurmLauncher"}}},
                   sweep / "multirun.yaml")
    fp = job_fingerprints([["name=demo", "trainer.seed=0"]])[0]
    RunFolder(sweep / "trainer.seed=0", fp).finish({"members": [{"status": "completed", "epochs_run": 3}]})
    for array, seeds in (("20", (1, 2, 3)), ("21", (1, 2, 3))):  # submitted twice: the later counts
        for task_id, seed in enumerate(seeds):
            job = sweep / ".submitit" / f"{array}_{task_id}"
            job.mkdir(parents=True)
            pickled = DelayedSubmission(print, ["name=demo", f"trainer.seed={seed}"])
            (job / f"{array}_{task_id}_submitted.pkl").write_bytes(pickle.dumps(pickled))
    asked = []

    def slurm(cmd):
        asked.append(cmd[0])
        if cmd[0] == "squeue":
            return "21_0|PENDING|ReqNodeNotAvail, UnavailableNodes:vm\n21_1|RUNNING|None\n"
        return "21_2|CANCELLED by 0\n"

    monkeypatch.setattr(scheduler, "_run", slurm)
    found, _, _ = sweep_status(sweep)
    assert [s.state for s in found] == ["complete", "queued", "running", "lost"]
    assert found[1].detail == ("SLURM 21_0 pending: ReqNodeNotAvail, UnavailableNodes:vm (not a busy "
                               "cluster: e.g. a drained or down node)")
    assert found[3].detail == "SLURM 21_2 ended CANCELLED before the run started"
    assert asked == ["squeue", "sacct"]
    status_main([str(sweep)])
    out = capsys.readouterr().out
    assert "2 job(s) still running or queued" in out and "deqexp train -m" not in out


def test_status_expands_the_presets_own_sweep_as_hydra_does(tmp_path):
    # `deqexp train -m experiment=paper/e2_quick trainer.epochs=2`: the seeds come from the
    # preset's hydra.sweeper.params, not from the command line
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    saved = {"hydra": {"overrides": {"task": ["experiment=paper/e2_quick", "trainer.epochs=2"]},
                       "sweeper": {"params": {"trainer.seed": "range(0,3)"}}}}
    OmegaConf.save(saved, sweep / "multirun.yaml")
    found, _, _ = sweep_status(sweep)
    assert [s.overrides for s in found] == [
        ["trainer.seed=0", "experiment=paper/e2_quick", "trainer.epochs=2"],
        ["trainer.seed=1", "experiment=paper/e2_quick", "trainer.epochs=2"],
        ["trainer.seed=2", "experiment=paper/e2_quick", "trainer.epochs=2"]]


def test_status_counts_missing_jobs_and_refuses_a_folder_that_is_no_sweep(tmp_path, capsys):
    sweep, running = _sweep_of_every_state(tmp_path)
    running.release()
    for seed in (2, 3, 4, 5):
        for p in (sweep / f"trainer.seed={seed}").iterdir():
            p.unlink()
        (sweep / f"trainer.seed={seed}").rmdir()
    found, _, _ = sweep_status(sweep)
    assert [s.state for s in found] == ["complete", "diverged", "missing", "missing", "missing", "missing"]
    assert status_main([str(sweep)]) == 1
    capsys.readouterr()
    assert status_main([str(tmp_path)]) == 2
    assert "is not a sweep folder (it has no multirun.yaml)" in capsys.readouterr().err  # stderr
    assert status_main([str(tmp_path / "nowhere")]) == 2
    assert f"{tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err


def test_jobs_that_did_not_complete_are_listed_with_the_command_that_continues(tmp_path, capsys):
    from types import SimpleNamespace

    from hydra.core.utils import JobReturn, JobStatus

    def ret(status, value):
        r = JobReturn()
        r.status, r._return_value = status, value
        return r

    class Job:
        def __init__(self, job_id, outcome, state="COMPLETED"):
            self.job_id, self.outcome, self.state = job_id, outcome, state
            self.paths = SimpleNamespace(stderr=tmp_path / f"{job_id}.err")

        def results(self):
            if isinstance(self.outcome, Exception):
                raise self.outcome
            return [self.outcome]

    (tmp_path / "9_2.err").write_text("srun: noise\ndeqexp train: error: dataset.n_train=-1 is not valid\n")
    jobs = [Job("9_0", ret(JobStatus.COMPLETED, {})),
            Job("9_1", ret(JobStatus.FAILED, RuntimeError("Job not requeued: timed-out too many times"))),
            Job("9_2", RuntimeError("no output"), state="FAILED")]
    overrides = [["trainer.seed=0"], ["trainer.seed=1"], ["trainer.seed=2"]]
    given = {"task": ["trainer.seed=0,1,2"], "hydra": ["hydra.mode=MULTIRUN"]}
    launcher = SimpleNamespace(config=OmegaConf.create({"hydra": {"overrides": given}}))
    assert cluster.SlurmLauncher._collect(launcher, jobs[:1], overrides[:1], tmp_path)[0].status \
        == JobStatus.COMPLETED
    with pytest.raises(SystemExit) as exit_:
        cluster.SlurmLauncher._collect(launcher, jobs, overrides, tmp_path)
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and "2 of 3 job(s) did not complete" in err
    assert ("trainer.seed=1: SLURM job 9_1 FAILED: RuntimeError: Job not requeued: timed-out too many times"
            in err)
    assert "trainer.seed=2: SLURM job 9_2 FAILED: deqexp train: error: dataset.n_train=-1 is not valid" in err
    assert err.rstrip().endswith("continue: deqexp train -m trainer.seed=0,1,2")


def test_the_first_stop_signal_wins_and_handlers_are_restored():
    before = {s: signal.getsignal(s) for s in StopSignals.SIGNALS}
    stop = StopSignals()
    with pytest.raises(StopRequested) as got, stop:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGUSR2)
        stop.check(1)
    assert got.value.signum == signal.SIGTERM  # the first one counts (srun and slurmd)
    assert {s: signal.getsignal(s) for s in StopSignals.SIGNALS} == before
