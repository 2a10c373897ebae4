"""Operator norms of the DEQ's linear maps (THEORY.md section 5).

Dense weights: the largest singular value. Convolutions (filters shaped
``(..., C_out, C_in, k, k)``, cross-correlation as in PyTorch, "same" size):

- circular padding: exact, the largest singular value over the 2-D DFT
  frequencies of the ``C_out x C_in`` transfer matrices, DFT over the image size;
- zero padding: power iteration with the convolution and its adjoint, to ``tol``;
- zero padding, cheap bound: the same DFT over the image enlarged by ``r``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def dense_norm(weight: Tensor) -> Tensor:
    """Spectral norm of each matrix in ``(..., m, n)``."""
    return torch.linalg.matrix_norm(weight, ord=2)


def _transfer_norm(filters: Tensor, height: int, width: int) -> Tensor:
    k = filters.shape[-1]
    r = k // 2
    if height < k or width < k:
        raise ValueError(f"image {height}x{width} is smaller than the {k}x{k} filter")
    grid = filters.new_zeros(*filters.shape[:-2], height, width)
    grid[..., :k, :k] = filters
    grid = torch.roll(grid, shifts=(-r, -r), dims=(-2, -1))
    spectrum = torch.fft.fft2(grid)                       # (..., Co, Ci, H, W)
    spectrum = spectrum.movedim(-2, -4).movedim(-1, -3)   # (..., H, W, Co, Ci)
    return torch.linalg.svdvals(spectrum).amax(dim=(-1, -2, -3))


def conv_norm_circular(filters: Tensor, height: int, width: int) -> Tensor:
    """Exact operator norm of the circular convolution on an ``H x W`` torus."""
    return _transfer_norm(filters, height, width)


def conv_norm_dft_bound(filters: Tensor, height: int, width: int) -> Tensor:
    """Upper bound on the zero-padded convolution's norm (DFT over the image enlarged by r)."""
    r = filters.shape[-1] // 2
    return _transfer_norm(filters, height + r, width + r)


def conv(x: Tensor, filters: Tensor, padding: str = "zeros", groups: int = 1) -> Tensor:
    """Same-size cross-correlation of ``x (B, C_in, H, W)`` with ``filters (C_out, C_in/groups, k, k)``."""
    r = filters.shape[-1] // 2
    if padding == "circular":
        return F.conv2d(F.pad(x, (r, r, r, r), mode="circular"), filters, groups=groups)
    return F.conv2d(x, filters, padding=r, groups=groups)


def adjoint_filters(filters: Tensor) -> Tensor:
    """Filters of the adjoint convolution: channels swapped, window flipped (stride 1, same size)."""
    return filters.transpose(-4, -3).flip(-1, -2)


def conv_norm_zero(filters: Tensor, height: int, width: int, tol: float = 1e-8,
                   max_iter: int = 5000, generator: torch.Generator | None = None) -> Tensor:
    """Norm of the zero-padded convolution by power iteration on ``A^T A`` (one filter bank)."""
    c_in = filters.shape[-3]
    x = torch.randn(1, c_in, height, width, dtype=filters.dtype, device=filters.device,
                    generator=generator)
    adj = adjoint_filters(filters)
    sigma = x.new_zeros(())
    for i in range(max_iter):
        y = conv(conv(x, filters), adj)
        new = y.norm().sqrt()
        x = y / y.norm()
        # convergence is checked every 10 steps to keep host syncs rare
        if i % 10 == 9 and bool((new - sigma).abs() <= tol * new):
            return new
        sigma = new
    return sigma


def conv_norm(filters: Tensor, height: int, width: int, padding: str = "zeros",
              method: str = "exact") -> Tensor:
    """Operator norm per filter bank in ``(..., C_out, C_in, k, k)``.

    ``method="exact"``: DFT for circular padding, power iteration for zeros;
    ``method="dft"``: the DFT over the image size whatever the padding (the
    paper's choice; not the zero-padded norm); ``method="bound"``: the cheap
    upper bound for zero padding.
    """
    if method == "dft" or padding == "circular":
        return conv_norm_circular(filters, height, width)
    if method == "bound":
        return conv_norm_dft_bound(filters, height, width)
    if method != "exact":
        raise ValueError(f"unknown norm method '{method}'; choose exact, dft or bound")
    flat = filters.reshape(-1, *filters.shape[-4:])
    out = torch.stack([conv_norm_zero(f, height, width) for f in flat])
    return out.reshape(filters.shape[:-4])
