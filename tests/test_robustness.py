"""A run is either right or loudly wrong (issue 9): one test group per item of the issue."""
import gzip
import json
import math
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from deqexp.data import Data, DataError, read_cifar10, read_idx
from deqexp.deq import operators
from deqexp.deq.solvers import forward_iteration
from deqexp.run.build import check_data, kernel_of
from deqexp.run.folder import FolderBusy, RunFolder
from deqexp.run.runner import job_threads, train_job
from deqexp.run.schemas import ConfigError
from deqexp.run.sinks import Progress, WandbError, WandbLog
from deqexp.run.validation import validate
from deqexp.theory.kernels import Linear
from tests.cli import deqexp
from tests.compose import compose_config

SMALL = ["dataset.n_train=24", "dataset.n_test=8", "logger=csv", "logger.progress=false"]
FORWARD = ["solver=forward"]  # blow-ups through forward iteration, the default before 0.2


def _train(tmp_path, *overrides, length=20, epochs=3):
    sized = [f"dataset.length={length}"] if length else []
    cfg = compose_config(*SMALL, *sized, f"trainer.epochs={epochs}", *overrides)
    summary = train_job(cfg, RunFolder(tmp_path, "x"))
    return summary, pd.read_csv(tmp_path / "metrics.csv")


# 1. divergence is a result ---------------------------------------------------------------
def test_norms_of_a_dead_member_are_nan_and_the_others_exact():
    w = torch.randn(3, 5, 5)
    w[1, 2, 2] = float("nan")
    got = operators.dense_norm(w)
    assert math.isnan(got[1]) and torch.allclose(got[[0, 2]], torch.linalg.matrix_norm(w[[0, 2]], 2))
    f = torch.randn(2, 2, 2, 3, 3)
    f[0, 0, 0, 1, 1] = float("inf")
    for method in ("exact", "dft", "bound"):
        norms = operators.conv_norm(f, 6, 6, "zeros", method)
        assert math.isnan(norms[0]) and math.isfinite(norms[1]), method


@pytest.mark.parametrize("overrides", [["init=random", "init.scale=1000"],
                                       ["init=kglm", "init.scale=1000"]])
def test_blow_ups_are_recorded_not_raised(tmp_path, overrides):
    summary, df = _train(tmp_path, *FORWARD, *overrides, length=100)
    assert summary["members"][0]["status"] == "diverged"
    assert (df.status == "diverged").any()
    assert (tmp_path / "COMPLETE").exists()
    json.loads((tmp_path / "summary.json").read_text(), parse_constant=pytest.fail)  # strict JSON


def test_a_dead_member_does_not_stop_a_healthy_one(tmp_path):
    summary, df = _train(tmp_path, *FORWARD, "init=random", "trainer.ensemble.scales=[1,1000]", length=100)
    status = {m["scale"]: m["status"] for m in summary["members"]}
    assert status == {1.0: "completed", 1000.0: "diverged"}
    healthy = df[(df.member == 0)]
    assert healthy.epoch.max() == 3 and np.isfinite(healthy.test_loss).all()


# 2. a typo never runs the wrong job ------------------------------------------------------
@pytest.mark.parametrize("args, says", [
    (["experiment=paper/e9"], "choose one of"),
    (["experiment=paper/e2_qiuck"], "paper/e2_quick"),
    (["+trainer.foo=1"], "unknown key 'trainer.foo'"),
    (["+trainer.epoch=1"], "did you mean 'epochs'"),
    (["model.width=0"], "model.width=0"),
])
def test_typos_fail_with_the_key_named(tmp_path, args, says):
    p = deqexp("train", *args, f"paths.output={tmp_path}", "logger=none")
    assert p.returncode == 2, p.stderr[-2000:]
    assert says in p.stderr and "Traceback" not in p.stderr
    assert not list(tmp_path.rglob("COMPLETE")) and not list(tmp_path.rglob("metrics.csv"))


