"""THEORY.md sections 1-3 and 7: the kGLM-initialised DEQ solves the kGLM."""
import math

import numpy as np
import pytest
import torch
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import LogisticRegression, PoissonRegressor

from deqexp.theory.families import get_family
from deqexp.theory.kernels import build_kernel
from deqexp.theory.kglm import fit_kglm, stationarity
from tests.helpers import FAMILY_NAMES, contraction_lambda, kglm_deq, sample_data

N = 25
X_IN = torch.linspace(-3, 3, N, dtype=torch.float64)[:, None]
X_OUT = torch.linspace(-2.5, 3.5, 9, dtype=torch.float64)[:, None]
KERNELS = {"se": build_kernel("se", lengthscale=1.0),
           "matern32": build_kernel("matern32", lengthscale=0.8),
           "se*periodic": build_kernel("se*periodic", lengthscale=1.0, period=3.0,
                                       period_lengthscale=1.4)}


def _batch(t):
    return t[None, None]


@pytest.mark.parametrize("kname", sorted(KERNELS))
@pytest.mark.parametrize("fname", FAMILY_NAMES)
def test_deq_fixed_point_and_prediction_equal_exact_kglm(fname, kname):
    kernel, fam = KERNELS[kname], get_family(fname, trials=3, classes=3)
    k = kernel(X_IN)
    t = sample_data(fname, N)
    lam = contraction_lambda(fam, k)
    sol = fit_kglm(k, t, fam, lam)
    assert sol.converged
    assert stationarity(fam, k, t, sol.alpha, lam) < 1e-9
    model = kglm_deq(fname, kernel, X_IN, X_OUT, lam)
    with torch.no_grad():
        z = model.fixed_point(_batch(t))[0, 0]
        run = model.run(_batch(t))
        pred = run.out[0, 0]
    assert bool(run.forward.converged.all())
    theta_star, _ = sol.predict(kernel(X_OUT, X_IN))
    assert (z - sol.mean).abs().max() <= 1e-6
    assert (pred - theta_star).abs().max() <= 1e-6


def test_gaussian_closed_form():
    kernel = KERNELS["se"]
    k, ks = kernel(X_IN), kernel(X_OUT, X_IN)
    y = sample_data("gaussian", N)
    lam = 0.7  # below ||K||_2 ~ 9: forward iteration diverges here, Broyden does not
    z_closed = k @ torch.linalg.solve(k + lam * torch.eye(N), y)
    pred_closed = ks @ torch.linalg.solve(k + lam * torch.eye(N), y)
    sol = fit_kglm(k, y, get_family("gaussian"), lam)
    model = kglm_deq("gaussian", kernel, X_IN, X_OUT, lam, solver="broyden", max_iter=200)
    with torch.no_grad():
        z, pred = model.fixed_point(_batch(y))[0, 0], model(_batch(y))[0, 0]
    for a, b in ((sol.mean, z_closed), (z, z_closed), (sol.predict(ks)[0], pred_closed),
                 (pred, pred_closed)):
        assert (a - b).abs().max() <= 1e-9
    ridge = KernelRidge(alpha=lam, kernel="precomputed").fit(k.numpy(), y.numpy())
    assert np.abs(ridge.dual_coef_ - sol.alpha.numpy()).max() <= 1e-8


def _cholesky_features(k):
    return torch.linalg.cholesky(k).numpy()


def _sklearn_glm(fname, features, y, lam):
    """theta = L w from scikit-learn's penalised GLM on the Cholesky features (THEORY.md s7)."""
    if fname == "bernoulli":
        clf = LogisticRegression(C=1 / lam, fit_intercept=False, solver="newton-cholesky", tol=1e-14,
                                 max_iter=1000)
        return features @ clf.fit(features, y.astype(int)).coef_[0]
    reg = PoissonRegressor(alpha=lam / len(y), fit_intercept=False, solver="newton-cholesky",
                           tol=1e-14, max_iter=1000)
    return features @ reg.fit(features, y).coef_


# (family, lambda / (sup a'' ||K||)): the contraction regime and a weakly regularised one,
# where theta is large and the link far from linear (the DEQ needs Anderson there)
@pytest.mark.parametrize("fname, strength", [("bernoulli", 1.5), ("bernoulli", 0.2),
                                             ("poisson", 2.0), ("poisson", 0.5)])
def test_glm_families_match_scikit_learn(fname, strength):
    kernel = build_kernel("matern32", lengthscale=0.5)
    k = kernel(X_IN)
    fam = get_family(fname)
    y = sample_data(fname, N, seed=3)
    sup = fam.sup_variance if math.isfinite(fam.sup_variance) else 1.0
    lam = strength * sup * float(torch.linalg.matrix_norm(k, 2))
    theta_ref = torch.tensor(_sklearn_glm(fname, _cholesky_features(k), y.numpy(), lam))
    sol = fit_kglm(k, y, fam, lam)
    model = kglm_deq(fname, kernel, X_IN, X_OUT, lam)
    with torch.no_grad():
        run = model.run(_batch(y), readout=False)
    assert bool(run.forward.converged.all())
    assert (sol.theta - theta_ref).abs().max() <= 1e-8 * max(1.0, float(theta_ref.abs().max()))
    assert (run.out[0, 0] - fam.mean(theta_ref)).abs().max() <= 1e-8


