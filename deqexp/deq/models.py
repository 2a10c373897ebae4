"""DEQ layers whose activation comes from a family, with a leading ensemble axis.

Dense:  ``z = sigma(W z + U t + b)``, readout ``V z + Q t + c``.
Conv:   ``z = sigma(conv_W z + conv_U t)``, readout ``conv_V z + conv_Q t``.

Every parameter has a leading axis of E members. Members never mix: each
member's outputs and gradients are what a separate layer would give, so E
independently initialised models train in one pass (sum the members' losses).
Inputs may carry E or 1 on their leading axis (1 = shared data).
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import nn

from ..theory.families import Family
from . import operators
from .diagnostics import Diagnostics
from .freezing import MemberFreezing
from .gradients import BackwardStats, GradientSettings, attach
from .recurrence import Recurrence
from .settings import LINEAR_ONLY, SolverSettings
from .solver_loop import SolverResult, concat_results

Tensor = torch.Tensor


@dataclass
class DEQOutput:
    """What a forward call returns: the output, the forward solve's statistics, and the sink
    that the backward pass's adjoint solves will report to (filled during ``backward()``)."""

    out: Tensor
    forward: SolverResult
    backward: BackwardStats


class _DEQ(Diagnostics, MemberFreezing, nn.Module):
    """Shared forward logic: solve without gradients, then attach the gradient method.

    ``member_chunk`` solves the members in groups of that many, one after another: on a CPU
    a group's tensors then stay in the caches (a 64-member E1 job runs about 3x faster in
    groups of 4); on a GPU one group of all members keeps the device busy. Results do not
    depend on it.
    """

    readout_mean: bool = False
    tied: dict[str, str] = {}   # readout parameter -> the layer parameter it is (tie_readout)
    recurrence: Recurrence = Recurrence()  # how W is parametrised and the fixed point found

    def __init__(self, family: Family, ensemble: int, solver: SolverSettings | None,
                 gradient: GradientSettings | None, readout: str, member_chunk: int | None = None):
        super().__init__()
        if readout not in ("natural", "mean"):
            raise ValueError(f"readout must be 'natural' or 'mean', got '{readout}'")
        self.family, self.ensemble = family, ensemble
        self.solver = solver or SolverSettings()
        self.gradient = gradient or GradientSettings()
        self.solver.check("solver.forward")
        if self.solver.name in LINEAR_ONLY:
            raise ValueError(f"solver.forward.name={self.solver.name} solves affine maps only, and the "
                             f"forward map is nonlinear; use it for the adjoint: "
                             f"solver.backward.name={self.solver.name}")
        self.gradient.check("solver.backward")
        self.readout_mean = readout == "mean"
        self.member_chunk = member_chunk
        self.frozen: dict[str, Tensor] = {}
        self.norm_starts: dict[str, dict] = {"W": {}, "U": {}}  # warm starts of the iterative norms

    # subclasses: _recur, _recur_adjoint, _inject, _readout, _z0; ``p`` holds the
    # parameters of a group of members (slices of the stacked parameters)

    def _recur_inject(self, p, z: Tensor, inj: Tensor) -> Tensor:
        """The pre-activation ``W z + inj``."""
        return self._recur(p, z) + inj

    def _expand(self, t: Tensor) -> Tensor:
        """Shared data (a leading axis of 1) seen by every member, without a copy."""
        return t.expand(self.ensemble, *t.shape[1:]) if t.shape[0] == 1 else t

    def members(self, sl: slice = slice(None)) -> SimpleNamespace:
        """The parameters of members ``sl`` (views: gradients flow to the stacked tensors)."""
        p = SimpleNamespace(**{n: q[sl] for n, q in self._parameters.items()})
        for tied, source in self.tied.items():  # a tied readout uses the layer's own filters
            setattr(p, tied, getattr(p, source))
        p.W = self.recurrence.weight(p)  # W itself, or made from a stabiliser's raw parameters
        return p

    def _groups(self) -> list[slice]:
        c = self.member_chunk
        if not c or c >= self.ensemble:
            return [slice(0, self.ensemble)]
        return [slice(s, min(s + c, self.ensemble)) for s in range(0, self.ensemble, c)]

    def _map(self, p, t: Tensor):
        """The fixed-point map ``f(z) = a'(W z + inj)`` of one group, and its injection ``inj``."""
        inj = self._inject(p, t)

        def f(z):
            pre = self._recur_inject(p, z, inj)
            # the pre-activation is a temporary: without autograd, activate it in place
            return self.family.mean(pre) if torch.is_grad_enabled() else self.family.mean_(pre)

        return f, inj

    def _equilibrium(self, p, f, z0: Tensor, inj: Tensor) -> SolverResult:
        """The forward solve (no gradients), as the recurrence's parametrisation does it."""
        with torch.no_grad():
            return self.recurrence.equilibrium(self.solver, f, z0, p.W, inj, self.family.mean)

    def _solve(self, p, t: Tensor, key: int, sink: BackwardStats) -> tuple[Tensor, SolverResult]:
        """Fixed point of one group of members, with the gradient method attached."""
        f, inj = self._map(p, t)
        z0 = self._z0(p, t)
        res = self._equilibrium(p, f, z0, inj)
        jac = []  # a''(.) at the Jacobian's point, built by the first backward call only

        def vjp(u, plus=None):
            if not jac:
                with torch.no_grad():
                    at = res.z if self.gradient.jacobian_at == "solution" else f(res.z)
                    jac.append(self.family.variance_operator(self._recur_inject(p, at, inj)))
            return self._recur_adjoint(p, jac[0](u), plus)

        return attach(self.gradient, f, res, vjp, self.solver, z0, sink, key), res

    def run(self, t: Tensor, readout: bool = True) -> DEQOutput:
        """Solve for every member group; return the output with the solver statistics."""
        t = self._expand(t)
        sink = BackwardStats()
        outs, results = [], []
        for sl in self._groups():
            p, ts = self.members(sl), t[sl]
            z, res = self._solve(p, ts, sl.start, sink)
            results.append(res)
            if readout:
                z = self._readout(p, z, ts)
                z = self.family.mean(z) if self.readout_mean else z
            outs.append(z)
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        return DEQOutput(out, concat_results(results), sink)

    def fixed_point(self, t: Tensor) -> Tensor:
        """The (differentiable) fixed point ``z*`` for input ``t = T(y)``."""
        return self.run(t, readout=False).out

    def forward(self, t: Tensor) -> Tensor:
        """Readout of the fixed point: natural parameters, or means if ``readout='mean'``."""
        return self.run(t).out

    def set_member(self, e: int, name: str, value: Tensor) -> None:
        """Set member ``e``'s parameter ``name`` (W through the recurrence's raw parameters)."""
        values = self.recurrence.factor(value) if name == "W" else {name: value}
        for key, v in values.items():
            if key in self._parameters:  # a tied readout has no V, Q of its own
                getattr(self, key)[e] = v.to(getattr(self, key).dtype)


