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
from typing import Callable, Optional

import torch

from .linalg import solve_spd

Tensor = torch.Tensor
FixedPointMap = Callable[[Tensor], Tensor]

# how a sample's solve ended (SolverResult.outcome holds the index), in this order of precedence
OUTCOMES = ("converged", "cap", "stalled", "nonfinite")
CONVERGED, CAP, STALLED, NONFINITE = range(len(OUTCOMES))
# stalled: the last quarter of its iterations lowered its best residual by less than 10%
# (a plateau, a cycle or a slow divergence: more iterations would not help); cap: it was
# still making progress when the iteration cap stopped it
STALL_WINDOW, STALL_GAIN = 0.25, 0.9
ON_FAILURE = ("ignore", "warn", "raise")


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


STOP_RULES = ("sample", "member")
COUNTINGS = ("standard", "authors")


def relative_residual(fz: Tensor, z: Tensor, stop: str = "sample", diff: Tensor | None = None,
                      eps: float = 0.0) -> Tensor:
    """``||f(z) - z|| / (eps + ||f(z)||)`` per (member, sample); NaN stays NaN.

    ``stop="member"`` takes the norms over a member's whole batch (the paper's criterion),
    broadcast to its samples: all of a member's samples then stop together. ``eps`` is the
    authors' ``1e-5 +`` in the denominator (0: a purely relative test).
    """
    diff = fz - z if diff is None else diff
    dims = 1 if stop == "member" else 2
    if stop not in STOP_RULES:
        raise ValueError(f"stop must be 'sample' or 'member', got '{stop}'")
    den = fz.flatten(dims).norm(dim=-1)
    # no absolute floor unless asked for: adjoint vectors can be tiny
    den = den + eps if eps > 0 else den.clamp_min(torch.finfo(fz.dtype).tiny)
    r = diff.flatten(dims).norm(dim=-1) / den
    return r[:, None].expand(fz.shape[:2]) if stop == "member" else r


def _default_check_every(z: Tensor) -> int:
    return 1 if z.device.type == "cpu" else 8


class _Loop:
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
        return (step + 1) % self.check_every == 0 and not bool(self.active.any())

    def all_active(self) -> bool:
        """True only when known without a new host sync (checks every step): masking can be skipped."""
        return self.check_every == 1 and bool(self.active.all())

    def result(self, z: Tensor) -> SolverResult:
        trace = torch.stack(self.trace) if self.trace else self.residual[None]
        return SolverResult(z, self.iterations, self.residual, trace, self.residual <= self.tol,
                            len(self.trace), outcomes(z, self.residual, trace, self.tol))


def _mask(active: Tensor, like: Tensor) -> Tensor:
    return active.reshape(active.shape + (1,) * (like.dim() - 2))


def forward_iteration(f: FixedPointMap, z0: Tensor, *, tol: float, max_iter: int,
                      damping: float = 1.0, check_every: int | None = None, stop: str = "sample",
                      residual_eps: float = 0.0) -> SolverResult:
    """Plain (optionally damped) iteration ``z <- (1 - damping) z + damping f(z)``."""
    loop, z = _Loop(z0, tol, max_iter, check_every, stop, residual_eps), z0
    for step in range(max_iter):
        fz = f(z)
        diff = fz - z
        active, everyone = _mask(loop.active, z), loop.all_active()
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
    loop = _Loop(z0, tol, max_iter, check_every, stop, residual_eps)
    shape, (e, b) = z0.shape, z0.shape[:2]
    n, d = e * b, z0[0, 0].numel()
    xs = z0.new_zeros(memory, n, d)   # slot-major: each slot is one contiguous (n, d) block
    gs = z0.new_zeros(memory, n, d)
    gram = z0.new_zeros(n, memory, memory)
    z = z0
    for step in range(max_iter):
        fz = f(z)
        active = _mask(loop.active, z)
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
    loop = _Loop(z0, tol, max_iter, check_every, stop, residual_eps)
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