def test_pre_activation_form_has_the_same_fixed_point():
    # theta = W a'(theta) + U t with the same W, U (THEORY.md section 2)
    kernel, fam = KERNELS["se"], get_family("bernoulli")
    k = kernel(X_IN)
    t = sample_data("bernoulli", N)
    lam = contraction_lambda(fam, k)
    sol = fit_kglm(k, t, fam, lam)
    theta = torch.zeros(N)
    for _ in range(500):
        theta = -k @ fam.mean(theta) / lam + k @ t / lam
    assert (theta - sol.theta).abs().max() <= 1e-9


def test_exact_solver_rejects_bad_input():
    with pytest.raises(ValueError, match="lambda must be > 0"):
        fit_kglm(torch.eye(3), torch.zeros(3), get_family("gaussian"), -1.0)
    with pytest.raises(ValueError, match="bernoulli"):
        fit_kglm(torch.eye(3), torch.tensor([0.0, 2.0, 1.0]), get_family("bernoulli"), 1.0)


@pytest.mark.parametrize("fname", ["bernoulli", "poisson", "tanh"])
def test_prior_mean_enters_as_the_biases(fname):
    # theta = m + K alpha: the DEQ's fixed point with b = m, and its readout with c = m
    from deqexp.deq.inits import InitSpec, initialise
    from deqexp.deq.models import DenseDEQ
    from deqexp.deq.settings import SolverSettings

    kernel, fam = KERNELS["se"], get_family(fname)
    k = kernel(X_IN)
    t = sample_data(fname, N, seed=5)
    lam = contraction_lambda(fam, k)
    sol = fit_kglm(k, t, fam, lam, prior_mean=0.4)
    assert sol.converged
    model = DenseDEQ(N, N, len(X_OUT), fam, dtype=torch.float64, readout="mean",
                     solver=SolverSettings("anderson", 1e-13, 2000))
    initialise(model, [InitSpec("kglm", lam=lam, prior_mean=0.4)], [0], kernel=kernel,
               x_in=X_IN, x_out=X_OUT)
    with torch.no_grad():
        z = model.fixed_point(_batch(t))[0, 0]
        mean_pred = model(_batch(t))[0, 0]
    assert (z - sol.mean).abs().max() <= 1e-6
    # readout="mean" is a'(f*(x*)), the predicted mean at the new locations
    assert (mean_pred - sol.predict(kernel(X_OUT, X_IN), 0.4)[1]).abs().max() <= 1e-6
    assert (sol.mean - fit_kglm(k, t, fam, lam).mean).abs().max() > 1e-3  # the prior mean matters


def test_backward_operator_is_the_kglm_hessian():
    # THEORY.md section 6: at the kGLM init, I - J = H K / lambda with H the Hessian of the
    # objective in theta, H = diag(a''(theta)) + lambda K^-1
    kernel, fam = KERNELS["matern32"], get_family("bernoulli")
    k = kernel(X_IN)
    t = sample_data("bernoulli", N, seed=2)
    lam = contraction_lambda(fam, k)
    sol = fit_kglm(k, t, fam, lam)
    model = kglm_deq("bernoulli", kernel, X_IN, X_OUT, lam)
    p = model.members()
    inj = model._inject(p, _batch(t))[0, 0]

    def f(z):
        return fam.mean(model._recur(p, z[None, None])[0, 0] + inj)

    jac = torch.autograd.functional.jacobian(f, sol.mean)
    k_inv = torch.linalg.inv(k)

    def objective_in_theta(theta):
        return fam.log_partition(theta).sum() - (t * theta).sum() + 0.5 * lam * theta @ k_inv @ theta

    hess = torch.autograd.functional.hessian(objective_in_theta, sol.theta)
    lhs = torch.eye(N) - jac
    rhs = hess @ k / lam
    assert torch.allclose(lhs, rhs, atol=1e-6 * float(rhs.abs().max()))


@pytest.mark.parametrize("fname, scale", [("gaussian", 0.9), ("gaussian", 1.1), ("bernoulli", 0.3),
                                          ("tanh", 1.25)])
def test_contraction_factor_predicts_forward_iteration(fname, scale):
    # THEORY.md section 4: sup a'' ||W||_2 < 1 -> forward iteration converges; for the linear
    # (gaussian) map a factor above 1 makes it diverge from a generic start
    from deqexp.theory.kglm import contraction_factor

    kernel, fam = KERNELS["se"], get_family(fname)
    k = kernel(X_IN)
    lam = scale * float(torch.linalg.matrix_norm(k, 2))
    factor = contraction_factor(fam, float(torch.linalg.matrix_norm(k, 2)) / lam)
    assert factor == pytest.approx(fam.sup_variance / scale)
    model = kglm_deq(fname, kernel, X_IN, X_OUT, lam, solver="forward", tol=1e-10, max_iter=3000)
    with torch.no_grad():
        run = model.run(_batch(sample_data(fname, N)), readout=False)
    if factor < 1:
        assert bool(run.forward.converged.all())
    elif fname == "gaussian":
        assert not bool(run.forward.converged.all())
