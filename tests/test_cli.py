"""`deqexp train` end to end in a subprocess, on tiny configs."""
import json
import math

import numpy as np
import pytest

from deqexp.run.sinks import METRIC_COLUMNS
from tests.cli import deqexp, metrics, run_dir_args
from tests.test_data import write_cifar, write_hyperspectral, write_mnist
from tests.wandb_file import history

pytestmark = pytest.mark.slow
TINY = ["logger=csv", "trainer.epochs=2"]
SMALL_SEQ = ["dataset.n_train=64", "dataset.n_test=16"]
SMALL_IMG = ["dataset.n_train=8", "dataset.n_test=4", "trainer.batch_size=4", "model=conv",
             "family=relu", "solver.forward.max_iter=10", "solver.backward.max_iter=10"]


def _check_run(run_dir, epochs=2, members=1):
    df = metrics(run_dir)
    assert list(df.columns) == METRIC_COLUMNS
    assert sorted(df.epoch.unique()) == list(range(epochs + 1))
    assert len(df) == members * (epochs + 1)
    bwd = ["bwd_iters_mean", "bwd_residual", "bwd_converged_frac"]
    assert df.loc[df.epoch == 0, bwd].isna().all().all()  # epoch 0 precedes training
    num = df.drop(columns=[*bwd, "init", "status", "scale", "train_loss"]).loc[df.epoch > 0]
    assert num.map(lambda v: math.isfinite(v)).all().all()
    # the training split is evaluated at the first and the last epoch (trainer.eval_train=false)
    ends = df.epoch.isin([0, epochs])
    assert np.isfinite(df.train_loss[ends]).all() and df.train_loss[~ends].isna().all()
    assert (run_dir / "COMPLETE").exists() and (run_dir / "config.yaml").exists()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["config"]["trainer"]["epochs"] == epochs
    return df, summary


@pytest.mark.parametrize("dataset,extra", [
    ("smooth", SMALL_SEQ),
    ("copy_memory", ["dataset.n_train=16", "dataset.n_test=4", "family=bernoulli", "kernel=se"]),
    ("images", SMALL_IMG),
    ("images", SMALL_IMG + ["dataset.corruption=blur"]),
    ("binary_digits", ["dataset.n_train=6", "dataset.n_test=3", "dataset.size=12",
                       "family=bernoulli", "kernel=se"]),
])
def test_embedded_datasets_train(tmp_path, dataset, extra):
    run = tmp_path / "run"
    p = deqexp("train", f"dataset={dataset}", *TINY, *extra, *run_dir_args(run))
    assert p.returncode == 0, p.stderr
    assert "final test loss" in p.stdout
    _check_run(run)


def test_local_datasets_train(tmp_path):
    cifar = write_cifar(tmp_path / "c")
    mnist = write_mnist(tmp_path / "m", size=12)
    hyper = write_hyperspectral(tmp_path / "h", channels=4)
    for name, extra in (("cifar10", [f"dataset.root={cifar}", *SMALL_IMG]),
                        ("hyperspectral", [f"dataset.root={hyper}", "dataset.channels=2",
                                           *SMALL_IMG]),
                        ("mnist", [f"dataset.root={mnist}", "dataset.n_train=4", "dataset.n_test=2",
                                   "family=bernoulli", "kernel=se"])):
        run = tmp_path / name
        p = deqexp("train", f"dataset={name}", *TINY, *extra, *run_dir_args(run))
        assert p.returncode == 0, (name, p.stderr)
        _check_run(run)


@pytest.mark.parametrize("override,message", [
    ("family=student", "family"),
    ("trainer.nonsense=1", "nonsense"),
    ("init.lam=-1", "init.lam"),
    ("solver.forward.tol=0", "solver.forward.tol"),
    ("solver.forward.name=secant", "solver.forward.name"),
    ("dataset=cifar10", "dataset.root"),
    ("family=bernoulli", "bernoulli"),
    ("trainer.epochs=abc", "epochs"),
])
def test_bad_overrides_fail_cleanly(tmp_path, override, message):
    run = tmp_path / "run"
    p = deqexp("train", *TINY, *SMALL_SEQ, override, *run_dir_args(run))
    assert p.returncode != 0
    assert message in p.stderr + p.stdout
    assert "Traceback" not in p.stderr
    assert not (run / "COMPLETE").exists()


