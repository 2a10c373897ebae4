"""Issue 18 items 2-3: per-sample solver outcomes and the stabilisers (Jacobian regularisation,
spectral normalisation, the monotone parametrisation), each against an independent reference:
closed forms, finite differences, numpy/scipy decompositions and the exact kGLM solver."""
import math

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import torch
from omegaconf import OmegaConf

from deqexp.deq import jacreg
from deqexp.deq.gradients import GradientSettings
from deqexp.deq.inits import InitSpec, initialise
from deqexp.deq.models import DenseDEQ
from deqexp.deq.monotone import Monotone, monotone_factors, monotone_weight
from deqexp.deq.settings import SolverSettings
from deqexp.deq.solver_loop import CAP, CONVERGED, NONFINITE, OUTCOMES, STALLED, concat_results
from deqexp.deq.solvers import forward_iteration
from deqexp.deq.spectral import Spectral
from deqexp.run.folder import RunFolder
from deqexp.run.identity import ADDED_OPTIONS, fingerprint
from deqexp.run.metrics import SolverFailure
from deqexp.run.runner import train_job
from deqexp.theory.families import get_family
from deqexp.theory.kernels import SquaredExponential
from deqexp.theory.kglm import fit_kglm
from tests.compose import compose_config

D, E, B = 6, 2, 5
SMALL = ["dataset.n_train=32", "dataset.n_test=8", "dataset.length=20", "logger=csv",
         "logger.progress=false", "trainer.dtype=float64"]


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --------------------------------------------------------------------------- outcomes
def test_each_sample_says_how_its_solve_ended():
    # four samples in one batch, each with its own closed-form behaviour under z <- a z + c
    a = torch.tensor([0.5, 0.97, -1.0, 2.0], dtype=torch.float64)[None, :, None]
    c = torch.ones(1, 4, 3, dtype=torch.float64)
    c[0, 3, 0] = float("nan")  # a NaN on one sample only

    def f(z):
        return a * z + c

    res = forward_iteration(f, torch.zeros(1, 4, 3, dtype=torch.float64), tol=1e-6, max_iter=40)
    # 0.5: contraction -> converged; 0.97: still shrinking 3% a step at the cap -> cap;
    # -1: z alternates 0, 1, 0, ... with a constant residual -> stalled; NaN -> nonfinite
    assert res.outcome.tolist() == [[CONVERGED, CAP, STALLED, NONFINITE]]
    counts = res.counts()
    assert {k: int(v[0]) for k, v in counts.items()} == dict(zip(OUTCOMES, [1, 1, 1, 1]))
    # the cap sample's residual after 40 steps is the closed form |a^k c / ...| > tol
    assert not bool(res.converged[0, 1])
    both = concat_results([res, res])
    assert both.outcome.shape == (2, 4) and both.outcome[1].tolist() == res.outcome[0].tolist()


def test_a_divergence_is_stalled_not_capped():
    def f(z):  # the relative residual settles at 0.5 / 1.5: no progress
        return 1.5 * z + 1.0

    res = forward_iteration(f, torch.zeros(1, 1, 2, dtype=torch.float64), tol=1e-8, max_iter=30)
    assert res.outcome.item() == STALLED


def _train(tmp_path, *overrides):
    cfg = compose_config(*SMALL, *overrides)
    folder = RunFolder(tmp_path, fingerprint(cfg))
    train_job(cfg, folder)
    return pd.read_csv(tmp_path / "metrics.csv")


