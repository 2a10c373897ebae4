"""Issue 11 part 4: the fixed-point map's Jacobian norm at the solution (the jac_norm metric),
against the largest singular value of the explicit Jacobian that autograd builds."""
import math

import pytest
import torch
from torch.autograd.functional import jacobian

from deqexp.deq import operators
from deqexp.deq.models import ConvDEQ, DenseDEQ
from deqexp.deq.settings import SolverSettings
from deqexp.theory.families import get_family

from .helpers import FAMILY_NAMES, sample_data

SOLVER = SolverSettings("anderson", 1e-12, 500)


def _random_dense(family: str, ensemble: int = 3, n: int = 6, seed: int = 0) -> DenseDEQ:
    fam = get_family(family, trials=3, classes=3)
    m = DenseDEQ(n, n, n, fam, ensemble=ensemble, solver=SOLVER, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (m.W, m.U, m.b):
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
        # non-symmetric W, scaled per member to its own sup a'' ||W|| (Poisson: a'' unbounded)
        sup = fam.sup_variance if math.isfinite(fam.sup_variance) else 4.0
        if not math.isfinite(fam.sup_variance):  # keep exp(pre) moderate
            m.U.mul_(0.1)
            m.b.mul_(0.1)
        m.W.mul_(torch.tensor([0.5, 1.2, 2.0][:ensemble], dtype=m.W.dtype)[:, None, None]
                 / torch.linalg.matrix_norm(m.W, 2)[:, None, None] / sup)
    return m


def _inputs(family: str, ensemble: int, batch: int, n: int) -> torch.Tensor:
    t = torch.stack([sample_data(family, batch * n, seed=e) for e in range(ensemble)])
    return t.reshape(ensemble, batch, n, *t.shape[2:]).double()


def _explicit(model, t: torch.Tensor) -> torch.Tensor:
    """Per member and sample: the largest singular value of autograd's dense Jacobian of
    ``z -> a'(pre(z))`` at the forward solver's z* (one sample's map at a time)."""
    t = model._expand(t)  # shared data (a leading 1) seen by every member
    p = model.members()
    with torch.no_grad():
        inj = model._inject(p, t)
        z = model.solver.solve(lambda v: model.family.mean(model._recur(p, v) + inj), model._z0(p, t)).z
    out = torch.empty(z.shape[:2], dtype=z.dtype)
    for e in range(z.shape[0]):
        p = model.members(slice(e, e + 1))
        inj = model._inject(p, t[e:e + 1])
        for b in range(z.shape[1]):
            f = lambda v: model.family.mean(model._recur(p, v[None, None]) + inj[:, b:b + 1])[0, 0]  # noqa: E731
            jac = jacobian(f, z[e, b], vectorize=True).reshape(z[e, b].numel(), -1)
            out[e, b] = torch.linalg.matrix_norm(jac, 2)
    return out


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_dense_jacobian_norm_equals_explicit(family):
    model = _random_dense(family)
    t = _inputs(family, 3, 4, 6)
    got = model.jacobian_norms(t)
    expected = _explicit(model, t)
    assert got.shape == (3, 4)
    assert torch.allclose(got, expected, rtol=1e-6, atol=0), (got, expected)
    # THEORY.md section 4's bound: ||J|| <= sup a'' ||W||_2 (the contraction factor)
    bound = model.family.sup_variance * torch.linalg.matrix_norm(model.W.detach(), 2)
    assert (got <= bound[:, None] * (1 + 1e-9)).all() and (got > 0).all()


@pytest.mark.parametrize("padding", ["zeros", "circular"])
@pytest.mark.parametrize("family", ["tanh", "bernoulli"])
def test_conv_jacobian_norm_equals_explicit(family, padding):
    c, h, w = 2, 5, 6
    m = ConvDEQ(c, 3, get_family(family), ensemble=2, hidden=3, padding=padding, solver=SOLVER,
                dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in (m.W, m.U):
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))  # not symmetric
        norms = operators.conv_norm(m.W, h, w, padding)
        m.W.mul_((torch.tensor([0.7, 1.5]) / norms / m.family.sup_variance)[:, None, None, None, None])
    t = torch.randn(2, 3, c, h, w, generator=g, dtype=torch.float64)
    got = m.jacobian_norms(t)
    assert torch.allclose(got, _explicit(m, t), rtol=1e-6, atol=0)


