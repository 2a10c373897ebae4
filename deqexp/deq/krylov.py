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
    """
    loop = SolveLoop(z0, tol, max_iter, check_every, stop, residual_eps)
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
    loop = SolveLoop(z0, tol, max_iter, check_every, stop, residual_eps)
    z, root_eps = z0, torch.finfo(z0.dtype).eps ** 0.5
    per_sample = lambda t: t.flatten(2).norm(dim=-1).reshape(*t.shape[:2], *[1] * (t.dim() - 2))  # noqa: E731
    for step in range(max_iter):
        fz = f(z)
        r = fz - z
        active = active_mask(loop.active, z)
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
