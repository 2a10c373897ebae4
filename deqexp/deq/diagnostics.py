"""Diagnostics of a DEQ layer at its solution: the norm of the fixed-point map's Jacobian
(matrix-free Lanczos) and the differentiable Hutchinson penalty on it (``trainer.jac_reg``).
A mixin of :class:`deqexp.deq.models.DenseDEQ` and :class:`~deqexp.deq.models.ConvDEQ`."""
from __future__ import annotations

import torch

from . import operators
from .jacreg import hutchinson_frobenius

Tensor = torch.Tensor


class Diagnostics:
    """Uses the layer's ``_expand``, ``_groups``, ``members``, ``_map``, ``_equilibrium``,
    ``_z0``, ``_recur``, ``_recur_adjoint``, ``_recur_inject`` and ``family``."""

    def jacobian_norms(self, t: Tensor, tol: float = operators.ZERO_PAD_TOL) -> Tensor:
        """``||J||_2`` per member and sample ``(E, B)``: the Jacobian of the fixed-point map at
        the forward solver's solution z*, ``J = diag(a''(W z* + U t + b)) W`` (dense) or
        ``a''(conv_W z* + conv_U t) conv_W`` (conv); a block of ``a''`` for categorical.

        Matrix-free: Lanczos on ``J^T J`` with the layer's own products (no dense Jacobian),
        from a fixed start vector, so a member's value depends on nothing but its parameters
        and ``t``. NaN for a member whose parameters or solution are not finite.
        """
        t = self._expand(t)
        out, x0 = [], None
        with torch.no_grad():
            for sl in self._groups():
                p, ts = self.members(sl), t[sl]
                f, inj = self._map(p, ts)
                z = self._equilibrium(p, f, self._z0(p, ts), inj).z
                var = self.family.variance_operator(self._recur_inject(p, z, inj))
                if x0 is None:  # one member's start, shared by all
                    gen = torch.Generator().manual_seed(0)
                    x0 = torch.randn(z.shape[1:], generator=gen, dtype=z.dtype).to(z.device)
                theta, _, ok = operators.lanczos_top(
                    lambda v: self._recur_adjoint(p, var(var(self._recur(p, v)))),
                    x0.expand_as(z).clone(), tol, batch_dims=2, reorthogonalise=False)
                operators.warn_unconverged("jacobian_norms", ok, theta, tol)
                out.append(theta.clamp_min(0).sqrt())
        return torch.cat(out)

    def jacobian_penalty(self, t: Tensor, z_star: Tensor, probes: Tensor) -> Tensor:
        """Per member ``(E,)``, the Hutchinson estimate of ``||J_f(z*)||_F^2 / d`` at the solves'
        ``z_star`` with one probe per sample (:mod:`deqexp.deq.jacreg`), differentiable in the
        parameters."""
        t = self._expand(t)
        out = []
        for sl in self._groups():
            f, _ = self._map(self.members(sl), t[sl])
            out.append(hutchinson_frobenius(f, z_star[sl], probes[sl]))
        return torch.cat(out)