def test_members_independent_of_grouping_and_of_a_diverged_member():
    model = _random_dense("tanh")
    t = _inputs("tanh", 3, 5, 6)
    whole = model.jacobian_norms(t)
    model.member_chunk = 1  # one member at a time: the same values (to rounding)
    assert torch.allclose(model.jacobian_norms(t), whole, rtol=1e-10, atol=0)
    model.member_chunk = None
    with torch.no_grad():
        model.W[1, 0, 0] = math.nan
    broken = model.jacobian_norms(t)
    assert torch.isnan(broken[1]).all()
    assert torch.allclose(broken[[0, 2]], whole[[0, 2]], rtol=1e-10, atol=0)


def test_zero_recurrence_has_zero_norm():
    model = _random_dense("gaussian")
    with torch.no_grad():
        model.W.zero_()
    norms = model.jacobian_norms(_inputs("gaussian", 3, 2, 6))
    assert torch.equal(norms, torch.zeros(3, 2, dtype=torch.float64))


@pytest.mark.parametrize("reorthogonalise", [True, False])
def test_batched_lanczos_matches_eigvalsh_per_problem(reorthogonalise):
    g = torch.Generator().manual_seed(3)
    a = torch.randn(4, 3, 30, 30, generator=g, dtype=torch.float64)
    a[1, 2] *= 1e-3  # scales differ by orders of magnitude across problems
    ata = a.transpose(-1, -2) @ a
    theta, vec, ok = operators.lanczos_top(lambda v: (ata @ v[..., None])[..., 0],
                                           torch.randn(4, 3, 30, generator=g, dtype=torch.float64),
                                           1e-12, batch_dims=2, reorthogonalise=reorthogonalise)
    assert bool(ok.all())
    assert torch.allclose(theta, torch.linalg.eigvalsh(ata)[..., -1], rtol=1e-10, atol=0)
    if not reorthogonalise:
        assert vec is None
        return
    rayleigh = (vec * (ata @ vec[..., None])[..., 0]).sum(-1) / (vec * vec).sum(-1)
    assert torch.allclose(rayleigh, theta, rtol=1e-10, atol=0)


def test_a_warm_started_norm_finds_a_new_top_direction_orthogonal_to_the_old_one():
    # issue 18 item 5: W from diag(3, 2, 1, ...) to diag(3, 5, 1, ...); a pure warm start lies
    # along e1 and would return 3
    from deqexp.deq.operators import SVD_MAX, dense_norms

    n = SVD_MAX + 4
    w = torch.diag(torch.tensor([3.0, 2.0] + [1.0] * (n - 2), dtype=torch.float64))[None]
    starts = {}
    assert torch.allclose(dense_norms(w, starts), torch.tensor([3.0], dtype=torch.float64))
    w2 = w.clone()
    w2[0, 1, 1] = 5.0
    assert torch.allclose(dense_norms(w2, starts), torch.tensor([5.0], dtype=torch.float64), rtol=1e-7)


def test_a_warm_started_conv_norm_finds_a_new_top_channel():
    from deqexp.deq.operators import conv_norm

    filt = torch.zeros(2, 2, 3, 3, dtype=torch.float64)
    filt[0, 0, 1, 1], filt[1, 1, 1, 1] = 3.0, 2.0   # channel-diagonal: the norm is 3, in channel 0
    starts = {}
    three, five = (torch.tensor([v], dtype=torch.float64) for v in (3.0, 5.0))
    assert torch.allclose(conv_norm(filt[None], 6, 6, starts=starts), three)
    filt[1, 1, 1, 1] = 5.0                          # now channel 1 is on top
    assert torch.allclose(conv_norm(filt[None], 6, 6, starts=starts), five, rtol=1e-7)


def test_jacobian_norms_warns_when_lanczos_misses_its_tolerance(monkeypatch):
    # the converged flag is surfaced, as the operator norms do: two steps cannot reach 1e-8
    from deqexp.deq import operators

    model, t = _random_dense("tanh"), _inputs("tanh", 3, 4, 6)
    assert torch.isfinite(model.jacobian_norms(t)).all()   # no warning at the real settings
    real = operators.lanczos_top
    monkeypatch.setattr(operators, "lanczos_top", lambda *a, **k: real(*a, **{**k, "max_steps": 2}))
    with pytest.warns(UserWarning, match="jacobian_norms: Lanczos did not bring the residual"):
        model.jacobian_norms(t)
