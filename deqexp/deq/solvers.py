"""Fixed-point solvers with one signature: ``solve(f, z0, tol=, max_iter=, ...) -> SolverResult``,
and :class:`SolverSettings`, the one typed description of a solve (config schema, layers and
gradient methods all use it).

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
from typing import Optional

import torch

from .krylov import gmres, newton
from .linalg import solve_spd
from .solver_loop import (
    COUNTINGS,
    ON_FAILURE,
    STOP_RULES,
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
# solvers of affine maps only (the adjoint solve); the forward map is nonlinear
LINEAR_ONLY = ("gmres",)


def get_solver(name: str):
    """The solver function called ``name``; unknown names raise a ValueError listing the choices."""
    if name not in SOLVERS:
        raise ValueError(f"unknown solver '{name}'; choose one of {sorted(SOLVERS)}")
    return SOLVERS[name]


@dataclass
class SolverSettings:
    """How one fixed point is solved: the single description used by the config schema
    (``solver.forward`` / ``solver.backward``), the layers and the gradient methods.

    ``counting="authors"`` reproduces the paper's routine (PAPER-PROTOCOL.md, E1 "How the
    authors count"): f is applied once before the loop without a residual test, then up to
    ``max_iter`` times in it, so a solve applies f up to ``max_iter + 1`` times. With
    ``stop="member"`` and ``residual_eps=1e-5`` it is their whole-batch test
    ``||f(z) - z|| / (1e-5 + ||f(z)||) < tol``.
    """

    name: str = "forward"             # forward | anderson | broyden | newton (Newton-GMRES) |
                                      # gmres (affine maps: the backward solve only)
    tol: float = 1e-2                 # stop when the residual is <= tol
    max_iter: int = 25                # iterations of the loop
    damping: float = 1.0              # forward iteration only: z <- z + damping (f(z) - z)
    memory: Optional[int] = None      # anderson / broyden history (None: the solver's default)
    stop: str = "sample"              # sample: each sample on its own | member: whole batch
    residual_eps: float = 0.0         # residual ||f(z)-z|| / (residual_eps + ||f(z)||)
    counting: str = "standard"        # standard | authors (one untested application first)
    check_every: Optional[int] = None  # host check for early exit (None: 1 on CPU, 8 on GPU)
    on_failure: str = "warn"          # samples that did not converge: ignore | warn (once per run,
                                      # with their share) | raise (stop the run with an error)

    def check(self, key: str = "solver") -> None:
        """Raise ValueError naming ``key`` for a value that no solver accepts or that this
        solver would ignore."""
        if self.name not in SOLVERS:
            raise ValueError(f"{key}.name={self.name!r} is not valid; choose one of {sorted(SOLVERS)}")
        if not self.tol > 0:
            raise ValueError(f"{key}.tol={self.tol} is not valid; it must be > 0")
        if self.max_iter < 1:
            raise ValueError(f"{key}.max_iter={self.max_iter} is not valid; it must be >= 1")
        if self.stop not in STOP_RULES:
            raise ValueError(f"{key}.stop={self.stop!r} is not valid; choose one of {list(STOP_RULES)}")
        if self.counting not in COUNTINGS:
            raise ValueError(f"{key}.counting={self.counting!r} is not valid; "
                             f"choose one of {list(COUNTINGS)}")
        if self.on_failure not in ON_FAILURE:
            raise ValueError(f"{key}.on_failure={self.on_failure!r} is not valid; "
                             f"choose one of {list(ON_FAILURE)}")
        if self.residual_eps < 0:
            raise ValueError(f"{key}.residual_eps={self.residual_eps} must be >= 0")
        if self.check_every is not None and self.check_every < 1:
            raise ValueError(f"{key}.check_every={self.check_every} must be >= 1")
        if self.damping != 1.0 and self.name != "forward":
            raise ValueError(f"{key}.damping={self.damping} applies only to name=forward "
                             f"(this solve uses {self.name}); remove it")
        if not 0 < self.damping <= 1.0:
            raise ValueError(f"{key}.damping={self.damping} must be in (0, 1]")
        if self.memory is not None and (self.name == "forward" or self.memory < 1):
            raise ValueError(f"{key}.memory={self.memory}: a history of >= 1 steps, for "
                             "anderson/broyden (gmres: the restart length; newton: Krylov steps "
                             "per Newton step) only")

    def options(self) -> dict:
        """Keyword arguments of this solver's function (only those it takes)."""
        kw = {"tol": self.tol, "max_iter": self.max_iter, "check_every": self.check_every,
              "stop": self.stop, "residual_eps": self.residual_eps}
        if self.name == "forward":
            kw["damping"] = self.damping
        elif self.memory is not None:
            kw["memory"] = self.memory
        return kw

    def solve(self, f: FixedPointMap, z0: Tensor) -> SolverResult:
        """Solve ``z = f(z)`` from ``z0`` with these settings."""
        if self.counting == "authors":
            z0 = f(z0)  # their routine: one application before the loop, never tested
        return get_solver(self.name)(f, z0, **self.options())
