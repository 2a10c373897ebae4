import math

import numpy as np
import pytest
import torch
from sklearn.gaussian_process import kernels as sk
from sklearn.metrics.pairwise import polynomial_kernel

from deqexp.deq.operators import conv
from deqexp.theory.filters import (
    grid_kernel_matrix,
    grid_locations,
    grid_min_eigenvalue,
    multichannel_filters,
    window_filter,
)
from deqexp.theory.kernels import build_kernel

X = torch.tensor(np.random.default_rng(0).normal(size=(12, 2)))
Y = torch.tensor(np.random.default_rng(1).normal(size=(7, 2)))


@pytest.mark.parametrize("name,params,ref", [
    ("se", dict(lengthscale=0.7, variance=2.0), 2.0 * sk.RBF(0.7)),
    ("matern12", dict(lengthscale=1.3), sk.Matern(1.3, nu=0.5)),
    ("matern32", dict(lengthscale=1.3), sk.Matern(1.3, nu=1.5)),
    ("matern52", dict(lengthscale=0.4), sk.Matern(0.4, nu=2.5)),
    ("linear", dict(variance=1.0, offset=0.25), sk.DotProduct(0.5)),
])
def test_gram_matrices_match_scikit_learn(name, params, ref):
    k = build_kernel(name, **params)
    assert torch.allclose(k(X, Y), torch.tensor(ref(X.numpy(), Y.numpy())), atol=1e-12)


def test_periodic_matches_scikit_learn_in_1d():
    # in d > 1 deqexp's periodic kernel is the product over dimensions (PSD), sklearn's uses |d|
    k = build_kernel("periodic", period_lengthscale=0.9, period=2.5)
    x, y = X[:, :1], Y[:, :1]
    ref = sk.ExpSineSquared(0.9, 2.5)(x.numpy(), y.numpy())
    assert torch.allclose(k(x, y), torch.tensor(ref), atol=1e-12)


def test_polynomial_matches_scikit_learn():
    k = build_kernel("polynomial", variance=0.5, offset=1.5, degree=3)
    ref = polynomial_kernel(X.numpy(), Y.numpy(), degree=3, gamma=0.5, coef0=1.5)
    assert torch.allclose(k(X, Y), torch.tensor(ref), atol=1e-10)


def test_e1_kernel_is_the_papers_product():
    k = build_kernel("se*periodic", lengthscale=1.0, period=math.pi, period_lengthscale=math.sqrt(2))
    x = torch.linspace(-6, 6, 25)
    d = x[:, None] - x[None, :]
    assert torch.allclose(k(x), torch.exp(-d**2 / 2) * torch.exp(-torch.sin(d) ** 2), atol=1e-12)


def test_kernels_are_psd_and_report_min_eigenvalue():
    x = torch.linspace(0, 5, 30)
    for name in ("se", "matern12", "matern32", "matern52", "periodic", "se*periodic"):
        assert build_kernel(name).min_eigenvalue(x) > -1e-10
    assert build_kernel("se").min_eigenvalue(x) == pytest.approx(
        float(torch.linalg.eigvalsh(build_kernel("se")(x))[0]), abs=1e-12)


def test_unknown_kernel():
    with pytest.raises(ValueError, match="unknown kernel 'rbf'"):
        build_kernel("rbf")


def test_windowed_kernel_eigenvalues_from_theory():
    # THEORY.md section 5: 12x12 grid, r = 2, length-scale 2
    se = build_kernel("se", lengthscale=2.0)
    trunc = grid_kernel_matrix(window_filter(se, 2, "truncate"), 12, 12)
    tri = grid_kernel_matrix(window_filter(se, 2, "triangle"), 12, 12)
    assert float(torch.linalg.eigvalsh(trunc)[0]) == pytest.approx(-1.68, abs=0.01)
    assert float(torch.linalg.eigvalsh(tri)[0]) == pytest.approx(0.0335, abs=1e-3)


def test_grid_matrix_is_the_windowed_kernel_on_pixels():
    se = build_kernel("se", lengthscale=1.5)
    x = grid_locations(7, 6)
    d = x[:, None] - x[None, :]
    inside = (d.abs() <= 2).all(-1)
    tri = ((1 - d.abs() / 3).clamp_min(0)).prod(-1)
    expected = torch.exp(-(d**2).sum(-1) / (2 * 1.5**2)) * tri * inside
    assert torch.allclose(grid_kernel_matrix(window_filter(se, 2), 7, 6), expected, atol=1e-14)


@pytest.mark.parametrize("padding", ["zeros", "circular"])
def test_grid_matrix_equals_the_convolution(padding):
    filt = torch.randn(2, 3, 5, 5)
    h, w = 6, 7
    dense = grid_kernel_matrix(filt, h, w, padding)
    x = torch.randn(3, h, w)
    out = conv(x[None], filt, padding)[0]
    assert torch.allclose(dense @ x.reshape(-1), out.reshape(-1), atol=1e-12)


def test_multichannel_pd_construction_is_psd_and_paper_flagged():
    ls = [0.3, 1.7, 3.5]
    pd = grid_kernel_matrix(multichannel_filters(ls, 2, coupling=0.8), 10, 10)
    assert torch.allclose(pd, pd.T)
    assert float(torch.linalg.eigvalsh(pd)[0]) > -1e-10
    paper = grid_kernel_matrix(multichannel_filters(ls, 2, construction="paper"), 10, 10)
    assert torch.allclose(paper, paper.T)
    assert float(torch.linalg.eigvalsh(paper)[0]) < -0.1  # length-scales above ~1: indefinite
    # the report function says the same
    assert grid_min_eigenvalue(multichannel_filters(ls, 2, construction="paper"), 10, 10) < -0.1
    assert grid_min_eigenvalue(multichannel_filters(ls, 2, coupling=0.8), 10, 10) > -1e-10
    # one channel: truncation keeps a kernel for short length-scales, not for long ones
    se = build_kernel("se", lengthscale=0.8)
    assert grid_min_eigenvalue(window_filter(se, 2, "truncate")[None, None], 10, 10) > 0
    se = build_kernel("se", lengthscale=2.0)
    assert grid_min_eigenvalue(window_filter(se, 2, "truncate")[None, None], 10, 10) < -1


def test_same_direction_kernel_splits_standardised_positions():
    x = torch.arange(6, dtype=torch.float64)
    x = ((x - x.mean()) / x.std())[:, None]
    k = build_kernel("same_direction")(x)
    expected = torch.zeros(6, 6)
    expected[:3, :3] = 1
    expected[3:, 3:] = 1
    assert torch.equal(k, expected)
    assert build_kernel("same_direction").min_eigenvalue(x) > -1e-12
