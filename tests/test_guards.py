"""The guards the runner relies on, each tested where the runner uses it (in-process, seconds):
run identity, the folder lock, the completion marker, resume's cut of metrics.csv, per-seed
batch order, W&B's copy of the metrics, joblib's threads, damping, Lanczos on clustered spectra."""
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from deqexp import cli
from deqexp.deq import operators
from deqexp.deq.solvers import forward_iteration
from deqexp.run.config import compose
from deqexp.run.folder import MetricsLost, RunFolder
from deqexp.run.identity import fingerprint
from deqexp.run.identity import folder_name as _dirname
from deqexp.run.runner import _parallel_jobs, job_threads, train_job, usable_cores
from deqexp.run.schemas import ConfigError
from deqexp.run.validation import validate
from tests.compose import compose_config
from tests.helpers import train_until_interrupted

SMALL = ["dataset.n_train=32", "dataset.n_test=8", "dataset.length=20", "logger=csv",
         "logger.progress=false", "trainer.dtype=float64"]
NUMBERS = ["train_loss", "test_loss", "fwd_iters_mean", "fwd_residual", "op_norm_W", "jac_norm"]


def in_process(capsys, *args) -> tuple[int, str]:
    """``deqexp ARGS`` in this process: (exit code, stdout + stderr)."""
    try:
        cli.main(list(args))
        code = 0
    except SystemExit as stop:
        code = stop.code or 0
    out = capsys.readouterr()
    return code, out.out + out.err


# --------------------------------------------------------------------------- run identity
@pytest.mark.parametrize("key, a, b", [
    ("trainer.seed", 0, 1), ("trainer.epochs", 3, 4), ("optim.lr", 0.01, 0.02), ("init", "kglm", "random"),
    ("dataset.n_train", 10, 20), ("kernel.lengthscale", 1.0, 2.0), ("solver.forward.tol", 1e-4, 1e-5),
    ("trainer.batch_size", 0, 8), ("family", "tanh", "gaussian"), ("trainer.ensemble.seeds", 1, 2)])
def test_a_key_that_changes_results_changes_the_fingerprint_and_the_folder(key, a, b):
    fa, fb = (fingerprint(compose(f"{key}={v}")) for v in (a, b))
    assert fa != fb
    assert _dirname([f"{key}={a}"]) != _dirname([f"{key}={b}"])


@pytest.mark.parametrize("key, a, b", [
    ("trainer.threads", 1, 2), ("logger", "csv", "none"), ("paths.output", "a", "b"),
    ("trainer.checkpoint_every", 5, 10), ("trainer.device", "cpu", "auto"), ("name", "x", "y")])
def test_keys_that_do_not_change_results_leave_the_identity_alone(key, a, b):
    assert fingerprint(compose(f"{key}={a}")) == fingerprint(compose(f"{key}={b}"))
    assert _dirname([f"{key}={a}"]) == _dirname([f"{key}={b}"]) == "defaults"


def test_a_complete_marker_of_another_configuration_is_not_complete(tmp_path):
    RunFolder(tmp_path, "aaaa").finish({"members": []})
    assert RunFolder(tmp_path, "aaaa").is_complete()
    assert not RunFolder(tmp_path, "bbbb").is_complete()


def test_an_edited_preset_reruns_instead_of_reporting_the_old_result(tmp_path, capsys):
    run = [*SMALL, "trainer.epochs=1", f"hydra.run.dir={tmp_path / 'r'}"]
    assert in_process(capsys, "train", *run)[0] == 0
    # the same folder and overrides, another configuration (what editing a preset does)
    code, out = in_process(capsys, "train", *run, "optim.lr=0.5")
    assert "already complete" not in out
    assert code == 2 and "are a different configuration" in out and "force=true" in out


def test_the_hydra_task_takes_the_folder_lock(tmp_path, capsys):
    run = [*SMALL, "trainer.epochs=1", f"hydra.run.dir={tmp_path / 'r'}"]
    cfg = compose_config(*SMALL, "trainer.epochs=1")
    holder = RunFolder(tmp_path / "r", fingerprint(cfg))
    holder.acquire()
    try:
        code, out = in_process(capsys, "train", *run)
    finally:
        holder.release()
    assert code == 2 and "already in progress" in out
    assert not (tmp_path / "r" / "metrics.csv").exists()


