"""THEORY.md section 4: convergence of the forward iteration; solver contract."""
import pytest
import torch

from deqexp.deq.solver_loop import relative_residual
from deqexp.deq.solvers import anderson, broyden, forward_iteration, get_solver
from deqexp.theory.families import get_family
from deqexp.theory.kernels import build_kernel

SOLVERS = [forward_iteration, anderson, broyden]


def _tanh_map(lam_factor, n=20, batch=6, members=2, seed=0):
    """z -> tanh(W z + U t) at kGLM weights with lambda = lam_factor * ||K||_2 (sup a'' = 1)."""
    x = torch.linspace(-3, 3, n)[:, None]
    k = build_kernel("se")(x)
    lam = lam_factor * float(torch.linalg.matrix_norm(k, 2))
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(members, batch, n, generator=g)
    fam = get_family("tanh")

    def f(z):
        return fam.mean(-(z @ k) / lam + (t @ k) / lam)

    return f, (members, batch, n), g


@pytest.mark.parametrize("solver", SOLVERS)
def test_contraction_converges_from_random_starts(solver):
    f, shape, g = _tanh_map(1.2)
    ends = []
    for _ in range(3):
        z0 = 5 * torch.randn(shape, generator=g)
        res = solver(f, z0, tol=1e-10, max_iter=300)
        assert bool(res.converged.all())
        assert relative_residual(f(res.z), res.z).max() <= 1e-9
        ends.append(res.z)
    # unique fixed point
    assert (ends[0] - ends[1]).abs().max() < 1e-8 and (ends[0] - ends[2]).abs().max() < 1e-8


def test_forward_iteration_converges_linearly_at_the_contraction_rate():
    f, shape, g = _tanh_map(2.0)
    # the residual after k steps, k = 4..15 (the result keeps no history: one solve per k)
    trace = torch.stack([forward_iteration(f, torch.zeros(shape), tol=1e-14, max_iter=k).residual[0, 0]
                         for k in range(4, 16)])
    ratios = trace[1:] / trace[:-1]
    assert (ratios <= 0.5 + 1e-6).all()  # ||J|| <= sup a'' ||K|| / lambda = 0.5


@pytest.mark.parametrize("solver", SOLVERS)
def test_divergence_is_flagged_not_raised(solver):
    def f(z):
        return torch.exp(z) + 2  # no fixed point: forward iterates overflow to inf, then NaN
    res = solver(f, torch.ones(2, 3, 4), tol=1e-6, max_iter=40)
    assert not bool(res.converged.any())
    assert res.iterations.max() == 40 and res.steps == 40


def test_nan_input_reports_not_converged():
    for solver in SOLVERS:
        res = solver(lambda z: z * float("nan"), torch.ones(1, 2, 3), tol=1e-4, max_iter=7)
        assert not bool(res.converged.any())
        assert res.steps <= 7


@pytest.mark.parametrize("solver", SOLVERS)
def test_per_sample_results_do_not_depend_on_the_batch(solver):
    f_all, shape, g = _tanh_map(1.1, batch=5, members=1)
    z0 = torch.randn(shape, generator=g)
    full = solver(f_all, z0, tol=1e-6, max_iter=100)
    # the same map restricted to sample 2 alone
    x = torch.linspace(-3, 3, shape[-1])[:, None]
    k = build_kernel("se")(x)
    lam = 1.1 * float(torch.linalg.matrix_norm(k, 2))
    t = torch.randn(1, 5, shape[-1], generator=torch.Generator().manual_seed(0))[:, 2:3]
    alone = solver(lambda z: torch.tanh(-(z @ k) / lam + (t @ k) / lam), z0[:, 2:3],
                   tol=1e-6, max_iter=100)
    assert torch.allclose(full.z[:, 2:3], alone.z, atol=1e-12)
    assert full.iterations[0, 2] == alone.iterations[0, 0]


def test_check_every_changes_cost_not_values():
    f, shape, g = _tanh_map(1.1)
    z0 = torch.randn(shape, generator=g)
    a = anderson(f, z0, tol=1e-6, max_iter=80, check_every=1)
    b = anderson(f, z0, tol=1e-6, max_iter=80, check_every=7)
    assert torch.equal(a.z, b.z) and torch.equal(a.iterations, b.iterations)
    assert b.steps >= a.steps


def test_accelerated_solvers_use_fewer_iterations_than_forward():
    f, shape, g = _tanh_map(1.01)
    z0 = torch.zeros(shape)
    its = {s.__name__: s(f, z0, tol=1e-8, max_iter=500).iterations.float().mean()
           for s in SOLVERS}
    assert its["anderson"] < its["forward_iteration"]
    assert its["broyden"] < its["forward_iteration"]


