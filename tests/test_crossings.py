"""Where two options meet (issue 28, item 6): each test kills a planted bug that the suite let
live (code review 2026-12-05, section 1.3): jac_reg's phase with every > 1 and on resume, a
stabiliser's raw parameters under freeze_wu_epochs, SGD with held members, and best_epoch with
eval_every > 1."""
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from deqexp.run.build import build_model, load_job_data, members_from_config
from deqexp.run.folder import RunFolder
from deqexp.run.identity import identify
from deqexp.run.optimizers import MemberAdam
from deqexp.run.runner import train_job
from deqexp.run.train import JacobianPenalty
from tests.compose import compose_config
from tests.helpers import train_until_interrupted

TINY = ["dataset.n_train=20", "dataset.n_test=6", "dataset.length=10", "logger=csv",
        "logger.progress=false", "trainer.dtype=float64", "trainer.threads=1"]


def test_the_jacobian_penalty_runs_on_every_kth_step_from_the_first():
    cfg = SimpleNamespace(trainer=SimpleNamespace(jac_reg=SimpleNamespace(weight=1.0, every=3)))
    penalty = JacobianPenalty(cfg, [0])
    model = SimpleNamespace(jacobian_penalty=lambda x, z, probes: torch.ones(1))
    run = SimpleNamespace(forward=SimpleNamespace(z=torch.zeros(1, 2, 4)))
    job = SimpleNamespace(seed_index=torch.tensor([0]))
    on = [penalty(model, job, None, run) is not None for _ in range(7)]
    assert on == [True, False, False, True, False, False, True]  # steps 1, 4, 7


def test_a_resume_keeps_the_jacobian_penaltys_phase(tmp_path, monkeypatch):
    # 5 batches an epoch (not a multiple of every=3): the phase carries across epochs
    run = [*TINY, "trainer.epochs=4", "trainer.batch_size=4", "trainer.checkpoint_every=1",
           "trainer.jac_reg.weight=1.0", "trainer.jac_reg.every=3", "trainer.jac_samples=0"]
    cfg = compose_config(*run)
    whole = RunFolder(tmp_path / "whole", *identify(cfg))
    train_job(cfg, whole)
    broken = RunFolder(tmp_path / "broken", *identify(cfg))
    train_until_interrupted(monkeypatch, cfg, broken, 3)
    train_job(cfg, broken)
    a, b = (pd.read_csv(f.path / "metrics.csv") for f in (whole, broken))
    assert np.allclose(a.test_loss, b.test_loss, rtol=1e-12, atol=0)


def _model(*overrides):
    cfg = compose_config(*TINY, *overrides)
    members = members_from_config(cfg)
    job = load_job_data(cfg, members, torch.device("cpu"), torch.float64)
    return build_model(cfg, job, members, torch.device("cpu"), torch.float64)


@pytest.mark.parametrize("recurrence", [["model.recurrence=free"], ["model.recurrence=monotone"],
                                        ["model.recurrence=spectral", "model.spectral.learned=true"]])
def test_releasing_w_releases_every_parameter_w_is_made_of(recurrence):
    model = _model("trainer.ensemble.inits=[kglm,naive]", *recurrence)
    naive = torch.tensor([False, True])
    model.freeze("W", naive)
    raw = set(model.recurrence.raw)
    assert set(model.frozen) == raw and raw <= {n for n, _ in model.named_parameters()}
    held = dict(zip([n for n, _ in model.named_parameters()], model.hold_masks()))
    assert all(torch.equal(held[n], naive) for n in raw)
    model.unfreeze("W")
    assert not model.frozen and all(m is None for m in model.hold_masks())


@pytest.mark.parametrize("adam", [True, False])
def test_a_held_member_is_untouched_by_adam_and_by_sgd(adam):
    start = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    stacked = start.clone().requires_grad_()
    ours = MemberAdam([stacked], lr=0.1, adam=adam)
    refs = [start[i].clone().requires_grad_() for i in range(3)]
    ref_opts = [torch.optim.Adam([r], lr=0.1) if adam else torch.optim.SGD([r], lr=0.1) for r in refs]
    gen = torch.Generator().manual_seed(1)
    for t in range(6):
        g = torch.randn(3, 4, generator=gen)
        held = torch.tensor([False, t < 3, True])
        stacked.grad = g.clone()
        ours.step([held])
        for i in range(3):
            refs[i].grad = None if held[i] else g[i].clone()
            ref_opts[i].step()
            assert torch.equal(stacked[i], refs[i]), (adam, t, i)
    assert torch.equal(stacked[2], start[2])


def test_best_epoch_is_an_epoch_when_not_every_epoch_is_evaluated(tmp_path):
    cfg = compose_config(*TINY, "trainer.epochs=5", "trainer.eval_every=2", "optim.lr=0.05",
                         "trainer.ensemble.inits=[kglm,random]")
    summary = train_job(cfg, RunFolder(tmp_path, *identify(cfg)))
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    rows = pd.read_csv(tmp_path / "metrics.csv")
    assert sorted(set(rows.epoch)) == [0, 2, 4, 5]
    for m, epoch in zip(summary["members"], saved["best_epoch"]):
        own = rows[rows.member == m["member"]]
        assert epoch == m["best_epoch"] == own.loc[own.test_loss.idxmin(), "epoch"]
    assert any(e not in (0, None) for e in saved["best_epoch"])  # an index would be 1..3


@pytest.mark.parametrize("solver, noted", [("forward", True), ("anderson", False), ("newton", False)])
def test_the_contraction_note_is_given_only_to_forward_iteration(capsys, solver, noted):
    from deqexp.run.metrics import note_contraction

    cfg = compose_config(*TINY, f"solver={solver}", "init.scale=2.0")  # ||W|| = 2: outside
    members = members_from_config(cfg)
    job = load_job_data(cfg, members, torch.device("cpu"), torch.float64)
    note_contraction(build_model(cfg, job, members, torch.device("cpu"), torch.float64), job, members)
    assert ("outside the contraction region" in capsys.readouterr().out) == noted


def test_messages_are_cut_at_a_word_boundary():
    from deqexp.run.messages import shorten

    text = "word " * 100
    cut = shorten(text, 50)
    assert len(cut) <= 50 and cut.endswith(" ...") and "wor ..." not in cut
    assert shorten("short  one\nline", 50) == "short one line"


def test_the_progress_bar_reaches_the_last_epoch_when_epochs_are_skipped(monkeypatch):
    from deqexp.run import sinks

    monkeypatch.setattr(sinks, "_usable_terminal", lambda: True)
    bar = sinks.Progress(5, True, "job")
    for epoch in (0, 2, 4, 5):  # trainer.eval_every=2
        bar.update(epoch, 1.0, 3.0)
    assert bar.bar.n == 5
    bar.close()
