"""What every solver shares: the result object with its per-sample outcomes, the relative
residual, and the loop's book-keeping (per-sample stopping, the running minima of the residual
that the stall rule reads, early exit with one host sync every ``check_every`` iterations)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .interrupt import Interrupt, Interrupted  # noqa: F401  (re-exported)

Tensor = torch.Tensor
FixedPointMap = Callable[[Tensor], Tensor]

# how a sample's solve ended (SolverResult.outcome holds the index), in this order of precedence
OUTCOMES = ("converged", "cap", "stalled", "nonfinite")
CONVERGED, CAP, STALLED, NONFINITE = range(len(OUTCOMES))
# stalled: the last quarter of its iterations lowered its best residual by less than 10%
# (a plateau, a cycle or a slow divergence: more iterations would not help); cap: it was
# still making progress when the iteration cap stopped it
STALL_WINDOW, STALL_GAIN = 0.25, 0.9


def stall_window(max_iter: int) -> int:
    """The last steps whose best residual the stall rule compares with the steps before."""
    return max(1, int(max_iter * STALL_WINDOW))


def outcomes(z: Tensor, residual: Tensor, best_before: Tensor, best_recent: Tensor,
             tol: float, can_stall: bool = True) -> Tensor:
    """Each (member, sample)'s :data:`OUTCOMES` index ``(E, B)`` from its final iterate and
    residual, and its least residual before the stall window and within it (NaN counted as
    inf; computed once, after the loop: no host sync). Only a sample that has not converged
    can stall, and such a sample ran every one of ``max_iter`` steps: the window is the last
    :func:`stall_window` of them. ``can_stall=False``: too few steps ran to tell a plateau
    from progress."""
    finite = torch.isfinite(z).flatten(2).all(-1) & torch.isfinite(residual)
    stalled = ~(best_recent < STALL_GAIN * best_before) & can_stall
    out = torch.full(residual.shape, CAP, dtype=torch.int8, device=residual.device)
    out = torch.where(stalled, torch.full_like(out, STALLED), out)
    out = torch.where(residual <= tol, torch.full_like(out, CONVERGED), out)
    return torch.where(finite, out, torch.full_like(out, NONFINITE))




@dataclass
class SolverResult:
    """What a solve returns: the fixed point and how it got there."""

    z: Tensor              # (E, B, ...) the approximate fixed point
    iterations: Tensor     # (E, B) iterations each sample used
    residual: Tensor       # (E, B) final relative residual
    converged: Tensor      # (E, B) residual <= tol (False for NaN/inf)
    steps: int             # loop steps run (max over samples)
    outcome: Tensor        # (E, B) index into OUTCOMES: how each sample's solve ended

    def counts(self) -> dict[str, Tensor]:
        """Per member, the number of samples that ended each way: ``{outcome: (E,) counts}``."""
        return {name: (self.outcome == i).sum(1) for i, name in enumerate(OUTCOMES)}


def concat_results(results: list[SolverResult]) -> SolverResult:
    """One result for member groups solved one after another."""
    if len(results) == 1:
        return results[0]
    cat = lambda key: torch.cat([getattr(r, key) for r in results])  # noqa: E731
    return SolverResult(cat("z"), cat("iterations"), cat("residual"), cat("converged"),
                        max(r.steps for r in results), cat("outcome"))




def relative_residual(fz: Tensor, z: Tensor, stop: str = "sample", diff: Tensor | None = None,
                      eps: float = 0.0) -> Tensor:
    """``||f(z) - z|| / (eps + ||f(z)||)`` per (member, sample); NaN stays NaN.

    ``stop="member"`` takes the norms over a member's whole batch (the paper's criterion),
    broadcast to its samples: all of a member's samples then stop together. ``eps`` is the
    authors' ``1e-5 +`` in the denominator (0: a purely relative test).
    """
    diff = fz - z if diff is None else diff
    dims = 1 if stop == "member" else 2
    if stop not in ("sample", "member"):  # settings.STOP_RULES (imported there: no cycle)
        raise ValueError(f"stop must be 'sample' or 'member', got '{stop}'")
    den = fz.flatten(dims).norm(dim=-1)
    # no absolute floor unless asked for: adjoint vectors can be tiny
    den = den + eps if eps > 0 else den.clamp_min(torch.finfo(fz.dtype).tiny)
    r = diff.flatten(dims).norm(dim=-1) / den
    return r[:, None].expand(fz.shape[:2]) if stop == "member" else r


def residual_from_squares(diff_sq: Tensor, f_sq: Tensor, stop: str = "sample",
                          eps: float = 0.0) -> Tensor:
    """:func:`relative_residual` from the squared norms ``||f(z) - z||^2`` and ``||f(z)||^2``
    per (member, sample) ``(E, B)``, for a solver that has them without the vectors (GMRES)."""
    shape = diff_sq.shape
    if stop == "member":
        diff_sq, f_sq = diff_sq.sum(1, keepdim=True), f_sq.sum(1, keepdim=True)
    den = f_sq.clamp_min(0).sqrt()
    den = den + eps if eps > 0 else den.clamp_min(torch.finfo(f_sq.dtype).tiny)
    return (diff_sq.sqrt() / den).expand(shape)


def _default_check_every(z: Tensor) -> int:
    return 1 if z.device.type == "cpu" else 8


class SolveLoop:
    """Book-keeping shared by the solvers: per-sample stopping, the stall rule's running
    minima (no history kept), early exit."""

    def __init__(self, z0: Tensor, tol: float, max_iter: int, check_every: int | None,
                 stop: str = "sample", eps: float = 0.0):
        self.tol, self.max_iter, self.stop, self.eps = tol, max_iter, stop, eps
        self.check_every = check_every or _default_check_every(z0)
        shape = z0.shape[:2]
        self.active = torch.ones(shape, dtype=torch.bool, device=z0.device)
        self.iterations = torch.zeros(shape, dtype=torch.long, device=z0.device)
        self.residual = torch.full(shape, float("inf"), dtype=z0.dtype, device=z0.device)
        # the stall rule's least residuals before the window and within it (outcomes())
        self.window_start = max_iter - stall_window(max_iter)
        self.best_before, self.best_recent = self.residual.clone(), self.residual.clone()
        self.steps = 0

    def residual_of(self, fz: Tensor, z: Tensor, diff: Tensor | None = None) -> Tensor:
        return relative_residual(fz, z, self.stop, diff, self.eps)

    def residual_from(self, diff_sq: Tensor, f_sq: Tensor) -> Tensor:
        return residual_from_squares(diff_sq, f_sq, self.stop, self.eps)

    def record(self, res: Tensor) -> Tensor:
        """Store this step's residual for active samples; return the mask of samples still active."""
        res = torch.where(self.active, res, self.residual)
        self.residual = res
        self.iterations += self.active.long()
        best = self.best_before if self.steps < self.window_start else self.best_recent
        torch.fmin(best, res.detach(), out=best)  # fmin: a NaN residual never becomes the best
        self.steps += 1
        self.active = self.active & ~(res <= self.tol)
        return self.active

    def should_stop(self, step: int) -> bool:
        Interrupt.check()
        return (step + 1) % self.check_every == 0 and not bool(self.active.any())

    def all_active(self) -> bool:
        """True only when known without a new host sync (checks every step): masking can be skipped."""
        return self.check_every == 1 and bool(self.active.all())

    def result(self, z: Tensor) -> SolverResult:
        can_stall = self.steps > self.max_iter - self.window_start
        return SolverResult(z, self.iterations, self.residual, self.residual <= self.tol, self.steps,
                            outcomes(z, self.residual, self.best_before, self.best_recent, self.tol,
                                     can_stall))


def active_mask(active: Tensor, like: Tensor) -> Tensor:
    return active.reshape(active.shape + (1,) * (like.dim() - 2))
