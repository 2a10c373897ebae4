import math

import pytest
import torch

from deqexp.theory.families import FamilyDataError, get_family
from tests.helpers import FAMILY_NAMES, sample_data

THETA = torch.tensor([-1000.0, -30.0, -2.0, -0.3, 0.0, 0.7, 3.0, 30.0, 1000.0], dtype=torch.float64)


def _scalar_families():
    return [n for n in FAMILY_NAMES if n != "categorical"]


@pytest.mark.parametrize("name", _scalar_families())
def test_mean_and_variance_are_derivatives_of_a(name):
    fam = get_family(name, trials=3)
    theta = torch.linspace(-6, 6, 41).requires_grad_()
    a = fam.log_partition(theta).sum()
    (da,) = torch.autograd.grad(a, theta, create_graph=True)
    assert torch.allclose(da, fam.mean(theta), atol=1e-12)
    (d2a,) = torch.autograd.grad(da.sum(), theta)
    ok = theta.detach().abs() > 1e-9  # relu's a'' jumps at 0
    assert torch.allclose(d2a[ok], fam.variance(theta.detach())[ok], atol=1e-12)


@pytest.mark.parametrize("name", _scalar_families())
def test_no_overflow_up_to_1e3(name):
    fam = get_family(name, trials=3)
    theta = THETA.clamp(max=700) if name == "poisson" else THETA  # exp(1000) is inf in float64
    for f in (fam.log_partition, fam.mean, fam.variance):
        assert torch.isfinite(f(theta)).all(), (name, f)


@pytest.mark.parametrize("name", _scalar_families())
def test_sup_variance(name):
    fam = get_family(name, trials=3)
    expected = {"gaussian": 1, "bernoulli": 0.25, "binomial": 0.75, "poisson": math.inf,
                "spin": 1, "tanh": 1, "relu": 1}[name]
    assert fam.sup_variance == expected
    if math.isfinite(expected):
        assert fam.variance(torch.linspace(-20, 20, 4001)).max() <= expected + 1e-15
        assert fam.variance(torch.linspace(-20, 20, 4001)).max() >= expected - 1e-3


def test_closed_forms():
    th = torch.tensor([-2.0, 0.5, 3.0])
    assert torch.allclose(get_family("spin").log_partition(th), torch.log(2 * torch.cosh(th)))
    assert torch.allclose(get_family("bernoulli").log_partition(th), torch.log1p(torch.exp(th)))
    assert torch.allclose(get_family("binomial", trials=5).mean(th), 5 / (1 + torch.exp(-th)))
    assert torch.allclose(get_family("relu").log_partition(th), torch.clamp(th, min=0) ** 2 / 2)
    # spin's a at |theta| = 1000 equals |theta| + log(1) to machine precision
    assert get_family("spin").log_partition(torch.tensor([1000.0])).item() == 1000.0


def test_categorical_softmax_and_hessian():
    fam = get_family("categorical", classes=4)
    theta = torch.tensor([[1000.0, -1000.0, 0.0, 3.0], [0.1, 0.2, -0.3, 0.0]])
    assert torch.isfinite(fam.log_partition(theta)).all()
    assert torch.allclose(fam.mean(theta).sum(-1), torch.ones(2))
    th = theta[1].clone().requires_grad_()
    hess = torch.autograd.functional.hessian(lambda t: fam.log_partition(t), th)
    v = torch.randn(4)
    assert torch.allclose(fam.variance_operator(th.detach())(v), hess @ v, atol=1e-12)
    evals = torch.linalg.eigvalsh(hess)
    assert evals.max() <= 0.5


def test_labels():
    assert get_family("relu").likelihood is False
    assert "M-estimator" in get_family("relu").describe()
    assert get_family("tanh").likelihood is False
    assert get_family("bernoulli").likelihood is True


@pytest.mark.parametrize("name,bad", [("bernoulli", [0.0, 0.5]), ("spin", [1.0, 0.0]),
                                      ("poisson", [-1.0, 2.0]), ("binomial", [4.0, 1.0])])
def test_validation_rejects_data_outside_support(name, bad):
    with pytest.raises(FamilyDataError, match=name):
        get_family(name, trials=3).validate(torch.tensor(bad))


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_validation_accepts_own_support(name):
    get_family(name, trials=3, classes=3).validate(sample_data(name, 20))


def test_unknown_family():
    with pytest.raises(ValueError, match="choose one of"):
        get_family("student")


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_in_place_mean_equals_mean(name):
    fam = get_family(name, trials=3, classes=3)
    theta = torch.randn(4, 6, 3) * 3
    assert torch.allclose(fam.mean_(theta.clone()), fam.mean(theta), atol=1e-15)
    assert torch.allclose(get_family("spin").mean(theta), torch.tanh(theta), atol=1e-15)