# --------------------------------------------------------------------------- resume and seeds
def test_resume_cuts_the_rows_logged_after_the_checkpoint(tmp_path, monkeypatch):
    run = [*SMALL, "trainer.epochs=8", "trainer.checkpoint_every=4", "trainer.batch_size=8"]
    cfg = compose_config(*run)
    whole = RunFolder(tmp_path / "whole", fingerprint(cfg))
    train_job(cfg, whole)
    broken = RunFolder(tmp_path / "broken", fingerprint(cfg))
    train_until_interrupted(monkeypatch, cfg, broken, 7)
    assert pd.read_csv(broken.path / "metrics.csv").epoch.max() == 6  # rows 5, 6 past the checkpoint
    train_job(cfg, broken)
    got, want = pd.read_csv(broken.path / "metrics.csv"), pd.read_csv(whole.path / "metrics.csv")
    assert list(got.epoch) == list(range(9))
    assert np.allclose(got[NUMBERS], want[NUMBERS], rtol=1e-12, atol=1e-14, equal_nan=True)


@pytest.mark.parametrize("damage, eval_every, refused", [
    ("delete", 1, "is missing"), ("to epoch 2", 1, "ends at epoch 2"), ("header only", 1, "holds no epochs"),
    ("to epoch 2", 2, None),  # eval_every=2: epoch 2 is the last evaluated before the checkpoint at 3
])
def test_a_checkpoint_without_its_metrics_is_not_resumed_silently(tmp_path, monkeypatch, damage,
                                                                   eval_every, refused):
    cfg = compose_config(*SMALL, "trainer.epochs=6", "trainer.checkpoint_every=3", "trainer.batch_size=8",
                         f"trainer.eval_every={eval_every}")
    folder = RunFolder(tmp_path, fingerprint(cfg))
    train_until_interrupted(monkeypatch, cfg, folder, 4)  # checkpoint at epoch 3
    metrics = tmp_path / "metrics.csv"
    lines = metrics.read_text().splitlines()
    if damage == "delete":
        metrics.unlink()
    else:
        keep = 0 if damage == "header only" else sum(1 for ln in lines[1:] if int(ln.split(",")[4]) <= 2)
        metrics.write_text("\n".join(lines[:1 + keep]) + "\n")
    if refused is None:
        train_job(cfg, folder)
        assert list(pd.read_csv(metrics).epoch) == [0, 2, 4, 6]
        return
    with pytest.raises(MetricsLost, match=f"metrics.csv {refused} but the checkpoint beside it is at "
                                          "epoch 3.*force=true"):
        train_job(cfg, folder)
    assert not (tmp_path / "COMPLETE").exists()


def test_each_seed_of_an_ensemble_has_its_own_batch_order(tmp_path):
    run = [*SMALL, "trainer.epochs=2", "trainer.batch_size=16"]
    together = tmp_path / "together"
    cfg = compose_config(*run, "trainer.ensemble.seeds=2")
    train_job(cfg, RunFolder(together, fingerprint(cfg)))
    both = pd.read_csv(together / "metrics.csv")
    for seed in (0, 1):
        alone = tmp_path / f"seed{seed}"
        cfg = compose_config(*run, f"trainer.seed={seed}")
        train_job(cfg, RunFolder(alone, fingerprint(cfg)))
        want = pd.read_csv(alone / "metrics.csv")
        got = both[both.seed == seed]
        assert np.allclose(got[["train_loss", "test_loss"]], want[["train_loss", "test_loss"]],
                           rtol=1e-10, equal_nan=True), seed


# --------------------------------------------------------------------------- W&B
class _Recorder:
    def __init__(self, **kwargs):
        self.logged, self.summary, self.dir, self.kwargs = [], {}, ".", kwargs

    def log(self, metrics, step):
        self.logged.append((step, dict(metrics)))

    def finish(self, exit_code=0):
        self.exit_code = exit_code


