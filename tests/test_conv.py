"""THEORY.md section 5: convolutions are kernels on a pixel grid; operator norms."""
import pytest
import torch

from deqexp.deq import operators
from deqexp.deq.inits import InitSpec, initialise
from deqexp.deq.models import ConvDEQ
from deqexp.deq.settings import SolverSettings
from deqexp.theory.families import get_family
from deqexp.theory.filters import grid_kernel_matrix, multichannel_filters, window_filter
from deqexp.theory.kernels import build_kernel
from deqexp.theory.kglm import fit_kglm


def _conv_model(family, channels, h, w, padding, spec, solver="anderson"):
    m = ConvDEQ(channels, 5, get_family(family), padding=padding, readout="natural",
                solver=SolverSettings(solver, 1e-13, 1000), dtype=torch.float64)
    initialise(m, [spec], [3], image_size=(h, w))
    return m


@pytest.mark.parametrize("padding", ["zeros", "circular"])
@pytest.mark.parametrize("family", ["gaussian", "bernoulli", "relu"])
def test_conv_kglm_deq_equals_dense_kglm(padding, family):
    c, h, w = 2, 6, 7
    spec = InitSpec("kglm", scale=0.8, coupling=0.5)
    model = _conv_model(family, c, h, w, padding, spec)
    gen = torch.Generator().manual_seed(0)
    t = torch.rand(1, 1, c, h, w, generator=gen)
    if family == "bernoulli":
        t = (t > 0.5).double()
    # the equivalent dense kernel: the init's input filters (K / lambda) as a matrix
    filt = model.U[0].detach()
    k_scaled = grid_kernel_matrix(filt, h, w, padding)  # = K / lambda
    # K / lambda with lambda = ||K|| / scale  =>  ||K/lambda|| = scale
    assert float(torch.linalg.matrix_norm(k_scaled, 2)) == pytest.approx(0.8, rel=1e-6)
    sol = fit_kglm(k_scaled, t.reshape(-1), get_family(family), 1.0)  # K/lam with lambda 1
    with torch.no_grad():
        z = model.fixed_point(t)
        pred = model(t)
    assert (z.reshape(-1) - sol.mean).abs().max() <= 1e-6
    assert (pred.reshape(-1) - sol.theta).abs().max() <= 1e-6


def test_conv_norms_equal_dense_matrix_norms():
    filt = torch.randn(3, 2, 5, 5)
    h, w = 7, 8
    for padding, method in (("circular", "exact"), ("zeros", "exact")):
        dense = grid_kernel_matrix(filt, h, w, padding)
        expected = float(torch.linalg.matrix_norm(dense, 2))
        got = float(operators.conv_norm(filt, h, w, padding, method))
        assert got == pytest.approx(expected, rel=1e-6), padding
    zero_exact = float(torch.linalg.matrix_norm(grid_kernel_matrix(filt, h, w, "zeros"), 2))
    assert float(operators.conv_norm(filt, h, w, "zeros", "bound")) >= zero_exact - 1e-9


def test_theory_example_dft_versus_dense():
    # 6x6 image, r = 2, truncated squared exponential with length-scale 1.5
    filt = window_filter(build_kernel("se", lengthscale=1.5), 2, "truncate")[None, None]
    dft = float(operators.conv_norm(filt, 6, 6, "zeros", "dft"))
    dense = float(torch.linalg.matrix_norm(grid_kernel_matrix(filt, 6, 6, "zeros"), 2))
    assert dft == pytest.approx(11.7, abs=0.05)
    assert dense == pytest.approx(9.0, abs=0.05)
    assert float(operators.conv_norm(filt, 6, 6, "zeros", "exact")) == pytest.approx(dense, rel=1e-6)


def test_conv_member_filters_are_kernels_or_flagged():
    spec = InitSpec("kglm", scale=1.0, construction="pd", coupling=0.3)
    model = _conv_model("relu", 3, 8, 8, "zeros", spec)
    k = grid_kernel_matrix(model.U[0].detach(), 8, 8)
    assert float(torch.linalg.eigvalsh(k)[0]) > -1e-10
    assert torch.allclose(model.W[0], -model.U[0]) and torch.allclose(model.V[0], model.W[0])
    paper = multichannel_filters([2.0, 3.0, 3.5], 2, construction="paper")
    assert float(torch.linalg.eigvalsh(grid_kernel_matrix(paper, 8, 8))[0]) < 0


def test_random_conv_init_scale():
    spec = InitSpec("random", scale=19.0 * 0.5)
    model = _conv_model("relu", 3, 8, 8, "zeros", spec)
    assert float(model.W.detach().std()) == pytest.approx(0.5, rel=0.1)


def test_conv_adjoint_is_the_transpose():
    filt = torch.randn(2, 3, 5, 5)
    for padding in ("zeros", "circular"):
        dense = grid_kernel_matrix(filt, 6, 6, padding)
        adj = grid_kernel_matrix(operators.adjoint_filters(filt), 6, 6, padding)
        assert torch.allclose(adj, dense.T, atol=1e-12)


def test_dft_bound_is_an_upper_bound_over_many_filters():
    # THEORY.md section 5: the DFT over the image enlarged by r bounds the zero-padded norm;
    # over the image size alone it does not (it undercuts for some filters)
    gen = torch.Generator().manual_seed(0)
    filters = torch.randn(300, 1, 1, 5, 5, generator=gen, dtype=torch.float64)
    dense = torch.stack([torch.linalg.matrix_norm(grid_kernel_matrix(f, 6, 6, "zeros"), 2) for f in filters])
    bound = operators.conv_norm(filters, 6, 6, "zeros", "bound")
    assert bool((bound >= dense * (1 - 1e-12)).all())
    assert bool((operators.conv_norm(filters, 6, 6, "zeros", "dft") < dense * (1 - 1e-6)).any())


@pytest.mark.parametrize("padding", ["zeros", "circular"])
def test_conv_implicit_gradient_passes_gradcheck_at_random_filters(padding):
    # random, non-symmetric filters: the adjoint convolution matters (at the kGLM init the
    # filters are self-adjoint and a wrong adjoint goes unnoticed)
    from deqexp.deq.gradients import GradientSettings

    torch.manual_seed(1)
    model = ConvDEQ(2, 3, get_family("tanh"), padding=padding, readout="natural",
                    solver=SolverSettings("forward", 1e-14, 300),
                    gradient=GradientSettings("forward", 1e-14, 300), dtype=torch.float64)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.15 * torch.randn(p.shape))
    t = torch.rand(1, 2, 2, 4, 4)
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in model.parameters())

    def wrapped(t_in, *ps):
        return torch.func.functional_call(model, dict(zip(names, ps)), (t_in,))

    # fast mode: random directions u, v compared as v^T J u (a wrong adjoint changes every such
    # product), one solve pair per input instead of one per entry
    assert torch.autograd.gradcheck(wrapped, (t.requires_grad_(), *params), eps=1e-6, atol=1e-6, rtol=1e-5,
                                    fast_mode=True)