def gmres(f: FixedPointMap, z0: Tensor, *, tol: float, max_iter: int, memory: int = 20,
          check_every: int | None = None, stop: str = "sample", residual_eps: float = 0.0) -> SolverResult:
    """Restarted GMRES(``memory``) for an affine map ``f(z) = A z + b``, per (member, sample).

    It solves ``(I - A) z = b`` in the Krylov space of ``I - A`` built from applications of
    ``f`` alone (``A v = f(v) - f(0)``), so it needs no contraction: the implicit gradient's
    adjoint ``u = u J + g`` is such a map, and GMRES solves it where iteration diverges
    (``||J|| > 1``). ``iterations`` counts Krylov steps, one application of f each (each
    restart applies f once more). For a map that is not affine the result is meaningless:
    the config refuses it for the forward solve.
    """
    loop = _Loop(z0, tol, max_iter, check_every, stop, residual_eps)
    shape, (e, b_) = z0.shape, z0.shape[:2]
    n, d = e * b_, z0[0, 0].numel()
    flat = lambda t: t.reshape(n, d)  # noqa: E731
    b = flat(f(torch.zeros_like(z0)))
    tiny = torch.finfo(z0.dtype).tiny
    z_out, steps = flat(z0).clone(), 0
    while steps < max_iter:
        z = z_out
        r = flat(f(z.reshape(shape))) - z          # b - (I - A) z
        beta = r.norm(dim=-1)
        m = min(memory, max_iter - steps)
        basis = z0.new_zeros(m + 1, n, d)
        basis[0] = r / beta.clamp_min(tiny)[:, None]
        h = z0.new_zeros(n, m + 1, m)
        for j in range(m):
            w = basis[j] - (flat(f(basis[j].reshape(shape))) - b)   # (I - A) v_j
            for i in range(j + 1):  # modified Gram-Schmidt
                h[:, i, j] = (w * basis[i]).sum(-1)
                w = w - h[:, i, j, None] * basis[i]
            h[:, j + 1, j] = w.norm(dim=-1)
            basis[j + 1] = w / h[:, j + 1, j].clamp_min(tiny)[:, None]  # breakdown: a zero vector
            rhs = torch.zeros(n, j + 2, 1, dtype=z0.dtype, device=z0.device)
            rhs[:, 0, 0] = beta
            y = torch.linalg.lstsq(h[:, : j + 2, : j + 1], rhs).solution      # (n, j+1, 1)
            z_j = z + torch.einsum("knd,nk->nd", basis[: j + 1], y[..., 0])
            r_j = torch.einsum("knd,nk->nd", basis[: j + 2], (rhs - h[:, : j + 2, : j + 1] @ y)[..., 0])
            active = loop.active.reshape(n, 1)
            z_out = torch.where(active, z_j, z_out)
            loop.record(loop.residual_of((z_j + r_j).reshape(shape), z_j.reshape(shape),
                                         r_j.reshape(shape)))
            steps += 1
            if loop.should_stop(steps - 1):
                return loop.result(z_out.reshape(shape))
    return loop.result(z_out.reshape(shape))


NEWTON_STEPS = (1.0, 0.5, 0.25)  # step lengths tried per sample (the best residual wins)


def _line_search(f: FixedPointMap, z: Tensor, dz: Tensor, per_sample) -> Tensor:
    """``z + a dz`` with, per sample, the ``a`` in :data:`NEWTON_STEPS` of least residual
    ``||f(z') - z'||`` (a full Newton step can overshoot far from the solution)."""
    best, best_res = None, None
    for a in NEWTON_STEPS:
        cand = z + a * dz
        res = per_sample(f(cand) - cand).nan_to_num(nan=float("inf"))
        if best is None:
            best, best_res = cand, res
        else:
            better = res < best_res
            best, best_res = torch.where(better, cand, best), torch.where(better, res, best_res)
    return best


def newton(f: FixedPointMap, z0: Tensor, *, tol: float, max_iter: int, memory: int = 10,
           check_every: int | None = None, stop: str = "sample", residual_eps: float = 0.0) -> SolverResult:
    """Jacobian-free Newton-Krylov on ``g(z) = f(z) - z``: each step solves the Newton system
    ``(I - J) dz = f(z) - z`` by :func:`gmres` with ``memory`` Krylov steps, its products
    ``J v`` taken by a forward difference of f (no Jacobian is formed). Per (member, sample)
    as the others; ``iterations`` counts Newton steps, each applying f ``memory + 5`` times
    (the Krylov steps, and a per-sample choice of step length, :func:`_line_search`).
    Near a solution it converges much faster than iteration, and needs no contraction."""
    loop = _Loop(z0, tol, max_iter, check_every, stop, residual_eps)
    z, root_eps = z0, torch.finfo(z0.dtype).eps ** 0.5
    per_sample = lambda t: t.flatten(2).norm(dim=-1).reshape(*t.shape[:2], *[1] * (t.dim() - 2))  # noqa: E731
    for step in range(max_iter):
        fz = f(z)
        r = fz - z
        active = _mask(loop.active, z)
        loop.record(loop.residual_of(fz, z, r))
        if step == max_iter - 1:
            z = torch.where(active, fz, z)  # the last step: a plain update, as broyden's
            break

        def linear(v, z=z, fz=fz, r=r):  # J v + r, J v by a forward difference
            h = root_eps * (1 + per_sample(z)) / per_sample(v).clamp_min(torch.finfo(z.dtype).tiny)
            return (f(z + h * v) - fz) / h + r

        dz = gmres(linear, torch.zeros_like(z), tol=min(0.1, tol), max_iter=memory, memory=memory,
                   check_every=memory + 1, stop=stop).z
        z = torch.where(active, _line_search(f, z, dz, per_sample), z)
        if loop.should_stop(step):
            break
    return loop.result(z)


SOLVERS = {"forward": forward_iteration, "anderson": anderson, "broyden": broyden, "gmres": gmres,
           "newton": newton}
# solvers of affine maps only (the adjoint solve); the forward map is nonlinear
LINEAR_ONLY = ("gmres",)


def get_solver(name: str):
    """The solver function called ``name``; unknown names raise a ValueError listing the choices."""
    if name not in SOLVERS:
        raise ValueError(f"unknown solver '{name}'; choose one of {sorted(SOLVERS)}")
    return SOLVERS[name]


def register_solver(name: str, fn) -> None:
    """Add a solver with the shared signature ``fn(f, z0, *, tol, max_iter, check_every, stop,
    residual_eps[, memory]) -> SolverResult`` under ``name`` (``solver.forward.name=NAME``)."""
    SOLVERS[name] = fn


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
                                      # gmres (affine maps: the backward solve only) | registered
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
