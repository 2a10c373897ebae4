"""Operator norms of the DEQ's linear maps (THEORY.md section 5).

Dense weights: the largest singular value. Convolutions (filters shaped
``(..., C_out, C_in, k, k)``, cross-correlation as in PyTorch, "same" size):

- circular padding: exact, the largest singular value over the 2-D DFT
  frequencies of the ``C_out x C_in`` transfer matrices, DFT over the image size;
- zero padding: power iteration with the convolution and its adjoint, stopped when the
  eigen-residual bounds the error (below ``tol`` relative);
- zero padding, cheap bound: the same DFT over the image enlarged by ``r``.

Members whose weights hold NaN/inf (diverged) get a NaN norm; the others are unaffected.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _finite_only(norm, weight: Tensor, dims: int) -> Tensor:
    """``norm(weight)`` over the leading axes, NaN where a matrix/filter bank is not finite
    (LAPACK raises on NaN input: a diverged ensemble member must not stop the others)."""
    finite = torch.isfinite(weight).flatten(-dims).all(-1)
    if bool(finite.all()):
        return norm(weight)
    safe = torch.where(finite.reshape(finite.shape + (1,) * dims), weight, 0.0)
    return torch.where(finite, norm(safe), float("nan"))


def dense_norm(weight: Tensor) -> Tensor:
    """Spectral norm of each matrix in ``(..., m, n)`` (NaN for a non-finite matrix)."""
    return _finite_only(lambda w: torch.linalg.matrix_norm(w, ord=2), weight, 2)


def _check_odd(filters: Tensor) -> None:
    k = filters.shape[-1]
    if k % 2 != 1 or filters.shape[-2] != k:
        raise ValueError(f"filters must be square with an odd size (a centred 'same' convolution), "
                         f"got {tuple(filters.shape[-2:])}")


def _transfer_norm(filters: Tensor, height: int, width: int) -> Tensor:
    _check_odd(filters)
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
    return _finite_only(lambda f: _transfer_norm(f, height, width), filters, 4)


def conv_norm_dft_bound(filters: Tensor, height: int, width: int) -> Tensor:
    """Upper bound on the zero-padded convolution's norm (DFT over the image enlarged by r)."""
    r = filters.shape[-1] // 2
    return _finite_only(lambda f: _transfer_norm(f, height + r, width + r), filters, 4)


def conv(x: Tensor, filters: Tensor, padding: str = "zeros", groups: int = 1) -> Tensor:
    """Same-size cross-correlation of ``x (B, C_in, H, W)`` with ``filters (C_out, C_in/groups, k, k)``."""
    _check_odd(filters)
    r = filters.shape[-1] // 2
    if padding == "circular":
        return F.conv2d(F.pad(x, (r, r, r, r), mode="circular"), filters, groups=groups)
    return F.conv2d(x, filters, padding=r, groups=groups)


def adjoint_filters(filters: Tensor) -> Tensor:
    """Filters of the adjoint convolution: channels swapped, window flipped (stride 1, same size)."""
    return filters.transpose(-4, -3).flip(-1, -2)


def conv_norm_zero(filters: Tensor, height: int, width: int, tol: float = 1e-8,
                   max_iter: int = 20000, generator: torch.Generator | None = None,
                   start: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Norm of the zero-padded convolution ``A`` by power iteration on ``B = A^T A`` (one filter
    bank); returns the norm and the final vector (a warm start for nearby filters).

    The estimate is the Rayleigh quotient ``rho = x^T B x`` (a lower bound on ||A||^2). It stops
    when the eigen-residual ``||B x - rho x||`` is below ``tol * rho``: once x leans towards the
    top eigenvector (power iteration makes it so) that residual bounds ``||A||^2 - rho``,
    whereas the change of the estimate between steps does not (it is tiny when the top two
    singular values are close, long before the estimate is right).
    """
    _check_odd(filters)
    c_in = filters.shape[-3]
    x = start if start is not None else torch.randn(
        1, c_in, height, width, dtype=filters.dtype, device=filters.device, generator=generator)
    x = x / x.norm()
    adj = adjoint_filters(filters)
    rho = x.new_zeros(())
    for i in range(max_iter):
        y = conv(conv(x, filters), adj)
        rho = (x * y).sum()
        # the residual is checked every 10 steps to keep host syncs rare
        if i % 10 == 0 and bool((y - rho * x).norm() <= tol * rho.abs()):
            break
        x = y / y.norm()
    return rho.clamp_min(0).sqrt(), x


def conv_norm(filters: Tensor, height: int, width: int, padding: str = "zeros",
              method: str = "exact", generator: torch.Generator | None = None,
              starts: dict | None = None) -> Tensor:
    """Operator norm per filter bank in ``(..., C_out, C_in, k, k)``.

    ``method="exact"``: DFT for circular padding, power iteration for zeros (started from
    ``generator``'s draw, or warm from ``starts[i]`` for filter bank i, which is updated);
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
    out = []
    for i, f in enumerate(flat):
        if not bool(torch.isfinite(f).all()):
            out.append(f.new_tensor(float("nan")))
            continue
        start = starts.get(i) if starts is not None else None
        norm, vec = conv_norm_zero(f, height, width, generator=generator, start=start)
        if starts is not None:
            starts[i] = vec
        out.append(norm)
    return torch.stack(out).reshape(filters.shape[:-4])