# 3. no result is ever deleted or mixed ---------------------------------------------------
def test_a_folder_refuses_another_configurations_results(tmp_path):
    first = RunFolder(tmp_path, "aaaa")
    first.start()
    (tmp_path / "metrics.csv").write_text("epoch\n0\n")
    first.finish({"members": []})
    other = RunFolder(tmp_path, "bbbb")
    with pytest.raises(FolderBusy, match="a different configuration.s"):
        other.start()
    assert (tmp_path / "metrics.csv").exists() and first.is_complete()
    other.start(force=True)  # an explicit force replaces them
    assert not (tmp_path / "metrics.csv").exists()


def test_complete_marker_without_summary_means_rerun(tmp_path):
    folder = RunFolder(tmp_path, "aaaa")
    folder.start()
    folder.finish({"members": []})
    assert folder.is_complete()
    (tmp_path / "summary.json").unlink()
    assert not folder.is_complete()


def test_the_lock_refuses_a_second_run_and_dies_with_its_process(tmp_path):
    first = RunFolder(tmp_path, "aaaa")
    first.acquire()
    with pytest.raises(FolderBusy, match=f"pid {os.getpid()}"):
        RunFolder(tmp_path, "aaaa").acquire()
    first.release()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from deqexp.run.folder import RunFolder; "
        f"f = RunFolder({str(tmp_path)!r}, 'aaaa'); f.acquire(); "
        "print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(FolderBusy):
        RunFolder(tmp_path, "aaaa").acquire()
    holder.kill()  # kill -9: no clean-up code runs
    holder.wait()
    RunFolder(tmp_path, "aaaa").acquire()  # not stale


# 4. clear errors instead of tracebacks ---------------------------------------------------
def _cifar_dir(tmp_path, content: bytes):
    root = tmp_path / "cifar"
    root.mkdir()
    (root / "data_batch_1").write_bytes(content)
    (root / "test_batch").write_bytes(content)
    return root


@pytest.mark.parametrize("content", [
    np.random.default_rng(0).bytes(300),  # seeded: pytest-xdist's workers collect the same test
    pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)})[:-20],
    pickle.dumps({b"labels": [1, 2]}),
    pickle.dumps({b"data": np.zeros((2, 100), np.uint8)}),
], ids=["random bytes", "cut short", "no data", "wrong row size"])
def test_corrupt_cifar_batches_name_the_file(tmp_path, content):
    with pytest.raises(DataError, match="data_batch_1"):
        read_cifar10(_cifar_dir(tmp_path, content))


def _idx(n, rows=4):
    return bytes([0, 0, 8, 3]) + n.to_bytes(4, "big") + rows.to_bytes(4, "big") * 2


@pytest.mark.parametrize("name, content", [
    ("empty-idx3-ubyte", b""),
    ("short-idx3-ubyte", _idx(100) + bytes(16 * 10)),
    ("head-idx3-ubyte", bytes([0, 0, 8, 3, 0])),
    ("fake-idx3-ubyte.gz", _idx(1) + bytes(16)),
])
def test_bad_idx_files_name_the_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=name):
        read_idx(path)
    good = tmp_path / "good-idx3-ubyte.gz"
    good.write_bytes(gzip.compress(_idx(2) + bytes(range(32))))
    assert read_idx(good).shape == (2, 4, 4)


def test_bad_tiffs_name_the_file(tmp_path):
    import tifffile

    from deqexp.data import hyperspectral

    root = tmp_path / "hs"
    root.mkdir()
    tifffile.imwrite(root / "a.tif", np.random.rand(4, 40, 40).astype(np.float32))
    (root / "b.tif").write_bytes(b"not a tiff at all" * 10)
    with pytest.raises(DataError, match="b.tif"):
        hyperspectral(0, root=str(root), channels=4, patch=32)
    tifffile.imwrite(root / "b.tif", np.random.rand(4, 16, 16).astype(np.float32))
    with pytest.raises(DataError, match="b.tif.*smaller than dataset.patch"):
        hyperspectral(0, root=str(root), channels=4, patch=32)
    bad = np.random.rand(4, 40, 40).astype(np.float32)
    bad[0, 3, 3] = np.nan
    tifffile.imwrite(root / "b.tif", bad)
    with pytest.raises(DataError, match="b.tif contains NaN"):
        hyperspectral(0, root=str(root), channels=4, patch=32)


