"""How a dense layer's recurrent matrix W is parametrised, and how its fixed point is found.

The plain layer trains W itself and solves ``z = sigma(W z + inj)`` with the configured
solver. :mod:`deqexp.deq.spectral` and :mod:`deqexp.deq.monotone` train other raw parameters
that W is a function of (a stabiliser), and the monotone one also solves by operator splitting.
"""
from __future__ import annotations

import torch

Tensor = torch.Tensor


class Recurrence:
    """The plain parametrisation: W is a parameter of its own (``model.recurrence=free``)."""

    name = "free"

    def parameters(self, ensemble: int, width: int, dtype) -> dict[str, Tensor]:
        """The raw parameters' initial (zero) values, by name."""
        return {"W": torch.zeros(ensemble, width, width, dtype=dtype)}

    @property
    def raw(self) -> tuple[str, ...]:
        """The parameters that W is made from (what freezing W freezes)."""
        return ("W",)

    def weight(self, p) -> Tensor:
        """The recurrent matrices ``(E, d, d)`` from the raw parameters in ``p``."""
        return p.W

    def factor(self, w: Tensor) -> dict[str, Tensor]:
        """Raw values of one member that give (or, outside the class, best approximate) ``w``:
        how an init's W is set."""
        return {"W": w}

    def check_family(self, family) -> None:
        """Raise ValueError for a family this parametrisation cannot serve."""

    def equilibrium(self, solver, f, z0: Tensor, w: Tensor, inj: Tensor, sigma):
        """The forward solve of ``z = f(z) = sigma(w z + inj)`` (a :class:`SolverResult`)."""
        return solver.solve(f, z0)
