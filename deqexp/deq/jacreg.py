"""Jacobian regularisation (Bai, Koltun and Kolter 2021): a Hutchinson estimate of the
fixed-point map's squared Frobenius norm at the solution, added to the training loss
(``trainer.jac_reg.weight``, every ``trainer.jac_reg.every`` steps).

For a probe ``eps ~ N(0, I)``, ``E ||eps^T J||^2 = ||J||_F^2``; the estimate per sample is
``||eps^T J_f(z*)||^2 / d`` (d: the values per sample), averaged over the batch, one probe per
sample. The vector-Jacobian product keeps its graph, so the penalty's gradient reaches the
parameters through both ``a''(W z* + inj)`` and ``W``; ``z*`` itself is held fixed.
"""
from __future__ import annotations

import torch

Tensor = torch.Tensor


def hutchinson_frobenius(f, z_star: Tensor, probes: Tensor) -> Tensor:
    """Per member ``(E,)``: the batch mean of ``||probe^T J_f(z*)||^2 / d``."""
    z = z_star.detach().requires_grad_(True)
    with torch.enable_grad():
        fz = f(z)
        (vjp,) = torch.autograd.grad(fz, z, probes, create_graph=True)
    d = z[0, 0].numel()
    return vjp.pow(2).flatten(2).sum(-1).mean(1) / d


def probes(gens: list[torch.Generator], like: Tensor, seed_index: Tensor) -> Tensor:
    """One standard-normal probe per sample, drawn from each seed's own generator (members
    with the same seed share it, so a member's probes do not depend on its ensemble)."""
    per_seed = torch.stack([torch.randn(like.shape[1:], generator=g, dtype=like.dtype) for g in gens])
    return per_seed.to(like.device).index_select(0, seed_index.to(like.device))