def test_non_finite_or_empty_data_is_refused_with_the_split_named():
    ok = torch.zeros(2, 3)
    bad = ok.clone()
    bad[1, 1] = float("inf")
    with pytest.raises(DataError, match="seed 7.*test_target contains NaN or inf"):
        check_data("smooth", 7, Data(ok, ok, ok, bad))
    with pytest.raises(DataError, match="train split is empty"):
        check_data("smooth", 7, Data(ok[:0], ok[:0], ok, ok))


@pytest.mark.parametrize("overrides, says", [
    (["kernel.name=se*perodic"], "unknown kernel 'perodic'"),
    (["family=binomial", "family.trials=0"], "trials >= 1"),
    (["model=conv", "model.kernel_size=4"], "model.kernel_size=4"),
    (["init=naive", "init.naive_lengthscale=0"], "init.naive_lengthscale"),
    (["kernel=periodic", "kernel.lengthscale=0.3"], "does not use lengthscale"),
    (["init.lam=3", "trainer.ensemble.scales=[0.5,1.0]"], "would do nothing"),
    (["solver.forward.damping=0.5", "solver.forward.name=anderson"], "damping"),
    (["solver.backward.jacobian_at=middle"], "jacobian_at"),
])
def test_invalid_settings_are_config_errors(overrides, says):
    with pytest.raises(ConfigError, match=says.replace("*", r"\*").replace("(", r"\(")):
        validate(compose_config(*overrides))


@pytest.mark.parametrize("overrides, says", [
    (["dataset=copy_memory", "family=bernoulli", "kernel=same_direction", "dataset.n_train=0"],
     "train split is empty"),
    (["dataset.noise_variance=-1"], "noise_variance >= 0"),
])
def test_invalid_data_settings_are_data_errors(tmp_path, overrides, says):
    with pytest.raises(DataError, match=says):
        _train(tmp_path, *overrides, length=None)
    assert not (tmp_path / "metrics.csv").exists()


def test_unwritable_output_folder_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    p = deqexp("train", f"paths.output={blocker}/out", "logger=none")
    assert p.returncode == 2 and "paths.output" in p.stderr and "Traceback" not in p.stderr


def test_online_wandb_without_a_key_says_how_to_run_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = compose_config("logger.wandb.mode=online").logger.wandb
    with pytest.raises(WandbError, match="logger.wandb.mode=offline"):
        WandbLog(tmp_path, cfg, {}, "x", 1)


# 5. no setting silently ignored or contradicted ------------------------------------------
def test_kernel_defaults_have_one_source():
    assert kernel_of(compose_config("kernel=linear")).offset == Linear().offset
    cfg = compose_config("experiment=paper/e2_quick")
    assert "norm_method" not in cfg.init and cfg.model.norm_method == "dft"


def test_solvers_reject_misspelt_options():
    with pytest.raises(TypeError):
        forward_iteration(lambda z: z, torch.zeros(1, 1, 2), tol=1e-3, max_iter=3, dampng=0.5)


# 6. backward solves are as good as forward ones ------------------------------------------
def test_solver_choice_sets_both_solves():
    cfg = compose_config("solver=anderson")
    assert cfg.solver.forward.name == cfg.solver.backward.name == "anderson"


def test_backward_statistics_are_logged(tmp_path):
    _, df = _train(tmp_path, "solver=anderson", "solver.backward.tol=1e-6")
    trained = df[df.epoch > 0]
    assert (trained.bwd_converged_frac == 1).all() and (trained.bwd_residual <= 1e-6).all()


# 7. operator norms as accurate as they claim ---------------------------------------------
def _dense_conv_matrix(filt, h, w):
    c_in = filt.shape[1]
    eye = torch.eye(c_in * h * w, dtype=filt.dtype).reshape(-1, c_in, h, w)
    return operators.conv(eye, filt).reshape(c_in * h * w, -1).T


