"""Spectral normalisation of the recurrent matrix (``model.recurrence=spectral``), as torchdeq
offers it: ``W = g W_raw / ||W_raw||_2`` with the target norm g fixed (``model.spectral.target``)
or learned per member (``model.spectral.learned``, starting at the target).

With ``||W||_2 = g`` the map ``sigma(W z + inj)`` has ``||J||_2 <= sup a'' g``: a contraction
for ``g < 1 / sup a''``. The norm is the exact largest singular value (an SVD per forward
call, differentiable), not a power-iteration estimate: dense widths are small enough.
"""
from __future__ import annotations

import torch

from .recurrence import Recurrence

Tensor = torch.Tensor


class Spectral(Recurrence):
    """``W = g W_raw / ||W_raw||_2``."""

    name = "spectral"

    def __init__(self, target: float = 1.0, learned: bool = False):
        if not target > 0:
            raise ValueError(f"model.spectral.target={target} must be > 0")
        self.target, self.learned = float(target), learned

    def parameters(self, ensemble, width, dtype):
        out = super().parameters(ensemble, width, dtype)
        if self.learned:
            out["W_scale"] = torch.full((ensemble,), self.target, dtype=dtype)
        return out

    @property
    def raw(self):
        return ("W", "W_scale") if self.learned else ("W",)

    def weight(self, p) -> Tensor:
        sigma = torch.linalg.matrix_norm(p.W, ord=2).clamp_min(torch.finfo(p.W.dtype).tiny)
        g = p.W_scale if self.learned else self.target
        return p.W * (g / sigma)[:, None, None]
