"""What every solver shares: the result object with its per-sample outcomes, the relative
residual, and the loop's book-keeping (per-sample stopping, the residual trace, early exit with
one host sync every ``check_every`` iterations)."""
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


def outcomes(z: Tensor, residual: Tensor, trace: Tensor, tol: float) -> Tensor:
    """Each (member, sample)'s :data:`OUTCOMES` index ``(E, B)`` from its final iterate,
    residual and residual trace (computed once, after the loop: no host sync)."""
    finite = torch.isfinite(z).flatten(2).all(-1) & torch.isfinite(residual)
    steps = trace.shape[0]
    w = max(1, int(steps * STALL_WINDOW))
    if steps > w:
        recent = trace[-w:].nan_to_num(nan=float("inf")).amin(0)
        before = trace[:-w].nan_to_num(nan=float("inf")).amin(0)
        stalled = ~(recent < STALL_GAIN * before)
    else:  # too few steps to tell a plateau from progress
        stalled = torch.zeros_like(finite)
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
    trace: Tensor          # (steps, E, B) relative residual after each step
    converged: Tensor      # (E, B) residual <= tol (False for NaN/inf)
    steps: int             # loop steps run (max over samples)
    outcome: Tensor        # (E, B) index into OUTCOMES: how each sample's solve ended

    def counts(self) -> dict[str, Tensor]:
        """Per member, the number of samples that ended each way: ``{outcome: (E,) counts}``."""
        return {name: (self.outcome == i).sum(1) for i, name in enumerate(OUTCOMES)}


def concat_results(results: list[SolverResult]) -> SolverResult:
    """One result for member groups solved one after another (traces padded with their last row)."""
    if len(results) == 1:
        return results[0]
    steps = max(r.steps for r in results)
    traces = [torch.cat([r.trace, r.trace[-1:].expand(steps - r.trace.shape[0], *r.trace.shape[1:])])
              for r in results]
    cat = lambda key: torch.cat([getattr(r, key) for r in results])  # noqa: E731
    return SolverResult(cat("z"), cat("iterations"), cat("residual"), torch.cat(traces, dim=1),
                        cat("converged"), steps, cat("outcome"))




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


def _default_check_every(z: Tensor) -> int:
    return 1 if z.device.type == "cpu" else 8


class SolveLoop:
    """Book-keeping shared by the solvers: per-sample stopping, trace, early exit."""

    def __init__(self, z0: Tensor, tol: float, max_iter: int, check_every: int | None,
                 stop: str = "sample", eps: float = 0.0):
        self.tol, self.max_iter, self.stop, self.eps = tol, max_iter, stop, eps
        self.check_every = check_every or _default_check_every(z0)
        shape = z0.shape[:2]
        self.active = torch.ones(shape, dtype=torch.bool, device=z0.device)
        self.iterations = torch.zeros(shape, dtype=torch.long, device=z0.device)
        self.residual = torch.full(shape, float("inf"), dtype=z0.dtype, device=z0.device)
        self.trace: list[Tensor] = []

    def residual_of(self, fz: Tensor, z: Tensor, diff: Tensor | None = None) -> Tensor:
        return relative_residual(fz, z, self.stop, diff, self.eps)

    def record(self, res: Tensor) -> Tensor:
        """Store this step's residual for active samples; return the mask of samples still active."""
        res = torch.where(self.active, res, self.residual)
        self.residual = res
        self.iterations += self.active.long()
        self.trace.append(res)
        self.active = self.active & ~(res <= self.tol)
        return self.active

    def should_stop(self, step: int) -> bool:
        Interrupt.check()
        return (step + 1) % self.check_every == 0 and not bool(self.active.any())

    def all_active(self) -> bool:
        """True only when known without a new host sync (checks every step): masking can be skipped."""
        return self.check_every == 1 and bool(self.active.all())

    def result(self, z: Tensor) -> SolverResult:
        trace = torch.stack(self.trace) if self.trace else self.residual[None]
        return SolverResult(z, self.iterations, self.residual, trace, self.residual <= self.tol,
                            len(self.trace), outcomes(z, self.residual, trace, self.tol))


def active_mask(active: Tensor, like: Tensor) -> Tensor:
    return active.reshape(active.shape + (1,) * (like.dim() - 2))