def test_rerun_skips_and_force_reruns(tmp_path):
    run = tmp_path / "run"
    args = ["train", *TINY, *SMALL_SEQ, *run_dir_args(run)]
    assert deqexp(*args).returncode == 0
    again = deqexp(*args)
    assert again.returncode == 0 and "already complete" in again.stdout
    forced = deqexp(*args, "force=true")
    assert forced.returncode == 0 and "already complete" not in forced.stdout
    (run / "COMPLETE").unlink()  # as if interrupted: no marker, so it runs again from the start
    again = deqexp(*args)
    assert again.returncode == 0 and "already complete" not in again.stdout
    assert (run / "COMPLETE").exists() and len(metrics(run)) == 3


def test_divergence_is_recorded_and_sweep_goes_on(tmp_path):
    sweep = tmp_path / "sweep"
    p = deqexp("train", "-m", *TINY, *SMALL_SEQ, "family=gaussian", "init=random",
               "init.scale=20000,0.5", f"hydra.sweep.dir={sweep}")
    assert p.returncode == 0, p.stderr
    runs = sorted(d for d in sweep.iterdir() if d.is_dir())
    assert len(runs) == 2 and all((d / "COMPLETE").exists() for d in runs)
    status = {"20000" if "init.scale=20000" in d.name else "0.5":
              json.loads((d / "summary.json").read_text())["members"][0]["status"] for d in runs}
    assert status == {"20000": "diverged", "0.5": "completed"}
    df = metrics(next(d for d in runs if "20000" in d.name))
    assert df.status.iloc[-1] == "diverged"


def test_joblib_multirun_and_resume(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["train", "-m", *TINY, *SMALL_SEQ, "trainer.seed=0,1", "launcher=joblib",
            f"hydra.sweep.dir={sweep}"]
    p = deqexp(*args)
    assert p.returncode == 0, p.stderr
    assert "Joblib" in p.stdout + p.stderr
    runs = sorted(d for d in sweep.iterdir() if d.is_dir())
    assert len(runs) == 2 and all("trainer.seed=" in d.name for d in runs)
    for r in runs:
        _check_run(r)
    losses = [metrics(r).test_loss.iloc[-1] for r in runs]
    assert losses[0] != losses[1]  # different seeds, different data
    again = deqexp(*args)
    assert again.returncode == 0
    assert (again.stdout + again.stderr).count("already complete") == 2


def test_wandb_offline_run_holds_the_csv_numbers(tmp_path):
    run = tmp_path / "run"
    # an explicit logger.wandb.mode beats $WANDB_MODE (which would switch W&B off here)
    p = deqexp("train", "trainer.epochs=3", *SMALL_SEQ, *run_dir_args(run),
               "logger.wandb.mode=offline", env={"WANDB_MODE": "disabled"}, timeout=600)
    assert p.returncode == 0, p.stderr
    files = list((run / "wandb").glob("offline-run-*/*.wandb"))
    assert len(files) == 1
    rows = history(files[0])
    df = metrics(run)
    assert len(rows) == 4
    assert float(rows[-1]["test_loss"]) == pytest.approx(df.test_loss.iloc[-1], rel=1e-12)
    assert float(rows[0]["train_loss"]) == pytest.approx(df.train_loss.iloc[0], rel=1e-12)
    assert float(rows[-1]["jac_norm"]) == pytest.approx(df.jac_norm.iloc[-1], rel=1e-12)


def test_help_lists_groups():
    p = deqexp("train", "--help")
    assert p.returncode == 0
    for word in ("dataset", "family", "kernel", "solver", "init", "launcher", "experiment"):
        assert word in p.stdout
    top = deqexp("--help")
    assert "train" in top.stdout and "verify" in top.stdout and "report" in top.stdout


@pytest.mark.slow
def test_a_closed_stdout_pipe_ends_the_output_not_the_run(tmp_path):
    import subprocess
    import sys

    args = [sys.executable, "-m", "deqexp.cli", "train", "trainer.epochs=40", "dataset.n_train=20",
            "dataset.n_test=5", "dataset.length=10", "trainer.jac_samples=0", "logger=csv",
            f"paths.output={tmp_path}"]  # a progress line every 4 epochs
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.readline()  # `| head -1`
    proc.stdout.close()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "BrokenPipe" not in err, err[-2000:]
    assert list(tmp_path.rglob("COMPLETE"))


@pytest.mark.slow
def test_ctrl_c_works_when_sigint_was_inherited_as_ignored(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    args = [sys.executable, "-m", "deqexp.cli", "train", "trainer.epochs=100000", "dataset.n_train=20",
            "dataset.n_test=5", "logger=csv", f"paths.output={tmp_path}"]
    ignore = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731  (nohup ... &)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=ignore)
    deadline = time.time() + 120
    while not any(len(p.read_text().splitlines()) > 2 for p in tmp_path.rglob("metrics.csv")):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err, err[-2000:]
