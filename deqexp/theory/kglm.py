"""The exact kGLM solver: the DEQ's inner problem solved directly (THEORY.md section 1).

Minimises ``J(alpha) = sum_i [a(theta_i) - T(y_i) theta_i] + lambda/2 alpha^T K alpha``
with ``theta = m + K alpha`` (``m`` the prior mean at the data, 0 by default) by damped
Newton (IRLS) in float64. The Newton system
``K (D K + lambda I) delta = -K r`` with ``r = a'(theta) - T(y) + lambda alpha``
is solved as ``(D K + lambda I) delta = -r``; ``D`` is ``diag(a'')`` (C x C
blocks for categorical). It is the reference the DEQ is checked against.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .families import Family

Tensor = torch.Tensor


@dataclass
class KGLMSolution:
    """The fitted kGLM: coefficients, natural parameters and means at the data locations."""

    alpha: Tensor
    theta: Tensor
    mean: Tensor
    objective: float
    iterations: int
    converged: bool
    lam: float
    family: Family

    def predict(self, k_star: Tensor, prior_mean: float | Tensor = 0.0) -> tuple[Tensor, Tensor]:
        """Natural parameters ``m* + K* alpha`` and means ``a'(.)`` of them at new locations."""
        theta = prior_mean + k_star.to(self.alpha.dtype) @ self.alpha
        return theta, self.family.mean(theta)


def objective(family: Family, k: Tensor, t: Tensor, alpha: Tensor, lam: float,
              prior_mean: float | Tensor = 0.0) -> Tensor:
    """``J(alpha)``, the regularised negative log-likelihood (or M-estimation loss)."""
    f = k @ alpha
    theta = prior_mean + f
    return family.log_partition(theta).sum() - (t * theta).sum() + 0.5 * lam * (alpha * f).sum()


def _newton_matrix(family: Family, k: Tensor, theta: Tensor, lam: float) -> Tensor:
    n = k.shape[0]
    if theta.dim() == 1:
        return family.variance(theta)[:, None] * k + lam * torch.eye(n, dtype=k.dtype)
    c = theta.shape[1]
    p = family.mean(theta)
    blocks = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    d = torch.block_diag(*blocks)
    return d @ torch.kron(k, torch.eye(c, dtype=k.dtype)) + lam * torch.eye(n * c, dtype=k.dtype)


def fit_kglm(k: Tensor, t: Tensor, family: Family, lam: float, tol: float = 1e-12,
             max_iter: int = 200, prior_mean: float | Tensor = 0.0) -> KGLMSolution:
    """Fit the kGLM with Gram matrix ``k`` (n x n) to statistics ``t = T(y)`` ((n,) or (n, C)),
    optionally around a prior mean of the natural parameter at the data locations."""
    if lam <= 0:
        raise ValueError(f"lambda must be > 0, got {lam}")
    k, t = k.to(torch.float64), t.to(torch.float64)
    family.validate(t)
    alpha = torch.zeros_like(t)
    value = objective(family, k, t, alpha, lam, prior_mean)
    converged, it = False, 0
    for it in range(1, max_iter + 1):
        theta = prior_mean + k @ alpha
        r = family.mean(theta) - t + lam * alpha
        if float(r.abs().max()) <= tol:
            converged, it = True, it - 1
            break
        m = _newton_matrix(family, k, theta, lam)
        delta = torch.linalg.solve(m, -r.reshape(-1)).reshape(t.shape)
        step = 1.0
        while step > 1e-10:  # backtracking: accept the first step that does not increase J
            cand = alpha + step * delta
            new_value = objective(family, k, t, cand, lam, prior_mean)
            if torch.isfinite(new_value) and new_value <= value + 1e-14 * abs(float(value)):
                break
            step /= 2
        alpha, value = cand, new_value
    theta = prior_mean + k @ alpha
    return KGLMSolution(alpha, theta, family.mean(theta), float(value), it, converged, lam, family)


def stationarity(family: Family, k: Tensor, t: Tensor, alpha: Tensor, lam: float) -> float:
    """``|| K (a'(K alpha) - T(y)) + lambda K alpha ||_max``: zero at the kGLM's solution."""
    k, t, alpha = (v.to(torch.float64) for v in (k, t, alpha))
    return float((k @ (family.mean(k @ alpha) - t) + lam * (k @ alpha)).abs().max())


def contraction_factor(family: Family, weight_norm: float) -> float:
    """``sup a'' * ||W||_2``, a Lipschitz constant of the DEQ's map ``z -> a'(W z + U t)``
    (THEORY.md section 4). Below 1 forward iteration converges from any start to the unique
    fixed point. At the kGLM initialisation ``||W||_2 = ||K||_2 / lambda`` (dense) or the
    convolution's operator norm over lambda (conv), so the condition is
    ``lambda > sup a'' ||K||_2``. Infinite for families with unbounded a'' (poisson)."""
    return family.sup_variance * float(weight_norm)


def contraction_lambda(family: Family, k_norm: float, margin: float = 1.5) -> float:
    """A lambda that makes the kGLM-initialised DEQ a contraction: ``margin * sup a'' ||K||_2``;
    for unbounded a'' (no such lambda exists) ``margin * ||K||_2 * 4/3``, a strongly regularised
    choice that Anderson or Broyden solve."""
    sup = family.sup_variance if math.isfinite(family.sup_variance) else 4 / 3
    return margin * sup * float(k_norm)
