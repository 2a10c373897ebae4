"""The initialisations: lambda from the scale, per-member seeds, the random init's bound and
which parameters train (the review's surviving mutations M2, M6, M7, M8)."""
import math

import pytest
import torch

from deqexp.deq import operators
from deqexp.deq.inits import InitSpec, conv_member, dense_member, initialise
from deqexp.deq.models import ConvDEQ, DenseDEQ
from deqexp.theory.families import get_family
from deqexp.theory.kernels import build_kernel

N = 30
X = torch.linspace(-3, 3, N, dtype=torch.float64)[:, None]
KERNEL = build_kernel("se*periodic", lengthscale=1.0, period=math.pi, period_lengthscale=math.sqrt(2))


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", ["kglm", "naive"])
@pytest.mark.parametrize("scale", [0.3, 1.0, 2.5])
def test_dense_scale_is_the_recurrent_norm(name, scale):
    w = dense_member(InitSpec(name, scale=scale), KERNEL, X, X, N, _gen())
    assert float(torch.linalg.matrix_norm(w["W"], 2)) == pytest.approx(scale, rel=1e-10)
    assert torch.allclose(w["U"], -w["W"])


@pytest.mark.parametrize("method", ["exact", "dft", "bound"])
def test_conv_scale_is_the_recurrent_operator_norm(method):
    w = conv_member(InitSpec("kglm", scale=0.7), 2, 5, (10, 10), "zeros", _gen(), norm_method=method)
    assert float(operators.conv_norm(w["W"], 10, 10, "zeros", method)) == pytest.approx(0.7, rel=1e-6)


def test_explicit_lambda_wins_and_gives_the_kglm_weights():
    lam = 3.0
    w = dense_member(InitSpec("kglm", lam=lam), KERNEL, X, X[:7] + 0.3, N, _gen())
    assert torch.allclose(w["W"], -KERNEL(X) / lam) and torch.allclose(w["Q"], KERNEL(X[:7] + 0.3, X) / lam)


@pytest.mark.parametrize("layer", ["dense", "conv"])
def test_each_member_draws_from_its_own_seed(layer):
    def draw(seed, global_seed):
        torch.manual_seed(global_seed)  # the global RNG must not matter
        if layer == "dense":
            return dense_member(InitSpec("random"), KERNEL, X, X, N, _gen(seed))["W"]
        return conv_member(InitSpec("kglm"), 3, 5, (12, 12), "zeros", _gen(seed))["W"]
    assert torch.equal(draw(1, 10), draw(1, 20))
    assert not torch.allclose(draw(1, 10), draw(2, 10))


def test_random_init_is_the_framework_default():
    # nn.Linear / nn.Conv2d: U(-1/sqrt(fan_in), 1/sqrt(fan_in)); a wrong bound (e.g. 1/fan_in)
    # or distribution fails here
    w = dense_member(InitSpec("random", scale=None), KERNEL, X, X, 400, _gen())
    bound = 1 / math.sqrt(400)
    w_all = torch.cat([w["W"].flatten(), w["V"].flatten()])
    assert w_all.abs().max() <= bound and w_all.abs().max() > 0.99 * bound
    assert w_all.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    c = conv_member(InitSpec("random", scale=None), 8, 5, (12, 12), "zeros", _gen())["W"]
    cb = 1 / math.sqrt(8 * 25)
    assert c.abs().max() <= cb and c.abs().max() > 0.99 * cb


def test_random_with_a_scale_draws_gaussians_of_that_size():
    w = dense_member(InitSpec("random", scale=3.8, random_divisor=19.0), KERNEL, X, X, 300, _gen())["W"]
    assert w.std().item() == pytest.approx(0.2, rel=0.02) and abs(w.mean().item()) < 0.01


def test_freeze_q_fixes_only_the_random_inits_q():
    specs = [InitSpec(n, freeze_q=True) for n in ("kglm", "naive", "random")]
    m = DenseDEQ(N, N, N, get_family("tanh"), ensemble=3, dtype=torch.float64)
    initialise(m, specs, [0, 0, 0], kernel=KERNEL, x_in=X, x_out=X)
    assert torch.equal(m.frozen["Q"], torch.tensor([False, False, True]))
    assert m.Q[1].abs().max() == 0 and m.Q[2].abs().max() == 0 and m.Q[0].abs().max() > 0
    c = ConvDEQ(2, 3, get_family("relu"), ensemble=2, dtype=torch.float64)
    initialise(c, [InitSpec("kglm", freeze_q=True), InitSpec("random", freeze_q=True)], [0, 0],
               image_size=(8, 8))
    assert torch.equal(c.frozen["Q"], torch.tensor([False, True])) and c.Q[1].abs().max() == 0


def test_initialise_gives_each_member_its_seed():
    m = DenseDEQ(N, N, N, get_family("tanh"), ensemble=3, dtype=torch.float64)
    initialise(m, [InitSpec("random")] * 3, [5, 6, 5], kernel=KERNEL, x_in=X, x_out=X)
    assert torch.equal(m.W[0], m.W[2]) and not torch.allclose(m.W[0], m.W[1])
    alone = DenseDEQ(N, N, N, get_family("tanh"), dtype=torch.float64)
    initialise(alone, [InitSpec("random")], [6], kernel=KERNEL, x_in=X, x_out=X)
    assert torch.equal(alone.W[0], m.W[1])
