"""The ensemble axis: E members behave exactly like E separate layers."""
import torch

from deqexp.deq.gradients import GradientSettings
from deqexp.deq.inits import InitSpec, initialise
from deqexp.deq.models import ConvDEQ, DenseDEQ
from deqexp.deq.settings import SolverSettings
from deqexp.run.optimizers import MemberAdam
from deqexp.theory.families import get_family
from deqexp.theory.kernels import build_kernel

N, M = 10, 6
X = torch.linspace(-2, 2, N, dtype=torch.float64)[:, None]
XO = torch.linspace(-1, 3, M, dtype=torch.float64)[:, None]
SPECS = [InitSpec("kglm", scale=1.0), InitSpec("random", scale=None), InitSpec("naive", scale=0.9),
         InitSpec("random", scale=5.0)]


BACKWARD = GradientSettings(tol=1e-10, max_iter=50)


def _dense(specs, seeds):
    m = DenseDEQ(N, N, M, get_family("tanh"), ensemble=len(specs), dtype=torch.float64,
                 solver=SolverSettings("forward", 1e-8, 60), gradient=BACKWARD)
    initialise(m, specs, seeds, kernel=build_kernel("se"), x_in=X, x_out=XO)
    return m


def _conv(specs, seeds):
    m = ConvDEQ(2, 5, get_family("relu"), ensemble=len(specs), dtype=torch.float64,
                solver=SolverSettings("anderson", 1e-8, 60), gradient=BACKWARD)
    initialise(m, specs, seeds, image_size=(8, 8))
    return m


def _grads(model, t, target):
    model.zero_grad()
    run = model.run(t)
    # sum of per-member mean losses: each member's gradient is its own loss's gradient
    loss = ((run.out - target) ** 2).flatten(1).mean(1).sum()
    loss.backward()
    return run.out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, run


def _check(builder, t, target, specs):
    seeds = list(range(len(specs)))
    out_all, g_all, _ = _grads(builder(specs, seeds), t, target)
    for e, (spec, seed) in enumerate(zip(specs, seeds)):
        te = t[e : e + 1] if t.shape[0] > 1 else t
        out_e, g_e, _ = _grads(builder([spec], [seed]), te, target[e : e + 1])
        assert (out_all[e] - out_e[0]).abs().max() <= 1e-6
        for name in g_e:
            assert (g_all[name][e] - g_e[name][0]).abs().max() <= 1e-6, name


def test_dense_ensemble_equals_separate_layers_per_member_data():
    t = torch.randn(len(SPECS), 5, N)
    _check(_dense, t, torch.randn(len(SPECS), 5, M), SPECS)


def test_dense_ensemble_with_shared_data():
    t = torch.randn(1, 5, N)
    _check(_dense, t, torch.randn(len(SPECS), 5, M), SPECS)


def test_conv_ensemble_equals_separate_layers():
    specs = [InitSpec("kglm", scale=0.5), InitSpec("random", scale=1.0), InitSpec("kglm", scale=0.9)]
    t = torch.rand(1, 3, 2, 8, 8)
    _check(_conv, t, torch.rand(len(specs), 3, 2, 8, 8), specs)


def test_member_groups_give_the_same_outputs_gradients_and_statistics():
    t = torch.randn(len(SPECS), 5, N)
    target = torch.randn(len(SPECS), 5, M)
    whole = _dense(SPECS, list(range(len(SPECS))))
    out_w, g_w, run_w = _grads(whole, t, target)
    grouped = _dense(SPECS, list(range(len(SPECS))))
    grouped.member_chunk = 3  # groups of 3 and 1
    out_g, g_g, run_g = _grads(grouped, t, target)
    assert torch.allclose(out_w, out_g, atol=1e-12)
    for name in g_w:
        assert torch.allclose(g_w[name], g_g[name], atol=1e-12), name
    fw, fg = run_w.forward, run_g.forward
    assert torch.equal(fw.iterations, fg.iterations) and fg.outcome.shape[0] == len(SPECS)
    bw, bg = run_w.backward.result, run_g.backward.result
    assert torch.equal(bw.iterations, bg.iterations)


def test_frozen_members_are_held_by_the_optimiser():
    specs = [InitSpec("kglm"), InitSpec("random", freeze_q=True)]
    m = _dense(specs, [0, 1])
    assert torch.equal(m.Q[1], torch.zeros(M, N))
    q0 = m.Q.detach().clone()
    _grads(m, torch.randn(2, 3, N), torch.randn(2, 3, M))
    assert m.Q.grad[1].abs().max() > 0  # the gradient exists: the optimiser is what holds Q
    MemberAdam(m.parameters(), lr=0.1).step(m.hold_masks())
    assert torch.equal(m.Q[1], q0[1]) and not torch.equal(m.Q[0], q0[0])