def _mm(w: Tensor, x: Tensor) -> Tensor:
    """Per-member ``w @ x`` over the location axis: w (E, m, n), x (E, B, n[, C])."""
    if x.dim() == 3:
        return torch.bmm(x, w.transpose(1, 2))
    return torch.einsum("emn,ebnc->ebmc", w, x)


def _mm_t(w: Tensor, x: Tensor) -> Tensor:
    """Per-member ``w^T @ x``."""
    if x.dim() == 3:
        return torch.bmm(x, w)
    return torch.einsum("emn,ebmc->ebnc", w, x)


class DenseDEQ(_DEQ):
    """Fully connected DEQ over locations (and C classes on a trailing axis for categorical)."""

    def __init__(self, n_in: int, width: int, n_out: int, family: Family, ensemble: int = 1,
                 solver: SolverSettings | None = None, gradient: GradientSettings | None = None,
                 readout: str = "natural", classes: int | None = None, member_chunk: int | None = None,
                 recurrence: Recurrence | None = None, dtype=torch.float32):
        super().__init__(family, ensemble, solver, gradient, readout, member_chunk)
        e = ensemble
        z = lambda *s: nn.Parameter(torch.zeros(e, *s, dtype=dtype))  # noqa: E731
        self.recurrence = recurrence or Recurrence()
        self.recurrence.check_family(family)
        for name, value in self.recurrence.parameters(e, width, dtype).items():
            setattr(self, name, nn.Parameter(value))
        self.U, self.b = z(width, n_in), z(width)
        self.V, self.Q, self.c = z(n_out, width), z(n_out, n_in), z(n_out)
        # a trailing one-hot axis: the categorical family's classes, or the data's (copy_memory)
        self.classes = family.classes if classes is None else classes

    def _bias(self, b: Tensor) -> Tensor:
        return b[:, None, :, None] if self.classes else b[:, None, :]

    @property
    def width(self) -> int:
        return self.U.shape[1]

    def recurrent_weight(self) -> Tensor:
        """Every member's W ``(E, d, d)``, made from the recurrence's raw parameters."""
        return self.members().W

    def _z0(self, p, t):
        shape = (t.shape[0], t.shape[1], self.width) + ((self.classes,) if self.classes else ())
        return t.new_zeros(shape)

    def _recur(self, p, z):
        return _mm(p.W, z)

    def _recur_inject(self, p, z, inj):
        # one fused GEMM + add for the scalar families (the hot loop of every solve)
        if z.dim() == 3:
            return torch.baddbmm(inj, z, p.W.transpose(1, 2))
        return _mm(p.W, z) + inj

    def _recur_adjoint(self, p, u, plus=None):
        if u.dim() == 3 and plus is not None:
            return torch.baddbmm(plus, u, p.W)  # W^T u + plus, fused
        out = _mm_t(p.W, u)
        return out if plus is None else out + plus

    def _inject(self, p, t):
        return _mm(p.U, t) + self._bias(p.b)

    def _readout(self, p, z, t):
        return _mm(p.V, z) + _mm(p.Q, t) + self._bias(p.c)

    def operator_norms(self) -> dict[str, Tensor]:
        """Per-member spectral norms of W and U (large ones warm-started from the last call)."""
        with torch.no_grad():
            return {k: operators.dense_norms(p, self.norm_starts[k])
                    for k, p in (("W", self.recurrent_weight()), ("U", self.U))}


