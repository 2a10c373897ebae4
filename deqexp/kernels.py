"""Kernels on locations of any dimension, and windowed kernels that become conv filters.

A :class:`Kernel` maps two location arrays ``(n, d)`` and ``(m, d)`` to the
``(n, m)`` Gram matrix. Stationary kernels work on the difference ``x - x'``, so
on a pixel grid they also give a convolution filter (THEORY.md section 5):
:func:`window_filter` evaluates one on the ``(2r+1)^2`` offsets of a window.
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

    @property
    def stationary(self) -> bool:
        return all(isinstance(k, Stationary) for k in self.factors)

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


# ----------------------------------------------------------------------------
# Windowed kernels on pixel grids (THEORY.md section 5)


def window_offsets(radius: int, dtype=torch.float64) -> Tensor:
    """Offsets of a ``(2r+1) x (2r+1)`` window as a ``(2r+1, 2r+1, 2)`` tensor."""
    r = torch.arange(-radius, radius + 1, dtype=dtype)
    return torch.stack(torch.meshgrid(r, r, indexing="ij"), dim=-1)


def triangle_window(diff: Tensor, radius: int) -> Tensor:
    """Separable triangle ``prod_j max(0, 1 - |d_j| / (r+1))``: PD and zero outside the window."""
    return (1 - diff.abs() / (radius + 1)).clamp_min(0).prod(-1)


def window_filter(kernel: Kernel, radius: int, window: str = "triangle",
                  dtype=torch.float64) -> Tensor:
    """The ``(2r+1, 2r+1)`` filter of a stationary ``kernel`` on a pixel window.

    ``window="triangle"`` multiplies by :func:`triangle_window`, which keeps the
    kernel positive definite; ``window="truncate"`` is the paper's plain cut-off
    at the window edge, which may not be a kernel (check with
    :func:`grid_kernel_matrix` and its smallest eigenvalue).
    """
    if not hasattr(kernel, "profile"):
        raise ValueError(f"{type(kernel).__name__} is not stationary: it has no conv filter")
    diff = window_offsets(radius, dtype)
    variance = getattr(kernel, "variance", 1.0) if not isinstance(kernel, Product) else 1.0
    filt = variance * kernel.profile(diff)
    if window == "triangle":
        return filt * triangle_window(diff, radius)
    if window == "truncate":
        return filt
    raise ValueError(f"unknown window '{window}'; choose 'triangle' (positive definite) "
                     "or 'truncate' (the paper's cut-off)")


def grid_locations(height: int, width: int, dtype=torch.float64) -> Tensor:
    """Pixel coordinates of an image, row-major, as ``(H*W, 2)``."""
    ii, jj = torch.meshgrid(torch.arange(height, dtype=dtype),
                            torch.arange(width, dtype=dtype), indexing="ij")
    return torch.stack([ii.flatten(), jj.flatten()], dim=-1)


def grid_kernel_matrix(filters: Tensor, height: int, width: int,
                       padding: str = "zeros") -> Tensor:
    """Dense matrix of the windowed multi-channel kernel whose filter bank is ``filters``.

    ``filters`` is ``(C_out, C_in, 2r+1, 2r+1)`` (a single 2-D filter is taken as
    1 x 1 channels). Rows and columns are indexed ``(channel, pixel)`` row-major.
    ``padding="zeros"`` restricts the kernel to the image; ``"circular"`` wraps it
    on a torus. This is the explicit reference for the convolution operators.
    """
    if filters.dim() == 2:
        filters = filters[None, None]
    c_out, c_in, k, _ = filters.shape
    r = k // 2
    loc = grid_locations(height, width, filters.dtype).long()
    d = loc[:, None, :] - loc[None, :, :]
    if padding == "circular":
        d[..., 0] = (d[..., 0] + height // 2) % height - height // 2
        d[..., 1] = (d[..., 1] + width // 2) % width - width // 2
    inside = (d.abs() <= r).all(-1)
    di = (d[..., 0].clamp(-r, r) + r)
    dj = (d[..., 1].clamp(-r, r) + r)
    # cross-correlation: out[p] = sum_q w[p' - p + r] in[p'] -> entry (p, p') = w[q - p + r]
    blocks = filters[:, :, (-di + 2 * r), (-dj + 2 * r)] * inside
    n = height * width
    return blocks.permute(0, 2, 1, 3).reshape(c_out * n, c_in * n)


def grid_min_eigenvalue(filters: Tensor, height: int, width: int, padding: str = "zeros") -> float:
    """Smallest eigenvalue of a filter bank's kernel matrix on an image: negative means the
    windowed "kernel" is not positive semi-definite there (e.g. the paper's truncated filters)."""
    k = grid_kernel_matrix(filters.to(torch.float64), height, width, padding)
    return float(torch.linalg.eigvalsh(0.5 * (k + k.T))[0])


def multichannel_filters(lengthscales, radius: int, coupling: float = 0.0,
                         construction: str = "pd", dtype=torch.float64) -> Tensor:
    """Filter bank ``(C, C, 2r+1, 2r+1)`` of a multi-channel windowed SE kernel.

    ``construction="pd"``: ``sum_q (e_q e_q^T) (x) k_q + coupling/C * 1 1^T (x) k_bar``,
    each ``k_q`` a triangle-windowed SE with channel q's length-scale and ``k_bar``
    one with their mean: PSD as a whole for ``coupling >= 0``.
    ``construction="paper"``: the authors' filters, a truncated SE per output
    channel, symmetrised over channel pairs (may be indefinite).
    """
    ls = [float(v) for v in lengthscales]
    c = len(ls)
    if construction == "pd":
        out = torch.zeros(c, c, 2 * radius + 1, 2 * radius + 1, dtype=dtype)
        for q, ell in enumerate(ls):
            out[q, q] = window_filter(SquaredExponential(ell), radius, "triangle", dtype)
        if coupling > 0:
            mean_l = sum(ls) / c
            out += coupling / c * window_filter(SquaredExponential(mean_l), radius, "triangle", dtype)
        return out
    if construction == "paper":
        per = torch.stack([window_filter(SquaredExponential(max(ell, 1e-6)), radius, "truncate", dtype)
                           for ell in ls])
        out = per[:, None].expand(c, c, *per.shape[1:])
        return 0.5 * (out + out.transpose(0, 1))
    raise ValueError(f"unknown construction '{construction}'; choose 'pd' or 'paper'")
