"""How gradients flow through a fixed point: a choice separate from the forward solver.

Each method takes the map ``f`` (with the parameters' autograd graph), the
forward solve's result and a vector-Jacobian product ``vjp(u, g) = u df/dz + g`` at
the fixed point, and returns a ``z`` whose backward pass is the method's gradient:

- ``implicit``: implicit function theorem (THEORY.md section 6); the adjoint
  fixed point ``u = u J + grad`` is solved with a configurable solver.
- ``unrolled``: backpropagate through the forward iterations themselves.
- ``onestep``: the Jacobian-free approximation, ``(I - J)^-1 ~ I``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .solvers import SolverResult, concat_results, forward_iteration, get_solver

Tensor = torch.Tensor


@dataclass
class BackwardStats:
    """The last backward solves of an implicit gradient, one per member group (filled in
    during ``backward()``, keyed by the group's first member)."""

    parts: dict = field(default_factory=dict)

    @property
    def result(self) -> SolverResult | None:
        """All groups' adjoint solves as one result (None before any backward pass)."""
        if not self.parts:
            return None
        return concat_results([self.parts[k] for k in sorted(self.parts)])


@dataclass
class GradientMethod:
    """A gradient method with its backward-solver settings."""

    name: str = "implicit"
    solver: str = "forward"
    tol: float = 1e-6
    max_iter: int = 50
    options: dict = field(default_factory=dict)
    stats: BackwardStats = field(default_factory=BackwardStats)

    def attach(self, f: Callable[[Tensor], Tensor], forward: SolverResult,
               vjp: Callable[[Tensor], Tensor], forward_solve: Callable | None = None,
               z0: Tensor | None = None, key: int = 0) -> Tensor:
        """A differentiable fixed point from a solve done without gradients."""
        if self.name == "implicit":
            return implicit(f, forward.z, vjp, self, key)
        if self.name == "onestep":
            return f(forward.z.detach())
        if self.name == "unrolled":
            if forward_solve is None:
                raise ValueError("unrolled gradients need the forward solve")
            return forward_solve(f, z0).z
        raise ValueError(f"unknown gradient method '{self.name}'; "
                         "choose 'implicit', 'unrolled' or 'onestep'")


def implicit(f, z_star: Tensor, vjp, method: GradientMethod, key: int = 0) -> Tensor:
    """``z = f(z*)`` whose gradient is corrected by the adjoint solve ``u = u J + grad``."""
    z = f(z_star.detach())
    if not z.requires_grad:
        return z
    solve = get_solver(method.solver)

    def hook(grad: Tensor | None) -> Tensor | None:
        if grad is None:  # an undefined gradient stays undefined
            return None
        res = solve(lambda u: vjp(u, grad), grad, tol=method.tol,
                    max_iter=method.max_iter, **method.options)
        method.stats.parts[key] = res
        return res.z

    z.register_hook(hook)
    return z


def unrolled_forward(damping: float = 1.0, **kw):
    """The forward solve run under autograd, for ``gradient=unrolled``."""
    def solve(f, z0):
        return forward_iteration(f, z0, damping=damping, **kw)
    return solve