def test_wandb_gets_the_csv_numbers_exactly(tmp_path, monkeypatch):
    import wandb

    runs = []
    monkeypatch.setattr(wandb, "init", lambda **kw: runs.append(_Recorder(**kw)) or runs[-1])
    cfg = compose_config(*SMALL, "logger=default", "logger.progress=false", "trainer.epochs=2",
                         "trainer.ensemble.seeds=2")
    train_job(cfg, RunFolder(tmp_path, fingerprint(cfg)))
    (rec,) = runs
    assert rec.exit_code == 0  # the run this job started is the one finished
    assert rec.kwargs["mode"] == "offline" and rec.kwargs["dir"] == str(tmp_path)
    csv = pd.read_csv(tmp_path / "metrics.csv")
    assert [step for step, _ in rec.logged] == [0, 1, 2]
    for step, metrics in rec.logged:
        for row in csv[csv.epoch == step].itertuples():
            for col in NUMBERS + ["converged_frac", "op_norm_U"]:
                got, want = metrics[f"member{row.member}/{col}"], getattr(row, col)
                assert got == want or (math.isnan(got) and math.isnan(want)), (step, col)


# --------------------------------------------------------------------------- threads
def test_joblibs_jobs_share_the_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # set under pytest-xdist (conftest)
    assert _parallel_jobs(OmegaConf.create({"launcher": {"n_jobs": 4}})) == 4
    assert _parallel_jobs(OmegaConf.create({"launcher": {"n_jobs": -1}})) == usable_cores()
    assert _parallel_jobs(OmegaConf.create({"launcher": {"partition": "cpu"}})) == 1
    cfg = compose("launcher=joblib", hydra=True)
    n_jobs = cfg.hydra.launcher.n_jobs
    assert cfg.trainer.threads == 0  # the launcher leaves threads to the cores / n_jobs rule
    assert job_threads(cfg, _parallel_jobs(cfg.hydra)) == max(1, usable_cores() // n_jobs)


@pytest.mark.parametrize("key, value, says", [
    ("trainer.checkpoint_every", -1, "trainer.checkpoint_every=-1 is not valid; it must be >= 0"),
    ("trainer.freeze_wu_epochs", -2, "trainer.freeze_wu_epochs=-2 is not valid; it must be >= 0"),
    ("dataset.n_train", -3, "dataset.n_train=-3 is not valid; it must be >= 0")])
def test_negative_counts_are_refused_with_the_value_given(key, value, says):
    with pytest.raises(ConfigError, match=says):
        validate(compose_config(f"{key}={value}"))


# --------------------------------------------------------------------------- solvers and norms
def test_damping_makes_an_undamped_divergence_converge():
    # f(z) = A z + c with A's spectrum in [-1.6, -1.4]: z <- f(z) diverges; z <- z + 0.5 (f(z) - z)
    # has iteration matrix (I + A) / 2, spectrum in [-0.3, -0.2], and converges to (I - A)^-1 c
    gen = torch.Generator().manual_seed(0)
    q = torch.linalg.qr(torch.randn(6, 6, generator=gen))[0]
    a = q @ torch.diag(torch.linspace(-1.6, -1.4, 6)) @ q.T
    c = torch.randn(1, 3, 6, generator=gen)  # (members, samples, units)
    f = lambda z: z @ a.T + c  # noqa: E731
    exact = torch.linalg.solve(torch.eye(6) - a, c[0].T).T
    damped = forward_iteration(f, torch.zeros(1, 3, 6), tol=1e-12, max_iter=200, damping=0.5)
    assert bool(damped.converged.all()) and torch.allclose(damped.z[0], exact, atol=1e-10)
    plain = forward_iteration(f, torch.zeros(1, 3, 6), tol=1e-12, max_iter=200)
    assert not bool(plain.converged.any())


def _clustered(n, top, gap, seed=0):
    """A symmetric PSD operator whose 5 largest eigenvalues lie within ``gap`` of ``top``."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.linalg.qr(torch.randn(n, n, generator=gen))[0]
    evals = torch.cat([top - gap * torch.arange(5.0), torch.rand(n - 5, generator=gen) * 0.9 * top])
    return q @ torch.diag(evals) @ q.T, top


@pytest.mark.parametrize("gap", [1e-4, 1e-7])
def test_lanczos_resolves_a_clustered_top_to_its_tolerance(gap):
    b, top = _clustered(400, 2.0, gap)
    x0 = torch.randn(400, generator=torch.Generator().manual_seed(1))
    theta, vec, ok = operators.lanczos_top(lambda v: b @ v, x0, tol=1e-8)
    assert bool(ok) and abs(float(theta) - top) <= 1e-8 * top
    assert torch.allclose(b @ vec, theta * vec, atol=1e-7)
    # the Ritz vector (next epoch's warm start) is a unit vector only if the basis stayed
    # orthonormal: full reorthogonalisation (the last two vectors alone drift by ~1e-10 here)
    assert abs(float(vec.norm()) - 1) < 1e-12


def test_large_dense_norms_on_a_clustered_spectrum_match_the_svd():
    gen = torch.Generator().manual_seed(2)
    n = operators.SVD_MAX + 44
    u, v = (torch.linalg.qr(torch.randn(n, n, generator=gen))[0] for _ in range(2))
    s = torch.cat([3.0 * (1 - 1e-6 * torch.arange(4.0)), torch.rand(n - 4, generator=gen)])
    w = (u * s) @ v.T
    got = operators.dense_norms(torch.stack([w, 0.5 * w]), starts={})
    assert torch.allclose(got, torch.tensor([3.0, 1.5]), rtol=1e-8, atol=0)


def test_zero_padded_conv_norm_on_a_nearly_flat_spectrum():
    # near-identity filters: every singular value of the convolution is close to 1
    gen = torch.Generator().manual_seed(3)
    f = 1e-3 * torch.randn(2, 2, 3, 3, generator=gen)
    f[0, 0, 1, 1] += 1.0
    f[1, 1, 1, 1] += 1.0
    h = w = 8
    basis = torch.eye(2 * h * w).reshape(-1, 2, h, w)
    dense = operators.conv(basis, f).reshape(2 * h * w, -1).T
    exact = torch.linalg.matrix_norm(dense, 2)
    got, _ = operators.conv_norm_zero(f, h, w, generator=torch.Generator().manual_seed(4))
    assert abs(float(got) - float(exact)) <= 1e-8 * float(exact)


# --------------------------------------------------------------------------- files and disks
@pytest.mark.parametrize("key", ["paths.output", "hydra.run.dir", "hydra.sweep.dir"])
def test_an_output_folder_that_cannot_be_made_is_refused_up_front(tmp_path, capsys, key):
    (tmp_path / "file").write_text("")
    for where in ("/proc/deqexp-out", str(tmp_path / "file" / "sub")):
        code, out = in_process(capsys, "train", f"{key}={where}")
        assert code == 2 and out.strip().count("\n") == 0, out
        assert f"deqexp train: error: {key}={where} cannot be written" in out


def test_an_unreadable_checkpoint_is_said_and_the_run_starts_afresh(tmp_path, capsys):
    cfg = compose_config(*SMALL, "trainer.epochs=2", "trainer.checkpoint_every=1")
    folder = RunFolder(tmp_path, fingerprint(cfg))
    train_job(cfg, folder)
    want = pd.read_csv(tmp_path / "metrics.csv")
    (tmp_path / "COMPLETE").unlink()
    (tmp_path / "checkpoint.pt").write_bytes(b"cut short")
    capsys.readouterr()
    train_job(cfg, folder)
    said = capsys.readouterr().err
    assert "checkpoint.pt is unreadable (damaged or cut short); starting this run afresh" in said
    assert np.allclose(pd.read_csv(tmp_path / "metrics.csv")[NUMBERS], want[NUMBERS], equal_nan=True)


@pytest.mark.parametrize("raises", ["OSError", "torch's RuntimeError"])
def test_a_full_disk_ends_with_one_line_and_no_partial_file(tmp_path, capsys, monkeypatch, raises):
    import errno
    import shutil

    from deqexp.run import checkpoints

    def disk_full(obj, path):
        with open(path, "wb") as fh:
            fh.write(b"half a checkpoint")
        if raises == "OSError":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        # what torch.save raises on a full tmpfs (seen with torch 2.13), with the disk nearly full
        monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1 << 20, 1 << 20, 4096))
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(checkpoints.torch, "save", disk_full)
    code, out = in_process(capsys, "train", *SMALL, "trainer.epochs=3", "trainer.checkpoint_every=1",
                           f"hydra.run.dir={tmp_path / 'r'}", "solver.forward.on_failure=ignore",
                           "solver.backward.on_failure=ignore")  # no solver warnings: one line only
    assert code == 2 and out.strip().count("\n") == 0, out
    assert f"cannot write to {tmp_path / 'r'} (No space left on device" in out
    assert not list((tmp_path / "r").glob("*.tmp")) and not (tmp_path / "r" / "checkpoint.pt").exists()
    assert "No space left on device" in (tmp_path / "r" / "FAILED").read_text()


@pytest.mark.parametrize("text, says", [
    ("a: 1\n\tb: 2\n", "mine.yaml line 2, column 1: found character '\\t' that cannot start any token "
                        "(YAML indents with spaces, never tabs); fix the file"),
    ("a: [1, 2\n", "mine.yaml line 2, column 1: expected ',' or ']', but got '<stream end>'; fix the file"),
])
def test_a_config_dir_yaml_that_does_not_parse_is_named_with_its_line(tmp_path, capsys, text, says):
    mine = tmp_path / "my_conf" / "experiment"
    mine.mkdir(parents=True)
    (mine / "mine.yaml").write_text(text)
    code, out = in_process(capsys, "train", "--config-dir", str(tmp_path / "my_conf"), "experiment=mine",
                           f"hydra.run.dir={tmp_path / 'r'}")
    assert code == 2 and out.strip().count("\n") == 0 and says in out, out
    assert out.startswith(f"deqexp train: error: --config-dir {tmp_path / 'my_conf'}: ")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("sweep, fix", [
    ("trainer.threads=1,2", "trainer.threads=1 name=threads1"),
    ("logger=csv,none", "logger=csv name=loggercsv"),
    ("solver.forward.on_failure=raise,warn", "solver.forward.on_failure=raise name=on_failureraise"),
])
def test_a_sweep_whose_jobs_would_share_a_folder_is_refused_before_any_job(tmp_path, capsys, sweep, fix):
    code, out = in_process(capsys, "train", "-m", sweep, f"paths.output={tmp_path}")
    assert code == 2 and out.strip().count("\n") == 0, out
    assert f"{sweep} sweeps a key that does not change results" in out and out.strip().endswith(fix)
    assert not list(tmp_path.iterdir())
    # the fix is itself a valid command (composed as train would)
    validate(compose_config(*fix.split()))


def test_a_preset_copied_into_a_users_config_dir_is_found(tmp_path, capsys):
    from deqexp.run.config import CONF_DIR

    mine = tmp_path / "my_conf" / "experiment"
    mine.mkdir(parents=True)
    text = (Path(CONF_DIR) / "experiment" / "paper" / "e1_smoke.yaml").read_text()
    assert "seeds: 2}" in text
    (mine / "mine.yaml").write_text(text.replace("seeds: 2}", "seeds: 1}"))
    for args in (["--config-dir", str(tmp_path / "my_conf")], [f"--config-dir={tmp_path / 'my_conf'}"]):
        code, out = in_process(capsys, "train", *args, "experiment=mine", "--cfg", "job")
        assert code == 0, out
        job = OmegaConf.create(out)
        assert job.trainer.ensemble.seeds == 1 and job.trainer.epochs == 3 and job.name == "paper/e1/smoke"
    code, out = in_process(capsys, "train", "experiment=mine", "--cfg", "job")
    assert code == 2 and "experiment=mine does not exist" in out