def test_zero_padded_norm_is_accurate_to_its_tolerance():
    gen = torch.Generator().manual_seed(3)
    filt = torch.randn(3, 3, 3, 3, generator=gen, dtype=torch.float64)
    exact = float(torch.linalg.matrix_norm(_dense_conv_matrix(filt, 9, 13), 2))
    got, _ = operators.conv_norm_zero(filt, 9, 13, tol=1e-10, generator=gen)
    assert abs(float(got) - exact) <= 1e-8 * exact


def test_even_filters_are_rejected():
    with pytest.raises(ValueError, match="odd"):
        operators.conv_norm(torch.randn(1, 1, 4, 4), 8, 8)
    with pytest.raises(ValueError, match="odd"):
        operators.conv(torch.randn(1, 1, 8, 8), torch.randn(1, 1, 4, 4))


# 9. interrupts and terminals -------------------------------------------------------------
def test_progress_ends_at_n_of_n(monkeypatch, capsys):
    monkeypatch.setattr("deqexp.run.sinks._usable_terminal", lambda: True)
    bar = Progress(3, True, "job")
    for epoch in range(4):
        bar.update(epoch, 0.5, 2.0)
    bar.close()
    err = capsys.readouterr().err
    assert " 3/3 " in err and not re.search(r"[^\d.]4/3", err)
    assert not re.search(r"\d+epoch \[", err)  # tqdm's overshoot form, e.g. 4epoch [00:01


def test_plain_progress_lines_carry_the_job_name(capsys):
    bar = Progress(2, True, "init=naive")  # pytest's stderr is not a terminal
    for epoch in range(3):
        bar.update(epoch, 0.5, 2.0)
    out = capsys.readouterr().out
    assert "[init=naive] epoch 2/2" in out


# 10. threads ------------------------------------------------------------------------------
def test_parallel_jobs_share_the_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # set under pytest-xdist (conftest)
    cfg = compose_config()
    cores = len(os.sched_getaffinity(0))
    assert job_threads(cfg, 1) == cores
    assert job_threads(cfg, cores) == 1 and job_threads(cfg, 2 * cores) == 1
    assert job_threads(compose_config("trainer.threads=3"), 8) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "5")  # the user's (or a test runner's) cap
    assert job_threads(cfg, 1) == 5 and job_threads(compose_config("trainer.threads=3"), 1) == 3


def test_large_dense_norms_by_warm_lanczos_match_the_svd():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(3, 300, 300, generator=gen, dtype=torch.float64) / 20
    w[1, 0, 0] = float("nan")
    starts = {}
    first = operators.dense_norms(w, starts)
    exact = torch.linalg.matrix_norm(w[[0, 2]], 2)
    assert math.isnan(first[1]) and torch.allclose(first[[0, 2]], exact, rtol=1e-8)
    moved = w * 1.01  # the next epoch starts from the last vectors
    assert torch.allclose(operators.dense_norms(moved, starts)[[0, 2]], 1.01 * exact, rtol=1e-8)


def test_eval_every_logs_fewer_epochs_and_changes_nothing_else(tmp_path):
    every, all_epochs = tmp_path / "every", tmp_path / "all"
    every.mkdir()
    all_epochs.mkdir()
    s2, sparse = _train(every, "trainer.eval_every=2", "trainer.dtype=float64", epochs=5)
    s1, dense = _train(all_epochs, "trainer.dtype=float64", epochs=5)
    assert list(sparse.epoch) == [0, 2, 4, 5]
    same = dense.set_index("epoch").loc[[0, 2, 4, 5], ["train_loss", "test_loss", "op_norm_W"]]
    assert np.allclose(sparse.set_index("epoch")[["train_loss", "test_loss", "op_norm_W"]], same, rtol=1e-12,
                       equal_nan=True)  # train_loss: first and last epochs only
    assert s2["members"][0]["best_epoch"] in (0, 2, 4, 5) and s2["members"][0]["epochs_run"] == 5