def test_metrics_count_every_solve_by_outcome(tmp_path, capsys):
    # forward iteration at E1's border: some solves reach the cap (anderson, the default, converges)
    df = _train(tmp_path, "trainer.epochs=2", "trainer.ensemble.seeds=2", "solver=forward")
    fwd = df[[f"fwd_n_{o}" for o in OUTCOMES]].sum(1)
    assert (fwd == 8).all()  # every test sample of every member, once
    assert np.allclose(df.fwd_n_converged / 8, df.converged_frac)
    later = df[df.epoch > 0]
    bwd = later[[f"bwd_n_{o}" for o in OUTCOMES]].sum(1)
    assert (bwd == 32).all()  # full batch: one adjoint solve per training sample per epoch
    assert np.allclose(later.bwd_n_converged / 32, later.bwd_converged_frac)
    # the default (warn) says it once per run and solve, with the share of samples, labelled with
    # the job's name (as its progress lines are: a sweep's jobs can be told apart)
    out = capsys.readouterr().out
    assert out.count("warning:") <= 2 and "did not reach solver.forward.tol" in out
    assert all(ln.startswith("[default] warning: ") for ln in out.splitlines() if "warning:" in ln)


def test_a_resumed_run_does_not_repeat_the_warnings_its_first_attempt_gave(tmp_path, capsys, monkeypatch):
    from tests.helpers import train_until_interrupted

    cfg = compose_config(*SMALL, "trainer.epochs=4", "trainer.checkpoint_every=1", "solver=forward")
    folder = RunFolder(tmp_path, fingerprint(cfg))
    train_until_interrupted(monkeypatch, cfg, folder, 3)  # two epochs trained, the checkpoint at 2
    first = capsys.readouterr().out
    assert first.count("warning:") == 2  # forward and backward solves at their cap
    monkeypatch.undo()
    train_job(cfg, folder)
    assert "warning:" not in capsys.readouterr().out  # said once per run, not once per start


def test_on_failure_raise_stops_the_run_without_a_result(tmp_path):
    cfg = compose_config(*SMALL, "trainer.epochs=2", "solver=forward", "solver.forward.on_failure=raise")
    folder = RunFolder(tmp_path, fingerprint(cfg))
    with pytest.raises(SolverFailure, match="on_failure=raise"):
        train_job(cfg, folder)
    assert not (tmp_path / "COMPLETE").exists()
    # converged solves raise nothing
    ok = compose_config(*SMALL, "trainer.epochs=1", "solver=anderson", "solver.forward.tol=1e-6",
                        "solver.forward.max_iter=200", "solver.forward.on_failure=raise",
                        "solver.backward.on_failure=ignore")
    train_job(ok, RunFolder(tmp_path / "ok", fingerprint(ok)))
    assert (tmp_path / "ok" / "COMPLETE").exists()


def test_on_failure_ignore_is_silent(tmp_path, capsys):
    _train(tmp_path, "trainer.epochs=1", "solver.forward.on_failure=ignore",
           "solver.backward.on_failure=ignore")
    assert "warning:" not in capsys.readouterr().out


def test_new_options_at_their_defaults_keep_old_fingerprints():
    base = compose_config(*SMALL)
    same = compose_config(*SMALL, "model.recurrence=free", "trainer.jac_reg.weight=0.0",
                          "solver.forward.on_failure=raise")
    assert fingerprint(base) == fingerprint(same)
    # and it is the fingerprint of the config as it was before these options existed
    before = OmegaConf.to_container(base, resolve=True)
    for key in [*ADDED_OPTIONS, "solver.forward.on_failure", "solver.backward.on_failure"]:
        *parents, last = key.split(".")
        node = before
        for part in parents:
            node = node[part]
        node.pop(last, None)  # dataset.noise_pairing: only the image data sets have it
    assert fingerprint(OmegaConf.create(before)) == fingerprint(base)
    for change in ("model.recurrence=spectral", "trainer.jac_reg.weight=0.1",
                   "model.recurrence=monotone", "model.spectral.target=0.5"):
        assert fingerprint(compose_config(*SMALL, change)) != fingerprint(base), change


