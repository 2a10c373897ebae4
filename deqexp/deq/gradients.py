"""How gradients flow through a fixed point: a choice separate from the forward solver.

Each method takes the map ``f`` (with the parameters' autograd graph), the
forward solve's result and a vector-Jacobian product ``vjp(u, g) = u df/dz + g`` at
the fixed point, and returns a ``z`` whose backward pass is the method's gradient:

- ``implicit``: implicit function theorem (THEORY.md section 6); the adjoint
  fixed point ``u = u J + grad`` is solved with its own :class:`SolverSettings`.
- ``unrolled``: backpropagate through the forward iterations themselves.
- ``onestep``: the Jacobian-free approximation, ``(I - J)^-1 ~ I``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .settings import GRADIENTS, JACOBIAN_POINTS, GradientSettings, SolverSettings  # noqa: F401
from .solver_loop import SolverResult, concat_results

Tensor = torch.Tensor


@dataclass
class BackwardStats:
    """Where the adjoint solves of one backward pass report, one result per member group.

    The solves run inside ``loss.backward()`` (a hook), so their results cannot be returned
    by the forward call; the forward call returns this sink and the caller reads it after
    ``backward()``.
    """

    parts: dict = field(default_factory=dict)

    @property
    def result(self) -> SolverResult | None:
        """All groups' adjoint solves as one result (None before any backward pass)."""
        if not self.parts:
            return None
        return concat_results([self.parts[k] for k in sorted(self.parts)])


def attach(method: GradientSettings, f: Callable[[Tensor], Tensor], forward: SolverResult,
           vjp: Callable, forward_settings: SolverSettings, z0: Tensor,
           sink: BackwardStats, key: int = 0) -> Tensor:
    """A differentiable fixed point from a solve done without gradients."""
    if method.gradient == "implicit":
        return implicit(f, forward.z, vjp, method, sink, key)
    if method.gradient == "onestep":
        return f(forward.z.detach())
    if method.gradient == "unrolled":
        return forward_settings.solve(f, z0).z
    raise ValueError(f"unknown gradient method '{method.gradient}'; choose one of {list(GRADIENTS)}")


def implicit(f, z_star: Tensor, vjp, settings: SolverSettings, sink: BackwardStats,
             key: int = 0) -> Tensor:
    """``z = f(z*)`` whose gradient is corrected by the adjoint solve ``u = u J + grad``."""
    z = f(z_star.detach())
    if not z.requires_grad:
        return z

    def hook(grad: Tensor | None) -> Tensor | None:
        if grad is None:  # an undefined gradient stays undefined
            return None
        res = settings.solve(lambda u: vjp(u, grad), grad)
        sink.parts[key] = res
        return res.z

    z.register_hook(hook)
    return z
