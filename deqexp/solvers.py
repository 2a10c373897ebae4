"""Fixed-point solvers with one signature: ``solve(f, z0, tol=, max_iter=, ...) -> SolverResult``.

``z`` has a leading ensemble axis and a batch axis, ``(E, B, ...)``; every
(member, sample) pair stops on its own relative residual
``||f(z) - z|| / ||f(z)||`` and is frozen from then on, so a sample's result
does not depend on what it is batched with (``stop="member"`` instead stops a
member's samples together on the residual of its whole batch, as the paper's
code did). The loop asks the host whether it
may stop only every ``check_every`` iterations (the sole host sync): freezing
makes the values the same whatever ``check_every`` is, only the cost changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

Tensor = torch.Tensor
FixedPointMap = Callable[[Tensor], Tensor]


@dataclass
class SolverResult:
    """What a solve returns: the fixed point and how it got there."""

    z: Tensor              # (E, B, ...) the approximate fixed point
    iterations: Tensor     # (E, B) iterations each sample used
    residual: Tensor       # (E, B) final relative residual
    trace: Tensor          # (steps, E, B) relative residual after each step
    converged: Tensor      # (E, B) residual <= tol (False for NaN/inf)
    steps: int             # loop steps run (max over samples)


def concat_results(results: list[SolverResult]) -> SolverResult:
    """One result for member groups solved one after another (traces padded with their last row)."""
    if len(results) == 1:
        return results[0]
    steps = max(r.steps for r in results)
    traces = [torch.cat([r.trace, r.trace[-1:].expand(steps - r.trace.shape[0], *r.trace.shape[1:])])
              for r in results]
    cat = lambda key: torch.cat([getattr(r, key) for r in results])  # noqa: E731
    return SolverResult(cat("z"), cat("iterations"), cat("residual"), torch.cat(traces, dim=1),
                        cat("converged"), steps)


def relative_residual(fz: Tensor, z: Tensor, stop: str = "sample", diff: Tensor | None = None) -> Tensor:
    """``||f(z) - z|| / ||f(z)||`` per (member, sample); NaN stays NaN.

    ``stop="member"`` takes the norms over a member's whole batch (the paper's criterion),
    broadcast to its samples: all of a member's samples then stop together.
    """
    diff = fz - z if diff is None else diff
    tiny = torch.finfo(fz.dtype).tiny  # no absolute floor: adjoint vectors can be tiny
    if stop == "member":
        r = diff.flatten(1).norm(dim=-1) / fz.flatten(1).norm(dim=-1).clamp_min(tiny)
        return r[:, None].expand(fz.shape[:2])
    if stop != "sample":
        raise ValueError(f"stop must be 'sample' or 'member', got '{stop}'")
    return diff.flatten(2).norm(dim=-1) / fz.flatten(2).norm(dim=-1).clamp_min(tiny)


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

    def all_active(self) -> bool:
        """True only when known without a new host sync (checks every step): masking can be skipped."""
        return self.check_every == 1 and bool(self.active.all())

    def result(self, z: Tensor) -> SolverResult:
        trace = torch.stack(self.trace) if self.trace else self.residual[None]
        return SolverResult(z, self.iterations, self.residual, trace,
                            self.residual <= self.tol, len(self.trace))


def _mask(active: Tensor, like: Tensor) -> Tensor:
    return active.reshape(active.shape + (1,) * (like.dim() - 2))


def forward_iteration(f: FixedPointMap, z0: Tensor, *, tol: float = 1e-4, max_iter: int = 50,
                      damping: float = 1.0, check_every: int | None = None, stop: str = "sample",
                      **_) -> SolverResult:
    """Plain (optionally damped) iteration ``z <- (1 - damping) z + damping f(z)``."""
    loop, z = _Loop(z0, tol, max_iter, check_every), z0
    for step in range(max_iter):
        fz = f(z)
        diff = fz - z
        active, everyone = _mask(loop.active, z), loop.all_active()
        loop.record(relative_residual(fz, z, stop, diff))
        new = fz if damping == 1.0 else z + damping * diff
        z = new if everyone else torch.where(active, new, z)
        if loop.should_stop(step):
            break
    return loop.result(z)


def solve_spd(a: Tensor, b: Tensor) -> Tensor:
    """Solve the small SPD systems ``a x = b`` for ``a (n, k, k)``, ``b (n, k)`` by a Cholesky
    vectorised over n (batched LAPACK is slow for many tiny systems on CPUs). Where ``a`` is not
    positive definite the result is NaN, never an error or a host sync."""
    n, k = b.shape
    low = torch.zeros_like(a)
    for j in range(k):
        s = a[:, j, j] - low[:, j, :j].pow(2).sum(-1)
        low[:, j, j] = torch.where(s > 0, s.clamp_min(0).sqrt(), float("nan"))
        if j + 1 < k:
            dots = (low[:, j + 1 :, :j] * low[:, j, None, :j]).sum(-1)
            low[:, j + 1 :, j] = (a[:, j + 1 :, j] - dots) / low[:, j, j, None]
    y = torch.zeros_like(b)
    for i in range(k):
        y[:, i] = (b[:, i] - (low[:, i, :i] * y[:, :i]).sum(-1)) / low[:, i, i]
    x = torch.zeros_like(b)
    for i in reversed(range(k)):
        x[:, i] = (y[:, i] - (low[:, i + 1 :, i] * x[:, i + 1 :]).sum(-1)) / low[:, i, i]
    return x


def anderson(f: FixedPointMap, z0: Tensor, *, tol: float = 1e-4, max_iter: int = 50,
             memory: int = 5, mixing: float = 1.0, regularisation: float = 1e-6,
             check_every: int | None = None, stop: str = "sample", **_) -> SolverResult:
    """Anderson acceleration (type II) with ``memory`` past iterates, per sample.

    The Gram matrix of past residuals is updated by one row per step, and the small
    least-squares systems are solved by :func:`solve_spd`.
    """
    loop = _Loop(z0, tol, max_iter, check_every)
    shape, (e, b) = z0.shape, z0.shape[:2]
    n, d = e * b, z0[0, 0].numel()
    xs = z0.new_zeros(memory, n, d)   # slot-major: each slot is one contiguous (n, d) block
    gs = z0.new_zeros(memory, n, d)
    gram = z0.new_zeros(n, memory, memory)
    z = z0
    for step in range(max_iter):
        fz = f(z)
        active = _mask(loop.active, z)
        loop.record(relative_residual(fz, z, stop))
        k, slot = min(step + 1, memory), step % memory
        xs[slot].copy_(z.reshape(n, d))
        torch.sub(fz.reshape(n, d), z.reshape(n, d), out=gs[slot])
        dots = (gs[:k] * gs[slot]).sum(-1).T      # (n, k): the new residual against the history
        gram[:, slot, :k] = dots
        gram[:, :k, slot] = dots
        g = gram[:, :k, :k]
        # minimise ||sum_i c_i g_i|| s.t. sum c_i = 1 via the normal equations, with a Tikhonov
        # term relative to the residuals' size so that it never dominates near convergence
        scale = g.diagonal(dim1=1, dim2=2).mean(-1)[:, None, None]
        eye = torch.eye(k, dtype=z.dtype, device=z.device)
        tiny = torch.finfo(z.dtype).tiny
        w = solve_spd(g + (regularisation * scale + tiny) * eye, z.new_ones(n, k))
        c = w / w.sum(1, keepdim=True)
        # a singular or non-finite system (e.g. a frozen sample's repeated history): plain step
        ok = torch.isfinite(c).all(1, keepdim=True)
        c = torch.where(ok, c, (torch.arange(k, device=c.device) == slot).to(c.dtype))
        new = torch.zeros(n, d, dtype=z.dtype, device=z.device)
        for i in range(k):
            new.addcmul_(c[:, i, None], xs[i]).addcmul_(c[:, i, None], gs[i], value=mixing)
        new = new.reshape(shape)
        z = new if loop.all_active() else torch.where(active, new, z)
        if loop.should_stop(step):
            break
    return loop.result(z)


def broyden(f: FixedPointMap, z0: Tensor, *, tol: float = 1e-4, max_iter: int = 50,
            memory: int = 20, check_every: int | None = None, stop: str = "sample",
            **_) -> SolverResult:
    """Limited-memory "good" Broyden on ``g(z) = f(z) - z``, inverse Jacobian ``-I + U V^T``."""
    loop = _Loop(z0, tol, max_iter, check_every)
    shape, (e, b) = z0.shape, z0.shape[:2]
    n, d = e * b, z0[0, 0].numel()
    us = z0.new_zeros(memory, n, d)
    vs = z0.new_zeros(memory, n, d)
    z = z0.reshape(n, d)
    fz = f(z0).reshape(n, d)
    g = fz - z

    def low_rank(a, b, x, k):  # sum_{i<k} a_i (b_i . x) - x, slot by slot (no big temporaries)
        out = -x
        for i in range(k):
            out = out.addcmul_(a[i], (b[i] * x).sum(-1, keepdim=True))
        return out

    for step in range(max_iter):
        k = min(step, memory)

        def inv_mv(x):  # J^-1 x
            return low_rank(us, vs, x, k)

        def inv_vm(x):  # x^T J^-1
            return low_rank(vs, us, x, k)

        active = loop.active.reshape(n, 1)
        loop.record(relative_residual(fz.reshape(shape), z.reshape(shape), stop))
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
        # relative test: adjoint solves work with tiny vectors (gradients of a mean loss)
        size = s.norm(dim=-1, keepdim=True) * jy.norm(dim=-1, keepdim=True)
        ok = active & (denom.abs() > 1e-10 * size) & (size > 0) & torch.isfinite(denom)
        slot = step % memory
        vs_new = torch.where(ok, inv_vm(s), 0.0)  # uses the history before this step's update
        us[slot] = torch.where(ok, (s - jy) / torch.where(ok, denom, 1.0), 0.0)
        vs[slot] = vs_new
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