def test_damping_and_result_fields():
    f, shape, g = _tanh_map(1.5)
    res = forward_iteration(f, torch.zeros(shape), tol=1e-8, max_iter=300, damping=0.5)
    assert bool(res.converged.all())
    assert res.steps == int(res.iterations.max()) and res.outcome.shape == shape[:2]
    assert res.iterations.shape == shape[:2]


def test_unknown_solver():
    with pytest.raises(ValueError, match="choose one of"):
        get_solver("secant")


def test_solve_spd_matches_linalg_solve_and_flags_indefinite():
    from deqexp.deq.linalg import solve_spd

    g = torch.Generator().manual_seed(0)
    m = torch.randn(7, 4, 4, generator=g)
    a = m @ m.transpose(1, 2) + 0.1 * torch.eye(4)
    b = torch.randn(7, 4, generator=g)
    assert torch.allclose(solve_spd(a, b), torch.linalg.solve(a, b), atol=1e-10)
    bad = a.clone()
    bad[0] = -torch.eye(4)
    out = solve_spd(bad, b)
    assert torch.isnan(out[0]).all() and torch.isfinite(out[1:]).all()


@pytest.mark.parametrize("solver", [anderson, broyden])
def test_acceleration_does_not_depend_on_the_scale_of_the_problem(solver):
    # adjoint solves work on tiny vectors (gradients of a mean loss): the quasi-Newton
    # updates must not be switched off by an absolute threshold
    g = torch.Generator().manual_seed(0)
    a = torch.randn(12, 12, generator=g)
    a = 0.95 * a / torch.linalg.matrix_norm(a, 2)
    iters = []
    for scale in (1.0, 1e-9, 1e-30):
        b = scale * torch.randn(1, 3, 12, generator=g)
        res = solver(lambda u: u @ a.T + b, b, tol=1e-8, max_iter=200)
        assert bool(res.converged.all())
        iters.append(int(res.iterations.max()))
    assert max(iters) <= iters[0] + 2 and min(iters) >= iters[0] - 2
    assert iters[0] < 40  # forward iteration would need hundreds at this contraction rate


@pytest.mark.parametrize("solver", SOLVERS)
def test_member_stop_uses_the_whole_batch(solver):
    # stop="member": a member's samples stop together, on ||f(z) - z|| / ||f(z)|| over its batch;
    # the result equals solving that member's batch as one big vector
    f, shape, g = _tanh_map(1.2, batch=4, members=2)
    z0 = torch.randn(shape, generator=g) * torch.tensor([0.01, 1.0, 3.0, 10.0])[:, None]
    res = solver(f, z0, tol=1e-6, max_iter=200, stop="member")
    per_sample = solver(f, z0, tol=1e-6, max_iter=200, stop="sample")
    assert bool(res.converged.all()) and bool(per_sample.converged.all())
    assert len(per_sample.iterations[0].unique()) > 1  # samples alone stop at different steps
    for e in range(2):
        assert bool((res.iterations[e] == res.iterations[e, 0]).all())
        # the whole batch's residual reached the tolerance at the last step, not before
        before = solver(f, z0, tol=1e-6, max_iter=int(res.iterations[e, 0]) - 1, stop="member")
        assert res.residual[e, 0] <= 1e-6 < before.residual[e, 0]
    # the recorded residual is the whole-batch one
    r = relative_residual(f(z0), z0, "member")
    assert torch.allclose(r[0], ((f(z0)[0] - z0[0]).norm() / f(z0)[0].norm()).expand(4))


@pytest.mark.parametrize("name", ["forward", "anderson", "broyden", "gmres", "newton"])
def test_a_stop_asked_for_ends_every_solver_within_an_iteration(name):
    from deqexp.deq.interrupt import Interrupt, Interrupted

    a = 0.5 * torch.eye(4)
    calls = []

    def f(z):  # an affine contraction: every solver would converge, given the iterations
        calls.append(1)
        if len(calls) == 3:
            Interrupt.asked = True  # as the signal handler does, mid-solve
        return z @ a.T + 1.0

    try:
        with pytest.raises(Interrupted):
            get_solver(name)(f, torch.zeros(1, 2, 4), tol=0.0, max_iter=2000)  # a bug: no raise
    finally:
        Interrupt.asked = False
    assert len(calls) < 3 + 25  # one iteration (GMRES: one Krylov step of its restart) later