# --------------------------------------------------------------------------- Jacobian regulariser
def _dense(recurrence=None, family="tanh", seed=0, ensemble=E, d=D):
    m = DenseDEQ(d, d, 3, get_family(family), ensemble=ensemble, dtype=torch.float64,
                 solver=SolverSettings("anderson", 1e-12, 300), recurrence=recurrence,
                 gradient=GradientSettings("gmres", 1e-12, 200))
    with torch.no_grad():
        for i, (name, p) in enumerate(m.named_parameters()):
            if name != "W_scale":  # a learned target norm starts at the target
                p.copy_(0.4 * rand(*p.shape, seed=seed + i))
    return m


def test_hutchinson_matches_the_closed_form_jacobian():
    m = _dense()
    t = rand(E, B, D, seed=9)
    z = m.run(t).forward.z
    probes = rand(E, B, D, seed=3)
    got = m.jacobian_penalty(t, z, probes)
    # J = diag(a''(W z + U t + b)) W, per member and sample; W is not symmetric
    w, u, b = m.W.detach(), m.U.detach(), m.b.detach()
    pre = torch.einsum("eij,ebj->ebi", w, z) + torch.einsum("eij,ebj->ebi", u, t) + b[:, None]
    jac = (1 - torch.tanh(pre) ** 2)[..., None] * w[:, None]          # (E, B, d, d)
    want = torch.einsum("ebi,ebij->ebj", probes, jac).pow(2).sum(-1).mean(1) / D
    assert torch.allclose(got, want, rtol=1e-12)
    # and its expectation over probes is ||J||_F^2 / d
    many = torch.stack([m.jacobian_penalty(t, z, rand(E, B, D, seed=100 + k)) for k in range(400)])
    exact = jac.pow(2).sum((-1, -2)).mean(1) / D
    assert torch.allclose(many.mean(0), exact, rtol=0.1)


def test_the_penalty_gradient_matches_finite_differences():
    m = _dense()
    t, probes = rand(E, B, D, seed=9), rand(E, B, D, seed=3)
    z = m.run(t).forward.z.detach()

    def penalty(w):
        with torch.no_grad():
            m.W.copy_(w)
        return m.jacobian_penalty(t, z, probes).sum()

    w0 = m.W.detach().clone()
    penalty(w0).backward()
    grad = m.W.grad.clone()
    h, k = 1e-6, (1, 2, 4)
    fd = (penalty(w0 + h * _unit(w0, k)) - penalty(w0 - h * _unit(w0, k))) / (2 * h)
    assert math.isclose(float(grad[k]), float(fd.detach()), rel_tol=1e-6)
    dirs = rand(*w0.shape, seed=5)
    fd = (penalty(w0 + h * dirs) - penalty(w0 - h * dirs)) / (2 * h)
    assert math.isclose(float((grad * dirs).sum()), float(fd.detach()), rel_tol=1e-6)


def _unit(like, index):
    u = torch.zeros_like(like)
    u[index] = 1.0
    return u


def test_probes_depend_only_on_the_members_seed():
    gens = lambda: [torch.Generator().manual_seed(s) for s in (5, 6)]  # noqa: E731
    like = torch.zeros(3, 4, 2, dtype=torch.float64)
    a = jacreg.probes(gens(), like, torch.tensor([0, 1, 0]))
    assert torch.equal(a[0], a[2]) and not torch.equal(a[0], a[1])
    alone = jacreg.probes([torch.Generator().manual_seed(6)], like[:1], torch.tensor([0]))
    assert torch.equal(alone[0], a[1])


def test_jac_reg_trains_and_lowers_the_jacobian(tmp_path):
    plain = _train(tmp_path / "plain", "trainer.epochs=4", "optim.lr=0.01")
    reg = _train(tmp_path / "reg", "trainer.epochs=4", "optim.lr=0.01", "trainer.jac_reg.weight=10")
    assert reg.jac_norm.iloc[0] == plain.jac_norm.iloc[0]     # the same start
    assert reg.jac_norm.iloc[-1] < plain.jac_norm.iloc[-1]    # a heavy penalty pulls ||J|| down


