"""THEORY.md section 6: implicit gradients, against gradcheck and unrolled backprop."""
import pytest
import torch

from deqexp.deq.gradients import GradientSettings
from deqexp.deq.inits import InitSpec, initialise
from deqexp.deq.models import DenseDEQ
from deqexp.deq.settings import SolverSettings
from deqexp.theory.families import get_family
from deqexp.theory.kernels import build_kernel

N, M = 8, 5


def _model(gradient="implicit", family="tanh", lam_factor=1.3, tol=1e-13, max_iter=400,
           bwd_solver="forward", classes=None):
    fam = get_family(family, classes=3)
    x = torch.linspace(-2, 2, N)[:, None]
    xo = torch.linspace(-1.5, 2.5, M)[:, None]
    k = build_kernel("se")
    lam = lam_factor * float(torch.linalg.matrix_norm(k(x), 2))
    m = DenseDEQ(N, N, M, fam, dtype=torch.float64, solver=SolverSettings("forward", tol, max_iter),
                 gradient=GradientSettings(bwd_solver, tol, max_iter, gradient=gradient))
    initialise(m, [InitSpec("kglm", lam=lam)], [0], kernel=k, x_in=x, x_out=xo)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():  # move off the kGLM point so that every weight matters
        for p in m.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    return m


def _loss(model, t, target):
    return ((model(t) - target) ** 2).sum()


@pytest.mark.parametrize("family,bwd", [("tanh", "forward"), ("bernoulli", "anderson"),
                                        ("categorical", "broyden")])
def test_implicit_gradient_passes_gradcheck(family, bwd):
    cls = family == "categorical"
    model = _model(family=family, bwd_solver=bwd)
    shape = (1, 3, N, 3) if cls else (1, 3, N)
    t = torch.rand(shape)
    params = list(model.parameters())
    inputs = (t.requires_grad_(),) + tuple(p.detach().clone().requires_grad_() for p in params)
    # gradcheck checks d model(t) / d(t, params) through a functional wrapper
    def wrapped(t_in, W, U, b, V, Q, c):
        return torch.func.functional_call(model, {"W": W, "U": U, "b": b, "V": V, "Q": Q, "c": c},
                                          (t_in,))
    assert torch.autograd.gradcheck(wrapped, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_implicit_matches_unrolled_after_many_iterations():
    t = torch.rand(1, 4, N)
    target = torch.randn(1, 4, M)
    grads = {}
    for method in ("implicit", "unrolled"):
        model = _model(method)
        model.zero_grad()
        _loss(model, t, target).backward()
        grads[method] = [p.grad.clone() for p in model.parameters()]
    for gi, gu in zip(grads["implicit"], grads["unrolled"]):
        assert torch.allclose(gi, gu, atol=1e-9, rtol=1e-7)


def test_onestep_error_shrinks_with_the_jacobian_norm():
    t = torch.rand(1, 4, N)
    target = torch.randn(1, 4, M)
    errors = []
    for lam_factor in (2.0, 20.0):  # ||J|| <= 1/lam_factor
        g = {}
        for method in ("implicit", "onestep"):
            model = _model(method, lam_factor=lam_factor)
            model.zero_grad()
            _loss(model, t, target).backward()
            g[method] = model.U.grad.clone()
        errors.append(float((g["implicit"] - g["onestep"]).norm() / g["implicit"].norm()))
    assert errors[1] < errors[0] / 3 and errors[0] > 1e-3


def test_backward_solve_statistics_are_recorded():
    model = _model()
    run = model.run(torch.rand(1, 2, N))
    ((run.out - torch.randn(1, 2, M)) ** 2).mean().backward()
    stats = run.backward.result
    assert stats is not None and bool(stats.converged.all())
    assert stats.iterations.min() >= 1


def test_analytic_vjp_matches_autograd():
    model = _model(family="categorical")
    t = torch.rand(1, 2, N, 3)
    z = torch.rand(1, 2, N, 3)
    p = model.members()
    inj = model._inject(p, t)

    def f(zz):
        return model.family.mean(model._recur(p, zz) + inj)

    u = torch.randn_like(z)
    _, vjp_auto = torch.func.vjp(f, z)
    pre = model._recur(p, z) + inj
    analytic = model._recur_adjoint(p, model.family.variance_operator(pre)(u))
    assert torch.allclose(vjp_auto(u)[0], analytic, atol=1e-12)
