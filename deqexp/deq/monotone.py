"""The monotone parametrisation of monDEQ (Winston and Kolter 2020), ``model.recurrence=monotone``:

    W = (1 - m) I - A^T A + B - B^T,   so that   I - W = m I + A^T A - (B - B^T)  >=  m I

(its symmetric part), i.e. ``F(z) = (I - W) z - inj`` is m-strongly monotone and the DEQ
``z = sigma(W z + inj)`` has exactly one fixed point whenever sigma is a proximal map
(``sigma = prox_f``, f convex): scalar, nondecreasing and 1-Lipschitz (relu, tanh, sigmoid,
identity; binomial(N) for N <= 4). Poisson's exp is not (it is expansive), nor is the
categorical softmax here: both are refused.

The fixed point is found by Peaceman-Rachford splitting of ``0 in F(z) + df(z)`` with step 1,
where the resolvent of df is sigma itself and that of F a linear solve with ``2 I - W``:

    u <- R_G(R_F(u)),   R_F(u) = 2 (2I - W)^-1 (u + inj) - u,   R_G(w) = 2 sigma(w) - w,

and ``z* = (2I - W)^-1 (u* + inj)``. It converges linearly for any such layer, expansive or
not (the configured solver, e.g. plain iteration or Anderson, runs on u).

The kGLM's ``W = -K/lambda`` is in the class: with m = 1, ``A = (K/lambda)^1/2``, B = 0
(:func:`monotone_factors` returns that for any W already in the class).
"""
from __future__ import annotations

from dataclasses import replace

import torch

from .recurrence import Recurrence

Tensor = torch.Tensor


def monotone_weight(a: Tensor, b: Tensor, margin: float) -> Tensor:
    """``(1 - m) I - A^T A + B - B^T`` for stacks ``(E, d, d)``."""
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    return (1 - margin) * eye - a.transpose(-1, -2) @ a + b - b.transpose(-1, -2)


def monotone_factors(w: Tensor, margin: float) -> dict[str, Tensor]:
    """``A, B`` of one ``(d, d)`` matrix: ``B = (W - W^T) / 4`` (the skew part) and ``A`` the
    symmetric square root of ``(1 - m) I - sym(W)``, its negative eigenvalues set to 0. Exact
    for a W in the class; otherwise the nearest W in it (in the symmetric part)."""
    eye = torch.eye(w.shape[-1], dtype=w.dtype, device=w.device)
    evals, evecs = torch.linalg.eigh((1 - margin) * eye - (w + w.T) / 2)
    a = evecs @ torch.diag(evals.clamp_min(0).sqrt()) @ evecs.T
    return {"A": a, "B": (w - w.T) / 4}


class Monotone(Recurrence):
    """W from A and B (``model.monotone.margin`` = m), solved by Peaceman-Rachford."""

    name = "monotone"

    def __init__(self, margin: float = 1.0):
        if not margin > 0:
            raise ValueError(f"model.monotone.margin={margin} must be > 0 (strong monotonicity)")
        self.margin = float(margin)

    def parameters(self, ensemble, width, dtype):
        return {k: torch.zeros(ensemble, width, width, dtype=dtype) for k in ("A", "B")}

    @property
    def raw(self):
        return ("A", "B")

    def weight(self, p) -> Tensor:
        return monotone_weight(p.A, p.B, self.margin)

    def factor(self, w):
        return monotone_factors(w, self.margin)

    def check_family(self, family) -> None:
        if family.classes or not family.sup_variance <= 1.0:
            why = ("its activation is vector-valued (softmax over classes)" if family.classes else
                   f"its activation a' has sup a'' = {family.sup_variance:g} > 1, so it is not "
                   "a proximal map (not firmly nonexpansive)")
            raise ValueError(f"model.recurrence=monotone needs an activation that is a proximal map "
                             f"(relu, tanh, spin, bernoulli, gaussian, binomial with trials <= 4); "
                             f"family={family.name}: {why}. Use model.recurrence=free or spectral")

    def equilibrium(self, solver, f, z0, w, inj, sigma):
        """Peaceman-Rachford in u (see the module docstring); ``z = (2I - W)^-1 (u + inj)``."""
        eye = torch.eye(w.shape[-1], dtype=w.dtype, device=w.device)
        lu, piv = torch.linalg.lu_factor(2 * eye - w)

        def resolvent(u):  # (2I - W)^-1 (u + inj), per member, for (E, B, d)
            return torch.linalg.lu_solve(lu, piv, (u + inj).transpose(1, 2)).transpose(1, 2)

        def reflected(u):
            r = 2 * resolvent(u) - u
            return 2 * sigma(r) - r

        res = solver.solve(reflected, z0)
        return replace(res, z=resolvent(res.z))
