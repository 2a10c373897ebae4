"""Krylov solvers: restarted GMRES for affine maps (the implicit gradient's adjoint, where
iteration diverges) and Newton-GMRES for the forward map (no contraction needed); both take
the solvers' shared signature (:mod:`deqexp.deq.solvers`)."""
from __future__ import annotations

import torch

from .solver_loop import FixedPointMap, SolveLoop, SolverResult, active_mask

Tensor = torch.Tensor


def gmres(f: FixedPointMap, z0: Tensor, *, tol: float, max_iter: int, memory: int = 20,
          check_every: int | None = None, stop: str = "sample", residual_eps: float = 0.0) -> SolverResult:
    """Restarted GMRES(``memory``) for an affine map ``f(z) = A z + b``, per (member, sample).

    It solves ``(I - A) z = b`` in the Krylov space of ``I - A`` built from applications of
    ``f`` alone (``A v = f(v) - f(0)``), so it needs no contraction: the implicit gradient's
    adjoint ``u = u J + g`` is such a map, and GMRES solves it where iteration diverges
    (``||J|| > 1``). ``iterations`` counts Krylov steps, one application of f each (each
    restart applies f once more). For a map that is not affine the result is meaningless:
    the config refuses it for the forward solve.

    The least-squares problem is kept triangular by Givens rotations (O(m) a step), which give
    the residual's norm for free; ``||f(z_j)||`` comes from the Krylov coefficients (the basis
    is orthonormal), so a step touches no vector beyond the Arnoldi process, and each sample's
    iterate is formed once, when its cycle ends, from its coefficients at its last active step.
    """
    loop = SolveLoop(z0, tol, max_iter, check_every, stop, residual_eps)
    shape, (e, b_) = z0.shape, z0.shape[:2]
    n, d = e * b_, z0[0, 0].numel()
    flat = lambda t: t.reshape(n, d)  # noqa: E731
    b = flat(f(torch.zeros_like(z0)))
    z_out, steps = flat(z0).clone(), 0
    while steps < max_iter:
        m = min(memory, max_iter - steps)
        cycle = _Arnoldi(f, z_out, b, m, shape)
        for j in range(m):
            y, diff_sq, f_sq = cycle.step(j)
            was_active = loop.active.reshape(n, 1)
            loop.record(loop.residual_from(diff_sq.reshape(e, b_), f_sq.reshape(e, b_)))
            cycle.keep(y, was_active)
            steps += 1
            if loop.should_stop(steps - 1):
                return loop.result(cycle.iterate().reshape(shape))
        z_out = cycle.iterate()
    return loop.result(z_out.reshape(shape))


class _Arnoldi:
    """One GMRES cycle from ``z``: the orthonormal Krylov basis (modified Gram-Schmidt), the
    Hessenberg matrix reduced to triangular ``r`` by Givens rotations ``(cos, sin)``, the
    rotated right-hand side ``g`` and each sample's kept coefficients."""

    def __init__(self, f, z: Tensor, b: Tensor, m: int, shape):
        self.f, self.z, self.b, self.shape = f, z, b, shape
        n, d = z.shape
        res = f(z.reshape(shape)).reshape(n, d) - z   # b - (I - A) z
        beta = res.norm(dim=-1)
        self.tiny = torch.finfo(z.dtype).tiny
        self.basis = z.new_zeros(m + 1, n, d)
        self.basis[0] = res / beta.clamp_min(self.tiny)[:, None]
        self.r = z.new_zeros(n, m, m)
        self.cos, self.sin = z.new_zeros(m, n), z.new_zeros(m, n)
        self.g = z.new_zeros(n, m + 1)
        self.g[:, 0] = beta
        self.z_sq = (z * z).sum(-1)
        self.z_dot = z.new_zeros(n, m + 1)   # z . v_i: ||f(z_j)|| without forming f(z_j)
        self.z_dot[:, 0] = (z * self.basis[0]).sum(-1)
        self.kept = z.new_zeros(n, m)        # coefficients of the samples' last active step

    def step(self, j: int) -> tuple[Tensor, Tensor, Tensor]:
        """Extend the basis by one vector; return the coefficients ``y`` of the least-squares
        iterate ``z_j = z + V y`` and, per sample, ``||f(z_j) - z_j||^2`` and ``||f(z_j)||^2``."""
        n, d = self.z.shape
        v = self.basis
        w = v[j] - (self.f(v[j].reshape(self.shape)).reshape(n, d) - self.b)   # (I - A) v_j
        col = self.z.new_zeros(n, j + 2)
        for i in range(j + 1):  # modified Gram-Schmidt
            col[:, i] = (w * v[i]).sum(-1)
            w = w - col[:, i, None] * v[i]
        col[:, j + 1] = w.norm(dim=-1)
        v[j + 1] = w / col[:, j + 1].clamp_min(self.tiny)[:, None]  # breakdown: a zero vector
        self.z_dot[:, j + 1] = (self.z * v[j + 1]).sum(-1)
        for i in range(j):  # the earlier rotations, on the new column
            a, c = col[:, i].clone(), col[:, i + 1]
            col[:, i] = self.cos[i] * a + self.sin[i] * c
            col[:, i + 1] = -self.sin[i] * a + self.cos[i] * c
        self._rotate(j, col)
        y = torch.linalg.solve_triangular(self.r[:, : j + 1, : j + 1], self.g[:, : j + 1, None],
                                          upper=True)[..., 0]
        # the residual in the basis: g_{j+1} Q^T e_{j+1}, Q the rotations so far
        u = self.z.new_zeros(n, j + 2)
        u[:, j + 1] = self.g[:, j + 1]
        for i in range(j, -1, -1):
            a, c = u[:, i].clone(), u[:, i + 1].clone()
            u[:, i] = self.cos[i] * a - self.sin[i] * c
            u[:, i + 1] = self.sin[i] * a + self.cos[i] * c
        coef = u + torch.nn.functional.pad(y, (0, 1))            # f(z_j) = z + V (y + u)
        f_sq = self.z_sq + 2 * (self.z_dot[:, : j + 2] * coef).sum(-1) + (coef * coef).sum(-1)
        return y, self.g[:, j + 1] ** 2, f_sq

    def _rotate(self, j: int, col: Tensor) -> None:
        """The rotation that zeroes the new column's subdiagonal entry, applied to it and ``g``.
        A column that is zero (the Krylov space is invariant under a singular ``I - A``, or the
        right-hand side was 0) takes the swap: ``y_j = 0`` and the residual stays."""
        top, sub = col[:, j], col[:, j + 1]
        size = torch.hypot(top, sub)
        zero = size == 0
        safe = torch.where(zero, torch.ones_like(size), size)
        self.cos[j] = torch.where(zero, torch.zeros_like(size), top / safe)
        self.sin[j] = torch.where(zero, torch.ones_like(size), sub / safe)
        self.r[:, : j + 1, j] = col[:, : j + 1]
        self.r[:, j, j] = safe
        g = self.g[:, j].clone()
        self.g[:, j], self.g[:, j + 1] = self.cos[j] * g, -self.sin[j] * g

    def keep(self, y: Tensor, was_active: Tensor) -> None:
        """Keep the step's coefficients for the samples active in it (a sample that stops keeps
        those of its stopping step)."""
        k = y.shape[1]
        self.kept[:, :k] = torch.where(was_active, y, self.kept[:, :k])
        self.kept[:, k:] = torch.where(was_active, 0.0, self.kept[:, k:])

    def iterate(self) -> Tensor:
        """Each sample's iterate from its kept coefficients (unchanged where none were kept)."""
        m = self.kept.shape[1]
        return self.z + torch.einsum("knd,nk->nd", self.basis[:m], self.kept)


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


