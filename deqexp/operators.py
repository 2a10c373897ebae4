"""Operator norms of the DEQ's linear maps (THEORY.md section 5).

Dense weights: the largest singular value. Convolutions (filters shaped
``(..., C_out, C_in, k, k)``, cross-correlation as in PyTorch, "same" size):

- circular padding: exact, the largest singular value over the 2-D DFT
  frequencies of the ``C_out x C_in`` transfer matrices, DFT over the image size;
- zero padding: Lanczos on ``A^T A`` (the convolution and its adjoint), stopped when the
  Ritz residual bounds the error (``ZERO_PAD_TOL`` = 1e-8 relative by default);
- zero padding, cheap bound: the same DFT over the image enlarged by ``r``.

Members whose weights hold NaN/inf (diverged) get a NaN norm; the others are unaffected.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
ZERO_PAD_TOL = 1e-8  # relative accuracy of the iterative norms (on ||A||^2; half that on ||A||)


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


SVD_MAX = 256  # above this size a warm-started Lanczos beats a full SVD per epoch


def dense_norms(weight: Tensor, starts: dict | None = None, tol: float = ZERO_PAD_TOL) -> Tensor:
    """Spectral norms of a stack of matrices ``(E, m, n)``: an exact SVD for small ones; for
    large ones Lanczos on ``W^T W`` to relative accuracy ``tol``, warm-started from
    ``starts[e]`` (updated), since weights move little between epochs."""
    if max(weight.shape[-2:]) <= SVD_MAX or starts is None:
        return dense_norm(weight)
    out = []
    for e, w in enumerate(weight):
        if not bool(torch.isfinite(w).all()):
            out.append(w.new_tensor(float("nan")))
            continue
        x0 = starts.get(e)
        if x0 is None:
            x0 = torch.ones(w.shape[-1], dtype=w.dtype, device=w.device)
        theta, vec, _ = lanczos_top(lambda v, w=w: w.T @ (w @ v), x0, tol)
        starts[e] = vec
        out.append(theta.clamp_min(0).sqrt())
    return torch.stack(out)


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


def lanczos_top(apply, x0: Tensor, tol: float, max_steps: int = 400) -> tuple[Tensor, Tensor, bool]:
    """Largest eigenvalue of a symmetric PSD operator by Lanczos with full reorthogonalisation.

    Stops when the top Ritz pair's residual ``||B v - theta v|| = beta_j |s_j|`` is below
    ``tol * theta``; for a symmetric operator that residual bounds the distance from theta to
    an eigenvalue, and unlike power iteration Lanczos resolves a cluster of nearly equal top
    eigenvalues into separate Ritz values (so theta is the top one). Returns (theta, the Ritz
    vector, converged).
    """
    tol = max(tol, 10 * torch.finfo(x0.dtype).eps)  # no closer than the dtype can resolve
    basis = [x0 / x0.norm()]
    alphas, betas = [], []
    theta, vec = x0.new_zeros(()), basis[0]
    for j in range(max_steps):
        w = apply(basis[j])
        alphas.append((w * basis[j]).sum())
        for _ in range(2):  # full reorthogonalisation, twice is enough
            for q in basis:
                w = w - (w * q).sum() * q
        betas.append(w.norm())
        if j % 5 == 4 or j == max_steps - 1 or betas[-1] <= 1e-14 * alphas[0].abs():
            tri = torch.diag(torch.stack(alphas))
            if j > 0:
                off = torch.stack(betas[:-1])
                tri = tri + torch.diag(off, 1) + torch.diag(off, -1)
            evals, evecs = torch.linalg.eigh(tri)
            theta, s = evals[-1], evecs[:, -1]
            if bool(betas[-1] * s[-1].abs() <= tol * theta.abs()) or bool(betas[-1] <= 1e-14 * theta.abs()):
                vec = sum(c * q for c, q in zip(s, basis))
                return theta, vec, True
        basis.append(w / betas[-1])
    vec = sum(c * q for c, q in zip(s, basis))
    return theta, vec, False


def conv_norm_zero(filters: Tensor, height: int, width: int, tol: float = ZERO_PAD_TOL,
                   generator: torch.Generator | None = None,
                   start: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Norm of the zero-padded convolution ``A`` (one filter bank) from the top eigenvalue of
    ``A^T A`` by :func:`lanczos_top` (relative accuracy ``tol`` on ||A||^2); returns the norm
    and the top singular vector (a warm start for nearby filters). The start vector is drawn
    from ``generator``, so a member's norm depends on its own seed only."""
    _check_odd(filters)
    c_in = filters.shape[-3]
    x = start if start is not None else torch.randn(
        1, c_in, height, width, dtype=filters.dtype, device=filters.device, generator=generator)
    adj = adjoint_filters(filters)
    theta, vec, ok = lanczos_top(lambda v: conv(conv(v, filters), adj), x, tol)
    if not ok:
        warnings.warn(f"conv_norm_zero: Lanczos did not bring the residual below {tol:g}; the "
                      "norm may be off by more than that", stacklevel=2)
    return theta.clamp_min(0).sqrt(), vec


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
