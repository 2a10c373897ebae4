"""Fixed-point solvers with one signature: ``solve(f, z0, tol=, max_iter=, ...) -> SolverResult``,
and their registry; :class:`deqexp.deq.settings.SolverSettings` is the one typed description of
a solve (config schema, layers and gradient methods all use it).

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

import torch

from .krylov import gmres, newton
from .linalg import solve_spd
from .solver_loop import (
    FixedPointMap,
    SolveLoop,
    SolverResult,
    active_mask,
)

Tensor = torch.Tensor


def forward_iteration(f: FixedPointMap, z0: Tensor, *, tol: float, max_iter: int,
                      damping: float = 1.0, check_every: int | None = None, stop: str = "sample",
                      residual_eps: float = 0.0) -> SolverResult:
    """Plain (optionally damped) iteration ``z <- (1 - damping) z + damping f(z)``."""
    loop, z = SolveLoop(z0, tol, max_iter, check_every, stop, residual_eps), z0
    for step in range(max_iter):
        fz = f(z)
        diff = fz - z
        active, everyone = active_mask(loop.active, z), loop.all_active()
        loop.record(loop.residual_of(fz, z, diff))
        new = fz if damping == 1.0 else z + damping * diff
        z = new if everyone else torch.where(active, new, z)
        if loop.should_stop(step):
            break
    return loop.result(z)


def anderson(f: FixedPointMap, z0: Tensor, *, tol: float, max_iter: int,
             memory: int = 5, mixing: float = 1.0, regularisation: float = 1e-6,
             check_every: int | None = None, stop: str = "sample",
             residual_eps: float = 0.0) -> SolverResult:
    """Anderson acceleration (type II) with ``memory`` past iterates, per sample.

    The Gram matrix of past residuals is updated by one row per step, and the small
    least-squares systems are solved by :func:`solve_spd`.
    """
    loop = SolveLoop(z0, tol, max_iter, check_every, stop, residual_eps)
    shape, (e, b) = z0.shape, z0.shape[:2]
    n, d = e * b, z0[0, 0].numel()
    xs = z0.new_zeros(memory, n, d)   # slot-major: each slot is one contiguous (n, d) block
    gs = z0.new_zeros(memory, n, d)
    gram = z0.new_zeros(n, memory, memory)
    z = z0
    for step in range(max_iter):
        fz = f(z)
        active = active_mask(loop.active, z)
        loop.record(loop.residual_of(fz, z))
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


def broyden(f: FixedPointMap, z0: Tensor, *, tol: float, max_iter: int,
            memory: int = 20, check_every: int | None = None, stop: str = "sample",
            residual_eps: float = 0.0) -> SolverResult:
    """Limited-memory "good" Broyden on ``g(z) = f(z) - z``, inverse Jacobian ``-I + U V^T``."""
    loop = SolveLoop(z0, tol, max_iter, check_every, stop, residual_eps)
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
        loop.record(loop.residual_of(fz.reshape(shape), z.reshape(shape)))
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


SOLVERS = {"forward": forward_iteration, "anderson": anderson, "broyden": broyden, "gmres": gmres,
           "newton": newton}


def get_solver(name: str):
    """The solver function called ``name``; unknown names raise a ValueError listing the choices."""
    if name not in SOLVERS:
        raise ValueError(f"unknown solver '{name}'; choose one of {sorted(SOLVERS)}")
    return SOLVERS[name]
