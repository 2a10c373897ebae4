"""Long runs: checkpoints and resume, saved models, reloading and evaluating (issue 11)."""
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

import deqexp
from deqexp.run.folder import RunFolder
from deqexp.run.identity import fingerprint
from deqexp.run.runner import train_job
from deqexp.run.runs import evaluate_run
from deqexp.run.runs import main as eval_main
from tests.compose import compose_config
from tests.helpers import train_until_interrupted
from tests.test_stability import _explicit

RUN = ["dataset.n_train=40", "dataset.n_test=12", "dataset.length=20", "logger=csv",
       "logger.progress=false", "trainer.dtype=float64", "trainer.epochs=6", "trainer.batch_size=8",
       "trainer.checkpoint_every=2", "optim=adam_cosine", "trainer.ensemble.inits=[kglm,random]"]
NUMBERS = ["train_loss", "test_loss", "fwd_iters_mean", "fwd_residual", "bwd_iters_mean", "op_norm_W",
           "jac_norm"]


def _job(tmp_path, name, *extra):
    cfg = compose_config(*RUN, *extra)
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    return cfg, RunFolder(folder, fingerprint(cfg))


def test_a_resumed_run_ends_exactly_as_an_uninterrupted_one(tmp_path, monkeypatch):
    cfg, whole = _job(tmp_path, "whole")
    train_job(cfg, whole)
    reference = pd.read_csv(whole.path / "metrics.csv")

    cfg, broken = _job(tmp_path, "broken")
    train_until_interrupted(monkeypatch, cfg, broken, 5)
    assert not (broken.path / "COMPLETE").exists()
    assert pd.read_csv(broken.path / "metrics.csv").epoch.max() == 4
    train_job(cfg, broken)  # resumes from the checkpoint at epoch 4
    resumed = pd.read_csv(broken.path / "metrics.csv")
    assert list(resumed.epoch) == list(reference.epoch)
    assert np.allclose(resumed[NUMBERS], reference[NUMBERS], rtol=1e-12, atol=1e-14, equal_nan=True)
    assert (broken.path / "COMPLETE").exists()


def test_force_starts_afresh_instead_of_resuming(tmp_path):
    cfg, folder = _job(tmp_path, "f")
    train_job(cfg, folder)
    cfg = compose_config(*RUN, "force=true")
    train_job(cfg, RunFolder(folder.path, fingerprint(cfg)))
    assert pd.read_csv(folder.path / "metrics.csv").epoch.tolist().count(0) == 2  # one row per member


def test_reloaded_models_give_the_logged_losses_back(tmp_path):
    cfg, folder = _job(tmp_path, "r")
    summary = train_job(cfg, folder)
    final = evaluate_run(deqexp.load_run(folder.path))
    for row, member in zip(final, summary["members"]):
        assert row["test_loss"] == member["final_test_loss"]
    best = evaluate_run(deqexp.load_run(folder.path, "best"))
    for row, member in zip(best, summary["members"]):
        assert row["test_loss"] == member["best_test_loss"]


def test_logged_jacobian_norm_is_the_largest_over_the_first_test_samples(tmp_path):
    cfg, folder = _job(tmp_path, "j", "trainer.jac_samples=5")
    train_job(cfg, folder)
    logged = pd.read_csv(folder.path / "metrics.csv")
    logged = logged[logged.epoch == logged.epoch.max()].set_index("member").jac_norm
    run = deqexp.load_run(folder.path)
    # independent: autograd's dense Jacobian of each sample's map, its largest singular value
    explicit = _explicit(run.model, run.job.member_view(run.job.test_x[:, :5])).amax(1)
    assert np.allclose(logged.sort_index().to_numpy(), explicit.numpy(), rtol=1e-6, atol=0)
    assert [r["jac_norm"] for r in evaluate_run(run)] == logged.sort_index().tolist()
    cfg, off = _job(tmp_path, "off", "trainer.jac_samples=0")
    train_job(cfg, off)
    assert pd.read_csv(off.path / "metrics.csv").jac_norm.isna().all()


def test_deqexp_eval_writes_the_metrics_and_takes_overrides(tmp_path, capsys):
    cfg, folder = _job(tmp_path, "e")
    train_job(cfg, folder)
    assert eval_main([str(folder.path), "dataset.n_test=30"]) == 0
    out = pd.read_csv(folder.path / "eval.csv")
    assert len(out) == 2 and np.isfinite(out.test_loss).all()
    assert "test loss" in capsys.readouterr().out
    assert eval_main([str(tmp_path), "dataset.n_test=30"]) == 2  # no saved model there


@pytest.fixture(scope="module")
def _trained_once(tmp_path_factory):
    """One finished single-member run, trained once for the evaluation tests below."""
    cfg, folder = _job(tmp_path_factory.mktemp("trained"), "run", "trainer.ensemble.inits=[]")
    train_job(cfg, folder)
    return cfg, folder


@pytest.fixture
def finished(_trained_once, tmp_path):
    """A copy of that run for one test to read or damage: (config, RunFolder)."""
    cfg, folder = _trained_once
    shutil.copytree(folder.path, tmp_path / "run")
    return cfg, RunFolder(tmp_path / "run", folder.fingerprint)


def test_eval_switches_a_group_as_hydra_composes_it(finished):
    cfg, folder = finished
    plain = evaluate_run(deqexp.load_run(folder.path))
    # the group replaced by its composed default, then the run's own values restored
    same = evaluate_run(deqexp.load_run(folder.path, overrides=[
        "dataset=smooth", "dataset.n_train=40", "dataset.n_test=12", "dataset.length=20"]))
    assert [r["test_loss"] for r in same] == [r["test_loss"] for r in plain]
    composed = deqexp.load_run(folder.path, overrides=["dataset=smooth", "dataset.length=20"]).cfg
    assert composed.dataset.n_test == compose_config("dataset=smooth").dataset.n_test != 12