# --------------------------------------------------------------------------- spectral normalisation
@pytest.mark.parametrize("learned", [False, True])
def test_spectral_normalisation_holds_w_at_its_target(learned):
    m = _dense(Spectral(0.7, learned))
    w = m.recurrent_weight().detach().numpy()
    for e in range(E):
        assert math.isclose(np.linalg.svd(w[e], compute_uv=False)[0], 0.7, rel_tol=1e-12)
        raw = m.W.detach().numpy()[e]
        assert np.allclose(w[e], 0.7 * raw / np.linalg.svd(raw, compute_uv=False)[0], rtol=1e-12)
    if learned:
        with torch.no_grad():
            m.W_scale[1] = 1.3
        assert math.isclose(float(torch.linalg.matrix_norm(m.recurrent_weight()[1].detach(), 2)), 1.3,
                            rel_tol=1e-12)


def test_spectral_gradient_matches_finite_differences():
    _check_gradients(_dense(Spectral(0.9, learned=True)), ("W", "W_scale"))


def _check_gradients(m, names, seed=11):
    """Autograd's gradient of a loss on the output against central differences, along a random
    direction of each parameter in ``names``."""
    t = rand(E, B, D, seed=9)
    loss = lambda: m(t).pow(2).sum()  # noqa: E731
    loss().backward()
    for name in names:
        p = getattr(m, name)
        dirs = rand(*p.shape, seed=seed)
        h, p0 = 1e-6, p.detach().clone()
        with torch.no_grad():
            p.copy_(p0 + h * dirs)
            up = loss()
            p.copy_(p0 - h * dirs)
            down = loss()
            p.copy_(p0)
        assert math.isclose(float((p.grad * dirs).sum()), float((up - down) / (2 * h)), rel_tol=1e-5), name


# --------------------------------------------------------------------------- monotone
def test_the_monotone_parametrisation_is_strongly_monotone():
    a, b = rand(3, D, D, seed=1), rand(3, D, D, seed=2)
    for margin in (0.05, 1.0):
        w = monotone_weight(a, b, margin)
        sym = np.eye(D) - (w + w.transpose(1, 2)).numpy() / 2
        lowest = np.linalg.eigvalsh(sym).min(-1)
        assert (lowest >= margin - 1e-12).all()
        # and the bound is tight when A is singular: the margin is the smallest eigenvalue
        a0 = a.clone()
        a0[:, 0] = 0
        w0 = monotone_weight(a0 @ torch.diag(torch.tensor([0.0] + [1.0] * (D - 1), dtype=a.dtype)), b, margin)
        sym0 = np.eye(D) - (w0 + w0.transpose(1, 2)).numpy() / 2
        assert np.allclose(np.linalg.eigvalsh(sym0).min(-1), margin, atol=1e-10)
        # the formula itself, against numpy
        want = (1 - margin) * np.eye(D) - a.numpy().transpose(0, 2, 1) @ a.numpy() + b.numpy() \
            - b.numpy().transpose(0, 2, 1)
        assert np.allclose(w.numpy(), want, rtol=1e-12)


def test_factors_reproduce_a_monotone_w_and_the_kglm_square_root():
    x = torch.linspace(0, 3, D, dtype=torch.float64)[:, None]
    k = SquaredExponential(1.0)(x)
    lam = float(torch.linalg.matrix_norm(k, 2))
    fac = monotone_factors(-k / lam, 1.0)
    assert np.allclose(fac["A"].numpy(), scipy.linalg.sqrtm(k.numpy() / lam).real, atol=1e-10)
    assert torch.allclose(fac["B"], torch.zeros(D, D, dtype=torch.float64))
    w = monotone_weight(rand(D, D, seed=1)[None], rand(D, D, seed=2)[None], 0.3)[0]
    again = monotone_factors(w, 0.3)
    assert torch.allclose(monotone_weight(again["A"][None], again["B"][None], 0.3)[0], w, atol=1e-12)