class ConvDEQ(_DEQ):
    """Convolutional DEQ on ``(E, B, C, H, W)`` images, 'same' size, no bias.

    ``tie_readout=True`` makes the readout's filters the layer's own (``V = W``, ``Q = U``, as
    one parameter each, so the gradient of both uses adds up), as in the authors' E2 code.
    """

    def __init__(self, channels: int, kernel_size: int, family: Family, ensemble: int = 1,
                 hidden: int | None = None, padding: str = "zeros",
                 solver: SolverSettings | None = None, gradient: GradientSettings | None = None,
                 readout: str = "mean", norm_method: str = "exact", member_chunk: int | None = None,
                 tie_readout: bool = False, dtype=torch.float32):
        super().__init__(family, ensemble, solver, gradient, readout, member_chunk)
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        if padding not in ("zeros", "circular"):
            raise ValueError(f"padding must be 'zeros' or 'circular', got '{padding}'")
        h, c, k, e = hidden or channels, channels, kernel_size, ensemble
        z = lambda co, ci: nn.Parameter(torch.zeros(e, co, ci, k, k, dtype=dtype))  # noqa: E731
        self.W, self.U = z(h, h), z(h, c)
        if tie_readout:  # the authors' E2 model: V is W and Q is U (one set of filters, trained once)
            if h != c:
                raise ValueError(f"tie_readout needs hidden channels == channels, got {h} and {c}")
            self.tied = {"V": "W", "Q": "U"}
        else:
            self.V, self.Q = z(c, h), z(c, c)
        self.padding, self.norm_method = padding, norm_method

    def _conv(self, filters: Tensor, x: Tensor) -> Tensor:
        """Each member's convolution: members become groups of one grouped convolution."""
        e, b = x.shape[:2]
        xs = x.transpose(0, 1).reshape(b, e * x.shape[2], *x.shape[3:])
        # channels-last makes the grouped convolution several times faster on CPUs
        xs = xs.contiguous(memory_format=torch.channels_last)
        out = operators.conv(xs, filters.reshape(-1, *filters.shape[2:]), self.padding, groups=e)
        return out.contiguous().reshape(b, e, -1, *out.shape[2:]).transpose(0, 1)

    def _z0(self, p, t):
        return t.new_zeros(t.shape[0], t.shape[1], self.W.shape[1], *t.shape[3:])

    def _recur(self, p, z):
        return self._conv(p.W, z)

    def _recur_adjoint(self, p, u, plus=None):
        out = self._conv(operators.adjoint_filters(p.W), u)
        return out if plus is None else out + plus

    def _inject(self, p, t):
        return self._conv(p.U, t)

    def _readout(self, p, z, t):
        return self._conv(p.V, z) + self._conv(p.Q, t)

    def operator_norms(self, height: int, width: int) -> dict[str, Tensor]:
        """Per-member operator norms of the recurrent and input convolutions on ``H x W``
        (the zero-padded exact norm starts from the previous call's vectors: filters move
        little between epochs)."""
        with torch.no_grad():
            return {k: operators.conv_norm(p, height, width, self.padding, self.norm_method,
                                           starts=self.norm_starts[k])
                    for k, p in (("W", self.W), ("U", self.U))}
