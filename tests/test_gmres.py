"""GMRES for the implicit gradient's adjoint ``u = u J + g`` (issue 18 item 1): exact where the
iterative adjoint needs a contraction and fails (||J||_2 = 1.5), against dense solves."""
import pytest
import torch

from deqexp.deq.gradients import GradientSettings
from deqexp.deq.krylov import gmres
from deqexp.deq.models import ConvDEQ, DenseDEQ
from deqexp.deq.settings import SolverSettings
from deqexp.theory.families import get_family

E, B, D = 2, 3, 10


def _expansive(gen, shape, norm=1.5):
    """Random non-symmetric J with ||J||_2 = spectral radius = norm (> 1: iteration diverges):
    Q R Q^T, R 2x2 blocks of rotations by 0.5-2.5 rad scaled by radii up to ``norm``, so that
    I - J stays well conditioned."""
    q = torch.linalg.qr(torch.randn(*shape, D, D, generator=gen, dtype=torch.float64))[0]
    r = torch.zeros(*shape, D, D, dtype=torch.float64)
    radii = 0.3 + (norm - 0.3) * torch.rand(*shape, D // 2, generator=gen, dtype=torch.float64)
    radii[..., 0] = norm
    theta = 0.5 + 2.0 * torch.rand(*shape, D // 2, generator=gen, dtype=torch.float64)
    for k in range(D // 2):
        c, s = radii[..., k] * theta[..., k].cos(), radii[..., k] * theta[..., k].sin()
        r[..., 2 * k, 2 * k], r[..., 2 * k, 2 * k + 1] = c, -s
        r[..., 2 * k + 1, 2 * k], r[..., 2 * k + 1, 2 * k + 1] = s, c
    return q @ r @ q.transpose(-1, -2)


def test_gmres_solves_expansive_adjoints_per_member_and_sample_where_iteration_fails():
    gen = torch.Generator().manual_seed(3)
    jac = _expansive(gen, (E, B))                       # one J per (member, sample)
    g = torch.randn(E, B, D, generator=gen, dtype=torch.float64)
    eye = torch.eye(D, dtype=torch.float64)
    assert torch.allclose(torch.linalg.matrix_norm(jac, 2), torch.tensor(1.5, dtype=torch.float64))
    assert torch.linalg.cond(eye - jac).max() < 50
    f = lambda u: torch.einsum("ebi,ebij->ebj", u, jac) + g  # noqa: E731  u -> u J + g
    exact = torch.linalg.solve((eye - jac).transpose(-1, -2), g)   # u (I - J) = g
    got = gmres(f, g.clone(), tol=1e-12, max_iter=200, memory=6)   # restarts: 6 < D
    assert got.converged.all()
    assert ((got.z - exact).norm(dim=-1) / exact.norm(dim=-1)).max() < 1e-8
    plain = SolverSettings("forward", tol=1e-12, max_iter=200).solve(f, g.clone())
    assert not plain.converged.any()                      # the fixed-point adjoint cannot
    assert ((plain.z - exact).norm(dim=-1) / exact.norm(dim=-1)).min() > 1e-2


def test_gmres_frozen_samples_keep_their_solution():
    # a sample whose right-hand side is 0 is solved at once; the others still converge
    gen = torch.Generator().manual_seed(4)
    jac = _expansive(gen, (1, 2))
    g = torch.randn(1, 2, D, generator=gen, dtype=torch.float64)
    g[0, 0] = 0
    f = lambda u: torch.einsum("ebi,ebij->ebj", u, jac) + g  # noqa: E731
    got = gmres(f, torch.zeros_like(g), tol=1e-12, max_iter=100, memory=20)
    assert torch.equal(got.z[0, 0], torch.zeros(D, dtype=torch.float64)) and got.converged.all()


def _dense(seed):
    gen = torch.Generator().manual_seed(seed)
    m = DenseDEQ(D, D, 4, get_family("tanh"), ensemble=E, dtype=torch.float64,
                 solver=SolverSettings("anderson", 1e-12, 300),
                 gradient=GradientSettings("gmres", 1e-12, 300, memory=8))
    with torch.no_grad():  # random non-symmetric weights, W expansive: ||W||_2 = 1.5 / min a''
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5)
        m.W.copy_(_expansive(gen, (E,), norm=2.2))
    return m


def _conv(seed):
    gen = torch.Generator().manual_seed(seed)
    m = ConvDEQ(2, 3, get_family("tanh"), ensemble=E, readout="natural", dtype=torch.float64,
                solver=SolverSettings("anderson", 1e-12, 300),
                gradient=GradientSettings("gmres", 1e-12, 300, memory=10))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.6)
    return m


def _dense_reference_grads(model, t, target):
    """The implicit gradient with the adjoint solved densely: u = g (I - J)^-1 at z*."""
    out = model.run(t, readout=False)
    z = out.forward.z.detach()
    params = list(model.parameters())

    def step(z_in):
        pre = model._recur_inject(model.members(), z_in, model._inject(model.members(), t))
        return model.family.mean(pre)

    zz = z.detach().requires_grad_()
    loss = ((model._readout(model.members(), step(zz), t) - target) ** 2).sum()
    g_z, *g_direct = torch.autograd.grad(loss, [zz, *params], allow_unused=True)
    flat = z[0, 0].numel()
    jac = torch.autograd.functional.jacobian(step, z)            # (E,B,...,E,B,...)
    jac = jac.reshape(E * t.shape[1], flat, E * t.shape[1], flat)
    blocks = torch.stack([jac[i, :, i, :] for i in range(jac.shape[0])])  # each sample's own J
    u = torch.linalg.solve((torch.eye(flat, dtype=z.dtype) - blocks).transpose(-1, -2),
                           g_z.reshape(-1, flat))                # u (I - J) = g
    norms = torch.linalg.matrix_norm(blocks, 2)
    through = torch.autograd.grad(step(z), params, u.reshape(z.shape), allow_unused=True)
    grads = [(a if a is not None else 0) + (b if b is not None else 0) for a, b in zip(g_direct, through)]
    return grads, norms


@pytest.mark.parametrize("build, shape", [(_dense, (E, B, D)), (_conv, (E, B, 2, 5, 5))])
def test_gmres_backward_is_the_dense_implicit_gradient_at_expansive_jacobians(build, shape):
    model = build(0)
    gen = torch.Generator().manual_seed(9)
    t = torch.randn(*shape, generator=gen, dtype=torch.float64)
    out = model.run(t)
    assert out.forward.converged.all()
    target = torch.randn(out.out.shape, generator=gen, dtype=torch.float64)
    expect, norms = _dense_reference_grads(model, t, target)
    assert norms.max() > 1.2                              # expansive where the adjoint is solved
    model.zero_grad()
    out = model.run(t)
    ((out.out - target) ** 2).sum().backward()
    assert out.backward.result.converged.all()
    for p, e in zip(model.parameters(), expect):
        assert torch.allclose(p.grad, e, rtol=1e-8, atol=1e-10)
    # the fixed-point adjoint on the same model does not converge
    model.gradient = GradientSettings("forward", 1e-12, 300)
    model.zero_grad()
    out = model.run(t)
    ((out.out - target) ** 2).sum().backward()
    assert not out.backward.result.converged.all()


def test_gmres_is_refused_for_the_nonlinear_forward_solve():
    from deqexp.run.schemas import ConfigError
    from deqexp.run.validation import validate
    from tests.compose import compose_config

    validate(compose_config("solver.backward.name=gmres"))
    with pytest.raises(ConfigError, match="solver.backward.name=gmres"):
        validate(compose_config("solver.forward.name=gmres"))
    with pytest.raises(ValueError, match="affine maps only"):
        DenseDEQ(D, D, 4, get_family("tanh"), solver=SolverSettings("gmres"))


def test_newton_gmres_solves_an_expansive_forward_map_where_iteration_stalls():
    from deqexp.deq.krylov import newton
    from deqexp.deq.solver_loop import STALLED
    from deqexp.deq.solvers import forward_iteration

    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 8, 8, generator=g, dtype=torch.float64)  # non-symmetric, ||W||_2 = 3
    w = 3 * w / torch.linalg.matrix_norm(w, 2)[:, None, None]
    t = torch.randn(3, 5, 8, generator=g, dtype=torch.float64)

    def f(z):
        return torch.tanh(torch.einsum("eij,ebj->ebi", w, z) + 0.5 * t)

    res = newton(f, torch.zeros_like(t), tol=1e-10, max_iter=50)
    assert bool(res.converged.all()) and int(res.iterations.max()) < 30
    assert float((f(res.z) - res.z).abs().max()) < 1e-12   # the fixed-point equation itself
    plain = forward_iteration(f, torch.zeros_like(t), tol=1e-10, max_iter=200)
    assert not bool(plain.converged.any()) and bool((plain.outcome == STALLED).any())
    # per sample: one sample solved alone ends where it ended in the batch
    alone = newton(lambda z: torch.tanh(torch.einsum("eij,ebj->ebi", w[1:2], z) + 0.5 * t[1:2, 2:3]),
                   torch.zeros_like(t[1:2, 2:3]), tol=1e-10, max_iter=50)
    assert torch.allclose(alone.z[0, 0], res.z[1, 2], atol=1e-12)