@pytest.mark.parametrize("family", ["tanh", "bernoulli", "gaussian", "relu"])
def test_a_kglm_initialised_monotone_deq_solves_the_kglm(family):
    x = torch.linspace(0, 4, 12, dtype=torch.float64)[:, None]
    kern = SquaredExponential(0.8)
    fam = get_family(family)
    y = rand(12, seed=4)
    y = (y > 0).double() if family == "bernoulli" else y
    k = kern(x)
    lam = 0.6 * float(torch.linalg.matrix_norm(k, 2))  # ||W||_2 = 1/0.6: outside the contraction region
    m = DenseDEQ(12, 12, 12, fam, dtype=torch.float64, recurrence=Monotone(1.0),
                 solver=SolverSettings("forward", 1e-13, 5000))
    initialise(m, [InitSpec("kglm", lam=lam)], [0], kernel=kern, x_in=x, x_out=x)
    assert torch.allclose(m.recurrent_weight()[0], -k / lam, atol=1e-12)  # exactly the kGLM's W
    run = m.run(y[None, None])
    exact = fit_kglm(k, y, fam, lam, tol=1e-13)
    assert bool(run.forward.converged.all())
    assert torch.allclose(m.fixed_point(y[None, None])[0, 0], exact.mean, atol=1e-9)
    assert torch.allclose(run.out[0, 0], exact.theta, atol=1e-8)


def test_peaceman_rachford_converges_where_iteration_does_not():
    # an expansive monotone layer: ||W||_2 = 3, tanh
    a = rand(D, D, seed=7)
    a = a * math.sqrt(3 / float(torch.linalg.matrix_norm(a.T @ a, 2)))
    m = DenseDEQ(D, D, 3, get_family("tanh"), dtype=torch.float64, recurrence=Monotone(1.0),
                 solver=SolverSettings("forward", 1e-12, 400))
    with torch.no_grad():
        m.A.copy_(a[None])
        m.U.copy_(3 * torch.eye(D, dtype=torch.float64)[None])
    t = rand(1, B, D, seed=8)
    res = m.run(t).forward
    assert bool(res.converged.all())
    w = m.recurrent_weight().detach()
    z = m.fixed_point(t).detach()
    assert float(torch.linalg.matrix_norm(w[0], 2)) > 2.5
    plain = forward_iteration(lambda v: torch.tanh(v @ w[0].T + 3 * t), torch.zeros_like(t), tol=1e-12,
                              max_iter=400)
    assert not bool(plain.converged.all())
    assert torch.allclose(z, torch.tanh(z @ w[0].T + 3 * t), atol=1e-10)


def test_monotone_gradients_match_finite_differences():
    _check_gradients(_dense(Monotone(0.5)), ("A", "B", "U"), seed=12)


@pytest.mark.parametrize("family, trials, ok", [("poisson", 1, False), ("categorical", 1, False),
                                                ("binomial", 5, False), ("binomial", 4, True),
                                                ("spin", 1, True)])
def test_monotone_refuses_activations_that_are_not_proximal_maps(family, trials, ok):
    fam = get_family(family, trials=trials, classes=3)
    if ok:
        Monotone().check_family(fam)
        return
    with pytest.raises(ValueError, match="proximal map"):
        Monotone().check_family(fam)


@pytest.mark.parametrize("profile", ["", "_quick", "_smoke"])
def test_the_plain_stability_job_is_the_authors_e1(profile):
    # the E1 preset that tests/test_fidelity.py checks line by line against the authors' loop
    plain = compose_config(f"experiment=stability/e1{profile}", "stabiliser=plain")
    assert fingerprint(plain) == fingerprint(compose_config(f"experiment=paper/e1{profile}"))
    mono = compose_config(f"experiment=stability/e1{profile}", "stabiliser=monotone")
    assert mono.solver.forward.counting == "authors" and mono.model.recurrence == "monotone"
