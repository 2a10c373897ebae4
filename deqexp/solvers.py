"""Fixed-point solvers with one signature: ``solve(f, z0, tol=, max_iter=, ...) -> SolverResult``.

``z`` has a leading ensemble axis and a batch axis, ``(E, B, ...)``; every
(member, sample) pair stops on its own relative residual
``||f(z) - z|| / ||f(z)||`` and is frozen from then on, so a sample's result
does not depend on what it is batched with. The loop asks the host whether it
may stop only every ``check_every`` iterations (the sole host sync): freezing
makes the values the same whatever ``check_every`` is, only the cost changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

Tensor = torch.Tensor
FixedPointMap = Callable[[Tensor], Tensor]
_EPS = 1e-12


@dataclass
class SolverResult:
    """What a solve returns: the fixed point and how it got there."""

    z: Tensor              # (E, B, ...) the approximate fixed point
    iterations: Tensor     # (E, B) iterations each sample used
    residual: Tensor       # (E, B) final relative residual
    trace: Tensor          # (steps, E, B) relative residual after each step
    converged: Tensor      # (E, B) residual <= tol (False for NaN/inf)
    steps: int             # loop steps run (max over samples)


def relative_residual(fz: Tensor, z: Tensor) -> Tensor:
    """``||f(z) - z|| / ||f(z)||`` per (member, sample); NaN stays NaN."""
    d = (fz - z).flatten(2).norm(dim=-1)
    return d / (fz.flatten(2).norm(dim=-1) + _EPS)


def _default_check_every(z: Tensor) -> int:
    return 1 if z.device.type == "cpu" else 8


class _Loop:
    """Book-keeping shared by the solvers: per-sample stopping, trace, early exit."""

    def __init__(self, z0: Tensor, tol: float, max_iter: int, check_every: int | None):
        self.tol, self.max_iter = tol, max_iter
        self.check_every = check_every or _default_check_every(z0)
        shape = z0.shape[:2]
        self.active = torch.ones(shape, dtype=torch.bool, device=z0.device)
        self.iterations = torch.zeros(shape, dtype=torch.long, device=z0.device)
        self.residual = torch.full(shape, float("inf"), dtype=z0.dtype, device=z0.device)
        self.trace: list[Tensor] = []

    def record(self, res: Tensor) -> Tensor:
        """Store this step's residual for active samples; return the mask of samples still active."""
        res = torch.where(self.active, res, self.residual)
        self.residual = res
        self.iterations += self.active.long()
        self.trace.append(res)
        self.active = self.active & ~(res <= self.tol)
        return self.active

    def should_stop(self, step: int) -> bool:
        return (step + 1) % self.check_every == 0 and not bool(self.active.any())

    def result(self, z: Tensor) -> SolverResult:
        trace = torch.stack(self.trace) if self.trace else self.residual[None]
        return SolverResult(z, self.iterations, self.residual, trace,
                            self.residual <= self.tol, len(self.trace))


def _mask(active: Tensor, like: Tensor) -> Tensor:
    return active.reshape(active.shape + (1,) * (like.dim() - 2))


def forward_iteration(f: FixedPointMap, z0: Tensor, *, tol: float = 1e-4, max_iter: int = 50,
                      damping: float = 1.0, check_every: int | None = None, **_) -> SolverResult:
    """Plain (optionally damped) iteration ``z <- (1 - damping) z + damping f(z)``."""
    loop, z = _Loop(z0, tol, max_iter, check_every), z0
    for step in range(max_iter):
        fz = f(z)
        active = _mask(loop.active, z)
        loop.record(relative_residual(fz, z))
        z = torch.where(active, z + damping * (fz - z), z)
        if loop.should_stop(step):
            break
    return loop.result(z)


