"""Small dense linear algebra that the solvers need on many tiny systems at once."""
from __future__ import annotations

import torch

Tensor = torch.Tensor


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