@pytest.mark.parametrize("name, f, ends", [
    ("newton", lambda z: torch.exp(z) + 2, {"stalled", "nonfinite"}),  # no fixed point: overflow
    ("gmres", lambda z: z * float("inf") + 1.0, {"nonfinite"}),        # a non-finite operator
])
def test_krylov_divergence_is_recorded_not_raised(name, f, ends):
    # the least-squares step once went through LAPACK's lstsq, which raised on a NaN in float32
    from deqexp.deq.solver_loop import OUTCOMES
    from deqexp.deq.solvers import SOLVERS

    for max_iter in (2, 25):
        res = SOLVERS[name](f, torch.zeros(3, 5, 6, dtype=torch.float32), tol=1e-6, max_iter=max_iter)
        assert not bool(res.converged.any())
        assert {OUTCOMES[i] for i in res.outcome.unique().tolist()} <= ends


def test_newtons_jacobian_products_are_exact_and_fall_back_to_a_difference():
    from deqexp.deq.krylov import forward_difference, jacobian_vector

    g = torch.Generator().manual_seed(1)
    w = torch.randn(2, 6, 6, generator=g, dtype=torch.float64)
    z, v = (torch.randn(2, 3, 6, generator=g, dtype=torch.float64) for _ in range(2))
    f = lambda z: torch.tanh(torch.einsum("eij,ebj->ebi", w, z))  # noqa: E731
    exact = (1 - f(z) ** 2) * torch.einsum("eij,ebj->ebi", w, v)   # diag(tanh') W v
    assert torch.allclose(jacobian_vector(f, z, f(z), v), exact, atol=1e-13, rtol=0)
    assert torch.allclose(forward_difference(f, z, f(z), v), exact, atol=1e-5)

    class NoForwardMode(torch.autograd.Function):  # an op with no forward-mode rule
        @staticmethod
        def forward(ctx, x):
            return torch.tanh(x)

        @staticmethod
        def backward(ctx, grad):
            raise AssertionError("unused")

    h = lambda z: NoForwardMode.apply(torch.einsum("eij,ebj->ebi", w, z))  # noqa: E731
    got = jacobian_vector(h, z, h(z), v)
    assert torch.allclose(got, exact, atol=1e-5) and not torch.allclose(got, exact, atol=1e-12, rtol=0)
