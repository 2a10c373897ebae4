"""Kernels on locations of any dimension.

A :class:`Kernel` maps two location arrays ``(n, d)`` and ``(m, d)`` to the
``(n, m)`` Gram matrix. Stationary kernels work on the difference ``x - x'``, so
on a pixel grid they also give a convolution filter (:mod:`deqexp.theory.filters`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

Tensor = torch.Tensor


def _as_locations(x: Tensor) -> Tensor:
    x = torch.as_tensor(x)
    return x.unsqueeze(-1) if x.dim() == 1 else x


@dataclass
class Kernel:
    """Base class: subclasses implement :meth:`matrix`; products come from ``*``."""

    def matrix(self, x1: Tensor, x2: Tensor | None = None) -> Tensor:
        """Gram matrix ``K_ij = k(x1_i, x2_j)`` (``x2`` defaults to ``x1``)."""
        raise NotImplementedError

    def __call__(self, x1, x2=None):
        x1 = _as_locations(x1)
        x2 = x1 if x2 is None else _as_locations(x2)
        return self.matrix(x1, x2)

    def __mul__(self, other: "Kernel") -> "Product":
        return Product([self, other])

    def min_eigenvalue(self, x: Tensor) -> float:
        """Smallest eigenvalue of the Gram matrix on ``x``: negative means not a kernel there."""
        k = self(torch.as_tensor(x, dtype=torch.float64))
        return float(torch.linalg.eigvalsh(0.5 * (k + k.T))[0])


@dataclass
class Stationary(Kernel):
    """``k(x, x') = variance * kappa(x - x')``; subclasses give :meth:`profile` of the offsets."""

    lengthscale: float = 1.0
    variance: float = 1.0

    def profile(self, diff: Tensor) -> Tensor:
        """``kappa`` at offsets ``diff`` of shape ``(..., d)`` (variance not included)."""
        raise NotImplementedError

    def matrix(self, x1, x2):
        diff = x1[:, None, :] - x2[None, :, :]
        return self.variance * self.profile(diff)


def _distance(diff: Tensor) -> Tensor:
    return diff.pow(2).sum(-1).clamp_min(0).sqrt()


@dataclass
class SquaredExponential(Stationary):
    """``exp(-|d|^2 / (2 l^2))``."""

    def profile(self, diff):
        return torch.exp(-0.5 * diff.pow(2).sum(-1) / self.lengthscale**2)


@dataclass
class Matern(Stationary):
    """Matern with smoothness ``nu`` in {0.5, 1.5, 2.5}."""

    nu: float = 1.5

    def profile(self, diff):
        r = _distance(diff) / self.lengthscale
        if self.nu == 0.5:
            return torch.exp(-r)
        if self.nu == 1.5:
            s = math.sqrt(3) * r
            return (1 + s) * torch.exp(-s)
        if self.nu == 2.5:
            s = math.sqrt(5) * r
            return (1 + s + s**2 / 3) * torch.exp(-s)
        raise ValueError(f"Matern nu must be 0.5, 1.5 or 2.5, got {self.nu}")


@dataclass
class Periodic(Stationary):
    """``exp(-2 sum_j sin^2(pi d_j / period) / l^2)`` (MacKay's periodic kernel)."""

    period: float = 2 * math.pi

    def profile(self, diff):
        s = torch.sin(math.pi * diff / self.period).pow(2).sum(-1)
        return torch.exp(-2 * s / self.lengthscale**2)


@dataclass
class Linear(Kernel):
    """``variance * <x, x'> + offset``."""

    variance: float = 1.0
    offset: float = 0.0

    def matrix(self, x1, x2):
        return self.variance * x1 @ x2.T + self.offset


@dataclass
class Polynomial(Kernel):
    """``(variance * <x, x'> + offset)^degree``."""

    variance: float = 1.0
    offset: float = 1.0
    degree: int = 2

    def matrix(self, x1, x2):
        return (self.variance * x1 @ x2.T + self.offset) ** self.degree


@dataclass
class SameDirection(Kernel):
    """``variance`` where two locations point the same way (cosine similarity 1), else 0.

    An equivalence relation's indicator, so PSD. On standardised 1-D positions it
    splits a sequence into its two halves: the paper's informed kernel for E6.
    """

    variance: float = 1.0

    def matrix(self, x1, x2):
        u1 = x1 / x1.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        u2 = x2 / x2.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        return self.variance * ((u1 @ u2.T) > 1 - 1e-9).to(x1.dtype)


@dataclass
class Product(Kernel):
    """Pointwise product of kernels (a kernel by the Schur product theorem)."""

    factors: list = field(default_factory=list)

    def matrix(self, x1, x2):
        out = self.factors[0].matrix(x1, x2)
        for k in self.factors[1:]:
            out = out * k.matrix(x1, x2)
        return out

    def __mul__(self, other):
        return Product([*self.factors, other])

    def profile(self, diff):
        out = self.factors[0].variance * self.factors[0].profile(diff)
        for k in self.factors[1:]:
            out = out * k.variance * k.profile(diff)
        return out


BASE_KERNELS = {
    "se": SquaredExponential,
    "matern12": lambda **kw: Matern(nu=0.5, **kw),
    "matern32": lambda **kw: Matern(nu=1.5, **kw),
    "matern52": lambda **kw: Matern(nu=2.5, **kw),
    "periodic": Periodic,
    "linear": Linear,
    "polynomial": Polynomial,
    "same_direction": SameDirection,
}

# which keyword each base kernel takes from the flat kernel config
_KERNEL_ARGS = {
    "se": ("lengthscale", "variance"),
    "matern12": ("lengthscale", "variance"),
    "matern32": ("lengthscale", "variance"),
    "matern52": ("lengthscale", "variance"),
    "periodic": ("period_lengthscale", "variance", "period"),
    "linear": ("variance", "offset"),
    "polynomial": ("variance", "offset", "degree"),
    "same_direction": ("variance",),
}


def build_kernel(name: str, strict: bool = True, **params) -> Kernel:
    """Build a kernel from a name such as ``"se"`` or a product ``"se*periodic"``.

    ``params`` is the flat kernel config (lengthscale, variance, period,
    period_lengthscale, offset, degree); each factor takes the keys it knows, and None means
    the kernel's own default. The variance multiplies only the first factor of a product.
    With ``strict``, a key that is set but that no factor uses is an error (it would be
    silently ignored).
    """
    if strict:
        used = {k for part in name.split("*") for k in _KERNEL_ARGS.get(part.strip(), ())}
        unused = sorted(k for k, v in params.items() if v is not None and k not in used)
        if unused and all(p.strip() in _KERNEL_ARGS for p in name.split("*")):
            raise ValueError(f"kernel '{name}' does not use {', '.join(unused)} (it takes "
                             f"{', '.join(sorted(used))}); remove "
                             f"{' '.join('kernel.' + k for k in unused)}")
    factors = []
    for i, part in enumerate(name.split("*")):
        part = part.strip()
        if part not in BASE_KERNELS:
            raise ValueError(f"unknown kernel '{part}'; choose from {sorted(BASE_KERNELS)} "
                             "or a product such as 'se*periodic'")
        kw = {}
        for key in _KERNEL_ARGS[part]:
            if key in params and params[key] is not None:
                kw["lengthscale" if key == "period_lengthscale" else key] = params[key]
        if i > 0 and "variance" in kw:
            kw["variance"] = 1.0
        factors.append(BASE_KERNELS[part](**kw))
    return factors[0] if len(factors) == 1 else Product(factors)
