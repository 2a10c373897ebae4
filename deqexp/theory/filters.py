"""Windowed kernels on pixel grids: the convolution filters of a conv DEQ (THEORY.md
section 5). A stationary kernel evaluated on the ``(2r+1)^2`` offsets of a window is a filter;
on an image the convolution with it is the kernel's Gram matrix restricted to the pixels.
The triangle window keeps a truncated kernel positive definite; the authors' plain cut-off
may not (check with :func:`grid_min_eigenvalue`).
"""
from __future__ import annotations

import torch

from .kernels import Kernel, Product, SquaredExponential

Tensor = torch.Tensor


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
    ``construction="paper"``: the authors' filter bank, a truncated SE ``k_q`` per channel
    with ``F[i, i] = k_i`` and ``F[i, j] = k_max(i,j) / 2`` for ``i != j`` (their code fills
    the lower triangle with the larger index's filter and averages it with its transpose);
    it may be indefinite.
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
        idx = torch.arange(c)
        larger = torch.maximum(idx[:, None], idx[None, :])          # max(i, j) per pair
        weight = torch.where(idx[:, None] == idx[None, :], 1.0, 0.5).to(dtype)
        return per[larger] * weight[:, :, None, None]
    raise ValueError(f"unknown construction '{construction}'; choose 'pd' or 'paper'")