@pytest.mark.parametrize("args, says", [
    (["family=bernoulli"], "family cannot change at evaluation"),
    (["model.width=50"], "model.width cannot change at evaluation"),
    (["kernel.lengthscale=2.0"], "kernel.lengthscale cannot change at evaluation"),
    (["dataset.n_test=abc"], "dataset.n_test='abc' is not valid: the run's value is 12 (int)"),
    (["dataset=images"], "model=dense takes single-channel images"),
    (["dataset=nope"], "dataset=nope"),
    (["dataset.n_test"], "is not key=value"),
    (["dataset.foo=1"], "unknown key 'dataset.foo'"),
    (["--out", "{tmp}/no/such/folder/x.csv"], "is not a folder you can write to"),
    (["--out", "{tmp}"], "is a folder; give a file name"),
    (["--out", "/proc/deqexp-x.csv"], "/proc is not a folder you can write to"),
    (["@model.pt"], "model.pt is not a readable deqexp model"),
    (["@config.yaml"], "config.yaml is not readable YAML"),
    (["@config.yaml="], "config.yaml is empty or holds no run's config"),
])
def test_every_bad_eval_input_is_one_line_and_exit_2(finished, tmp_path, capsys, args, says):
    cfg, folder = finished
    capsys.readouterr()
    if args[0].startswith("@"):  # a damaged (or, with "=", an empty) file in the run's folder
        name, empty = args[0][1:].rstrip("="), args[0].endswith("=")
        (folder.path / name).write_bytes(b"" if empty else b"\x00garbage: [unclosed\n")
        args = []
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert eval_main([str(folder.path), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deqexp eval: error:") and says in err[0], err


class _RunsCode:
    """Unpickling this creates a file: what a tampered model.pt or checkpoint.pt could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_saved_models_and_checkpoints_never_run_pickled_code(finished, tmp_path, capsys):
    cfg, folder = finished
    capsys.readouterr()
    marker = tmp_path / "code-ran"
    torch.save({"final": _RunsCode(marker), "best": {}}, folder.path / "model.pt")
    assert eval_main([str(folder.path)]) == 2 and not marker.exists()
    assert "model.pt is not a readable deqexp model" in capsys.readouterr().err
    (folder.path / "COMPLETE").unlink()
    torch.save({"fingerprint": folder.fingerprint, "state": _RunsCode(marker)}, folder.path / "checkpoint.pt")
    train_job(cfg, folder)  # starts afresh, says why
    assert not marker.exists() and "checkpoint.pt is unreadable" in capsys.readouterr().err


def test_load_run_refuses_arguments_that_are_not_what_it_takes(finished):
    from deqexp.run.schemas import ConfigError

    with pytest.raises(ConfigError, match="needs a run's folder"):
        deqexp.load_run(None)
    cfg, folder = finished
    with pytest.raises(ConfigError, match="must be a list of 'key=value' strings"):
        deqexp.load_run(folder.path, overrides="dataset.n_test=5")


@pytest.mark.slow
def test_kill_9_then_rerun_resumes_to_the_same_metrics(tmp_path):
    args = [sys.executable, "-m", "deqexp.cli", "train", "dataset.n_train=150", "dataset.n_test=50",
            "logger=csv", "trainer.dtype=float64", "trainer.epochs=40", "trainer.checkpoint_every=1",
            "trainer.batch_size=25", f"paths.output={tmp_path / 'a'}"]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    ckpt = None
    while time.time() < deadline and proc.poll() is None:
        found = list((tmp_path / "a").rglob("checkpoint.pt"))
        metrics = list((tmp_path / "a").rglob("metrics.csv"))
        if found and metrics and 5 <= len(metrics[0].read_text().splitlines()) < 30:
            ckpt = found[0]
            break
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no clean-up runs
    proc.wait()
    assert ckpt is not None, "the run finished before it could be killed"
    assert not (ckpt.parent / "COMPLETE").exists()
    again = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0 and "resuming from the checkpoint" in again.stdout, again.stderr[-2000:]
    whole = subprocess.run([*args[:-1], f"paths.output={tmp_path / 'b'}"], capture_output=True,
                           text=True, env=env, timeout=300)
    assert whole.returncode == 0
    a = pd.read_csv(ckpt.parent / "metrics.csv")
    b = pd.read_csv(next((tmp_path / "b").rglob("metrics.csv")))
    assert list(a.epoch) == list(b.epoch)
    assert np.allclose(a[NUMBERS], b[NUMBERS], rtol=1e-12, atol=1e-14, equal_nan=True)
    assert json.loads((ckpt.parent / "summary.json").read_text())["members"][0]["status"] == "completed"


def test_the_closing_lines_say_higher_when_the_loss_went_up():
    from deqexp.run.runner import describe_summary

    member = lambda i, a, b: {"member": i, "init": "kglm", "seed": 0, "initial_test_loss": a,  # noqa: E731
                              "final_test_loss": b, "status": "completed"}
    members = [member(0, 0.3, 0.1), member(1, 0.1, 0.25), member(2, 0.0, 0.1)]
    text = describe_summary({"members": members}, ".")
    assert "0.1 (3.00x lower than epoch 0: 0.3)" in text
    assert "0.25 (2.50x higher than epoch 0: 0.1)" in text
    assert "0.1 (vs epoch 0: 0)" in text