def anderson(f: FixedPointMap, z0: Tensor, *, tol: float = 1e-4, max_iter: int = 50,
             memory: int = 5, mixing: float = 1.0, regularisation: float = 1e-6,
             check_every: int | None = None, **_) -> SolverResult:
    """Anderson acceleration (type II) with ``memory`` past iterates, per sample."""
    loop = _Loop(z0, tol, max_iter, check_every)
    shape, (e, b) = z0.shape, z0.shape[:2]
    n, d = e * b, z0[0, 0].numel()
    flat = lambda t: t.reshape(n, d)  # noqa: E731
    xs = z0.new_zeros(n, memory, d)
    gs = z0.new_zeros(n, memory, d)
    z = z0
    for step in range(max_iter):
        fz = f(z)
        active = _mask(loop.active, z)
        loop.record(relative_residual(fz, z))
        k, slot = min(step + 1, memory), step % memory
        xs[:, slot], gs[:, slot] = flat(z), flat(fz - z)
        g = gs[:, :k]
        # minimise ||sum_i c_i g_i|| s.t. sum c_i = 1, via the normal equations
        gram = g @ g.transpose(1, 2)
        # Tikhonov term relative to the residuals' size, so it never dominates near convergence
        scale = gram.diagonal(dim1=1, dim2=2).mean(-1)[:, None, None]
        gram = gram + (regularisation * scale + 1e-30) * torch.eye(k, dtype=z.dtype, device=z.device)
        ones = z.new_ones(n, k, 1)
        w, info = torch.linalg.solve_ex(gram, ones)  # no error (and no sync) on a singular system
        c = w / w.sum(1, keepdim=True)
        # a singular or non-finite system (e.g. a frozen sample's repeated history): plain step
        last = torch.zeros_like(c)
        last[:, slot] = 1
        ok = (info == 0)[:, None, None] & torch.isfinite(c).all(1, keepdim=True)
        c = torch.where(ok, c, last)
        new = (c.transpose(1, 2) @ (xs[:, :k] + mixing * g)).reshape(shape)
        z = torch.where(active, new, z)
        if loop.should_stop(step):
            break
    return loop.result(z)


def broyden(f: FixedPointMap, z0: Tensor, *, tol: float = 1e-4, max_iter: int = 50,
            memory: int = 30, check_every: int | None = None, **_) -> SolverResult:
    """Limited-memory "good" Broyden on ``g(z) = f(z) - z``, inverse Jacobian ``-I + U V^T``."""
    loop = _Loop(z0, tol, max_iter, check_every)
    shape, (e, b) = z0.shape, z0.shape[:2]
    n, d = e * b, z0[0, 0].numel()
    us = z0.new_zeros(n, memory, d)
    vs = z0.new_zeros(n, memory, d)
    z = z0.reshape(n, d)
    fz = f(z0).reshape(n, d)
    g = fz - z

    def inv_mv(x):  # J^-1 x
        return -x + (us.transpose(1, 2) @ (vs @ x[..., None]))[..., 0]

    def inv_vm(x):  # x^T J^-1
        return -x + (vs.transpose(1, 2) @ (us @ x[..., None]))[..., 0]

    for step in range(max_iter):
        active = loop.active.reshape(n, 1)
        loop.record(relative_residual(fz.reshape(shape), z.reshape(shape)))
        if step == max_iter - 1:
            z = torch.where(active, fz, z)  # last step: take the plain update
            break
        s = torch.where(active, -inv_mv(g), torch.zeros_like(g))
        z = z + s
        fz_new = f(z.reshape(shape)).reshape(n, d)
        g_new = fz_new - z
        y = g_new - g
        jy = inv_mv(y)
        denom = (s * jy).sum(-1, keepdim=True)
        ok = active & (denom.abs() > _EPS) & torch.isfinite(denom)
        slot = step % memory
        us[:, slot] = torch.where(ok, (s - jy) / torch.where(ok, denom, 1.0), 0.0)
        vs[:, slot] = torch.where(ok, inv_vm(s), 0.0)
        fz, g = fz_new, g_new
        if loop.should_stop(step):
            break
    return loop.result(z.reshape(shape))


SOLVERS = {"forward": forward_iteration, "anderson": anderson, "broyden": broyden}


def get_solver(name: str):
    """The solver function called ``name``; unknown names raise a ValueError listing the choices."""
    if name not in SOLVERS:
        raise ValueError(f"unknown solver '{name}'; choose one of {sorted(SOLVERS)}")
    return SOLVERS[name]
