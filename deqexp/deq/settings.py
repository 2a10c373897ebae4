"""How a fixed point is solved, as configured: :class:`SolverSettings` (the forward solve) and
:class:`GradientSettings` (the gradient method and its adjoint solve), with the names each key
may take. Free of torch, so that the config schemas (and ``deqexp train --help``, ``--cfg
job``, ``status``) load without it; the solvers themselves are :mod:`deqexp.deq.solvers`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

# the solvers' names (deqexp.deq.solvers.SOLVERS holds their functions; a test keeps both equal)
SOLVER_NAMES = ("forward", "anderson", "broyden", "gmres", "newton")
# solvers of affine maps only (the adjoint solve); the forward map is nonlinear
LINEAR_ONLY = ("gmres",)
STOP_RULES = ("sample", "member")
COUNTINGS = ("standard", "authors")
ON_FAILURE = ("ignore", "warn", "raise")


def one_of(key: str, name: str, value, choices) -> None:
    """Raise ValueError naming ``key.name`` when ``value`` is not among ``choices``."""
    if value not in choices:
        raise ValueError(f"{key}.{name}={value!r} is not valid; choose one of {list(choices)}")


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
        if self.name not in SOLVER_NAMES:
            raise ValueError(f"{key}.name={self.name!r} is not valid; choose one of {sorted(SOLVER_NAMES)}")
        if not self.tol > 0:
            raise ValueError(f"{key}.tol={self.tol} is not valid; it must be > 0")
        if self.max_iter < 1:
            raise ValueError(f"{key}.max_iter={self.max_iter} is not valid; it must be >= 1")
        for name, choices in (("stop", STOP_RULES), ("counting", COUNTINGS), ("on_failure", ON_FAILURE)):
            one_of(key, name, getattr(self, name), choices)
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

    def solve(self, f, z0):
        """Solve ``z = f(z)`` from ``z0`` with these settings (a :class:`SolverResult`)."""
        from .solvers import get_solver  # torch: only when something is solved

        if self.counting == "authors":
            z0 = f(z0)  # their routine: one application before the loop, never tested
        return get_solver(self.name)(f, z0, **self.options())


GRADIENTS = ("implicit", "unrolled", "onestep")
JACOBIAN_POINTS = ("solution", "output")


@dataclass
class GradientSettings(SolverSettings):
    """The gradient method and, for ``implicit``, the adjoint solve's settings."""

    gradient: str = "implicit"        # implicit | unrolled | onestep
    # where J is taken: at the solve's z* (solution), or at f(z*), the output of the last
    # application, as the authors' hook did (output); the same at a converged fixed point
    jacobian_at: str = "solution"

    def check(self, key: str = "solver.backward") -> None:
        one_of(key, "gradient", self.gradient, GRADIENTS)
        one_of(key, "jacobian_at", self.jacobian_at, JACOBIAN_POINTS)
        super().check(key)
