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
WARM_MIX = 0.1  # share of a fixed random vector mixed into a warm start


def warm_start(previous: Tensor, batch_dims: int = 0) -> Tensor:
    """A Lanczos start near ``previous`` (last call's top vector) with a fixed random part
    mixed in: a pure warm start has no component along a new top direction orthogonal to the
    old one (W from diag(3, 2, ...) to diag(3, 5, ...)), so Lanczos would converge to 3 there."""
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(previous.shape, generator=gen, dtype=previous.dtype).to(previous.device)
    unit = lambda v: v / v.flatten(batch_dims).norm(dim=-1).clamp_min(  # noqa: E731
        torch.finfo(v.dtype).tiny).reshape(*v.shape[:batch_dims], *[1] * (v.dim() - batch_dims))
    return unit(previous) + WARM_MIX * unit(noise)


def dense_norms(weight: Tensor, starts: dict | None = None, tol: float = ZERO_PAD_TOL) -> Tensor:
    """Spectral norms of a stack of matrices ``(E, m, n)``: an exact SVD for small ones; for
    large ones Lanczos on ``W^T W`` (all members in one batch, each to relative accuracy
    ``tol``), warm-started from ``starts["x"]`` (updated), since weights move little between
    epochs. NaN for a non-finite matrix."""
    if max(weight.shape[-2:]) <= SVD_MAX or starts is None:
        return dense_norm(weight)
    x0 = starts.get("x")
    if x0 is None or x0.shape != (weight.shape[0], weight.shape[-1]):
        x0 = torch.ones(weight.shape[0], weight.shape[-1], dtype=weight.dtype, device=weight.device)
    w_t = weight.transpose(-1, -2)
    theta, vec, ok = lanczos_top(lambda v: (w_t @ (weight @ v[..., None]))[..., 0],
                                 warm_start(x0, batch_dims=1), tol, batch_dims=1)
    warn_unconverged("dense_norms", ok, theta, tol)
    starts["x"] = vec
    return theta.clamp_min(0).sqrt()


def warn_unconverged(where: str, ok: Tensor, theta: Tensor, tol: float) -> None:
    """Lanczos's converged flag, surfaced: a warning when a finite problem missed ``tol``."""
    missed = ~ok & torch.isfinite(theta)
    if bool(missed.any()):
        warnings.warn(f"{where}: Lanczos did not bring the residual below {tol:g} for "
                      f"{int(missed.sum())} of {missed.numel()} problem(s); the norm may be off by "
                      "more than that", stacklevel=3)


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


def lanczos_top(apply, x0: Tensor, tol: float, max_steps: int = 400, batch_dims: int = 0,
                reorthogonalise: bool = True) -> tuple[Tensor, Tensor | None, Tensor]:
    """Largest eigenvalue of a symmetric PSD operator by Lanczos with full reorthogonalisation.

    Stops when the top Ritz pair's residual ``||B v - theta v|| = beta_j |s_j|`` is below
    ``tol * theta``; for a symmetric operator that residual bounds the distance from theta to
    an eigenvalue, and unlike power iteration Lanczos resolves a cluster of nearly equal top
    eigenvalues into separate Ritz values (so theta is the top one).

    The first ``batch_dims`` axes of ``x0`` index independent problems (``apply`` must not mix
    them): each gets its own recurrence, and its result is taken at the first check where it
    has converged, so it does not depend on the others. Returns (theta, the Ritz vector,
    converged), the first and last shaped like the batch axes (NaN for a non-finite problem).

    ``reorthogonalise=False`` keeps only the three-term recurrence and the last two vectors:
    memory and time per step stay constant. Lost orthogonality then only repeats Ritz values
    that have converged (Paige), so the top one and its residual test hold; no Ritz vector
    (None) is returned.
    """
    tol = max(tol, 10 * torch.finfo(x0.dtype).eps)  # no closer than the dtype can resolve
    batch = x0.shape[:batch_dims]
    bcast = lambda s: s.reshape(*batch, *[1] * (x0.dim() - batch_dims))  # noqa: E731
    dot = lambda a, b: (a * b).flatten(batch_dims).sum(-1)  # noqa: E731
    basis = [x0 / bcast(dot(x0, x0).sqrt())]
    alphas, betas = [], []
    theta = x0.new_full(batch, float("nan"))
    vec, done = torch.zeros_like(x0), torch.zeros(batch, dtype=torch.bool, device=x0.device)
    for j in range(max_steps):
        w = apply(basis[j])
        alphas.append(dot(w, basis[j]))
        if reorthogonalise:
            for _ in range(2):  # full reorthogonalisation, twice is enough
                for q in basis:
                    w = w - bcast(dot(w, q)) * q
        else:
            w = w - bcast(alphas[-1]) * basis[j]
            if j > 0:
                w = w - bcast(betas[-1]) * basis[j - 1]
        betas.append(dot(w, w).sqrt())
        # an invariant subspace: exact from here (later steps add zero vectors until a check)
        tiny = betas[-1] <= 1e-14 * alphas[0].abs()
        if j % 5 == 4 or j == max_steps - 1:  # checks are host syncs: every 5 steps
            tri = torch.diag_embed(torch.stack(alphas, -1))
            if j > 0:
                off = torch.stack(betas[:-1], -1)
                tri = tri + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
            finite = torch.isfinite(tri).flatten(-2).all(-1)  # LAPACK raises on NaN input
            evals, evecs = torch.linalg.eigh(torch.where(finite[..., None, None], tri, 0.0))
            top, s = torch.where(finite, evals[..., -1], float("nan")), evecs[..., -1]
            ok = (betas[-1] * s[..., -1].abs() <= tol * top.abs()) | tiny | ~torch.isfinite(top)
            new = (ok | (j == max_steps - 1)) & ~done
            if bool(new.any()):
                theta = torch.where(new, top, theta)
                if reorthogonalise:
                    ritz = sum(bcast(s[..., i]) * q for i, q in enumerate(basis))
                    vec = torch.where(bcast(new), ritz, vec)
                done = done | (new & ok)
                if bool(done.all()):
                    break
        # a finished (or broken-down) problem carries on with zeros: no 0/0
        step = w / bcast(betas[-1].clamp_min(torch.finfo(w.dtype).tiny))
        basis.append(torch.where(bcast(tiny), 0.0, step))
        if not reorthogonalise and j > 0:
            basis[j - 1] = None  # the recurrence needs the last two only
    return theta, vec if reorthogonalise else None, done


def conv_norm_zero(filters: Tensor, height: int, width: int, tol: float = ZERO_PAD_TOL,
                   generator: torch.Generator | None = None,
                   start: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Norm of the zero-padded convolution ``A`` (one filter bank) from the top eigenvalue of
    ``A^T A`` by :func:`lanczos_top` (relative accuracy ``tol`` on ||A||^2); returns the norm
    and the top singular vector (a warm start for nearby filters). The start vector is drawn
    from ``generator``, so a member's norm depends on its own seed only."""
    _check_odd(filters)
    c_in = filters.shape[-3]
    x = warm_start(start) if start is not None else torch.randn(
        1, c_in, height, width, dtype=filters.dtype, device=filters.device, generator=generator)
    adj = adjoint_filters(filters)
    theta, vec, ok = lanczos_top(lambda v: conv(conv(v, filters), adj), x, tol)
    warn_unconverged("conv_norm_zero", ok, theta, tol)
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