def jacobian_vector(f: FixedPointMap, z: Tensor, fz: Tensor, v: Tensor) -> Tensor:
    """``J v``, J the Jacobian of ``f`` at ``z`` (``fz = f(z)``): forward-mode AD
    (``torch.func.jvp``), exact; a forward difference (step sqrt(eps) relative to z's size per
    sample) for a map whose operations have no forward-mode rule."""
    try:
        return torch.func.jvp(f, (z,), (v,))[1]
    except (RuntimeError, NotImplementedError):
        return forward_difference(f, z, fz, v)


def forward_difference(f: FixedPointMap, z: Tensor, fz: Tensor, v: Tensor) -> Tensor:
    """``(f(z + h v) - f(z)) / h``, ``h`` per sample: sqrt(eps) (1 + ||z||) / ||v||."""
    tiny, root_eps = torch.finfo(z.dtype).tiny, torch.finfo(z.dtype).eps ** 0.5
    h = root_eps * (1 + per_sample_norm(z)) / per_sample_norm(v).clamp_min(tiny)
    return (f(z + h * v) - fz) / h


def per_sample_norm(t: Tensor) -> Tensor:
    """Each (member, sample)'s norm, shaped to broadcast against ``t``."""
    return t.flatten(2).norm(dim=-1).reshape(*t.shape[:2], *[1] * (t.dim() - 2))


def newton(f: FixedPointMap, z0: Tensor, *, tol: float, max_iter: int, memory: int = 10,
           check_every: int | None = None, stop: str = "sample", residual_eps: float = 0.0) -> SolverResult:
    """Jacobian-free Newton-Krylov on ``g(z) = f(z) - z``: each step solves the Newton system
    ``(I - J) dz = f(z) - z`` by :func:`gmres` with ``memory`` Krylov steps, its products
    ``J v`` by forward-mode AD (:func:`jacobian_vector`; no Jacobian is formed). Per (member, sample)
    as the others; ``iterations`` counts Newton steps, each applying f ``memory + 5`` times
    (the Krylov steps, and a per-sample choice of step length, :func:`_line_search`).
    Near a solution it converges much faster than iteration, and needs no contraction."""
    loop = SolveLoop(z0, tol, max_iter, check_every, stop, residual_eps)
    z = z0
    for step in range(max_iter):
        fz = f(z)
        r = fz - z
        active = active_mask(loop.active, z)
        loop.record(loop.residual_of(fz, z, r))
        if step == max_iter - 1:
            z = torch.where(active, fz, z)  # the last step: a plain update, as broyden's
            break

        def linear(v, z=z, fz=fz, r=r):  # J v + r
            return jacobian_vector(f, z, fz, v) + r

        dz = gmres(linear, torch.zeros_like(z), tol=min(0.1, tol), max_iter=memory, memory=memory,
                   check_every=memory + 1, stop=stop).z
        z = torch.where(active, _line_search(f, z, dz, per_sample_norm), z)
        if loop.should_stop(step):
            break
    return loop.result(z)
