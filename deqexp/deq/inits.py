"""Initialisations of a DEQ: kGLM (THEORY.md section 2), naive and random.

- ``kglm``: W = -K/lambda, U = K/lambda, V = -K*/lambda, Q = K*/lambda with
  lambda = ||K||_2 / scale (or a given lambda), so that the forward pass solves
  the kGLM. ``scale`` is the resulting ||W||_2 (the paper's E2 sweep variable;
  E1 uses scale 1, i.e. lambda = ||K||_2).
- ``naive``: W, U from a squared-exponential kernel on the input grid; V drawn
  like a dense layer, Q zero.
- ``random``: the framework's default layer initialisation, or i.i.d.
  N(0, (scale / divisor)^2) when a scale is given (the paper's E2 sweep).

Each ensemble member gets its own :class:`InitSpec` and generator.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..data.streams import authors_generator, conv_random_filters, dense_layer_weights
from ..theory.filters import multichannel_filters
from ..theory.kernels import Kernel, SquaredExponential
from . import operators
from .freezing import q_frozen
from .init_spec import DEFAULT_SCALE, INITS, InitSpec  # noqa: F401  (re-exported)
from .models import ConvDEQ, DenseDEQ

Tensor = torch.Tensor
def kglm_weights(k_in: Tensor, k_out: Tensor, lam: float) -> dict[str, Tensor]:
    """The kGLM's DEQ weights from the Gram matrices on inputs and between outputs and inputs."""
    return {"W": -k_in / lam, "U": k_in / lam, "V": -k_out / lam, "Q": k_out / lam}


def lambda_of(spec: InitSpec, norm) -> float:
    """The one lambda rule: ``spec.lam`` if given, else ``||K|| / spec.scale`` (so that
    ``||W|| = scale``); ``norm()`` computes ``||K||`` only when it is needed."""
    if spec.lam is not None:
        return float(spec.lam)
    return float(norm()) / (spec.scale or 1.0)


def kglm_lambda(k_in: Tensor, spec: InitSpec) -> float:
    """lambda for a dense Gram matrix ``k_in`` (:func:`lambda_of`)."""
    return lambda_of(spec, lambda: operators.dense_norm(k_in))


def _uniform(shape, fan_in: int, gen: torch.Generator, dtype) -> Tensor:
    # nn.Linear / nn.Conv2d default: kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    bound = 1.0 / math.sqrt(fan_in)
    return (torch.rand(shape, generator=gen, dtype=dtype) * 2 - 1) * bound


def _random_tensor(shape, fan_in: int, spec: InitSpec, gen: torch.Generator, dtype) -> Tensor:
    if spec.scale is None:
        return _uniform(shape, fan_in, gen, dtype)
    return torch.randn(shape, generator=gen, dtype=dtype) * (spec.scale / spec.random_divisor)


def dense_member(spec: InitSpec, kernel: Kernel, x_in: Tensor, x_out: Tensor,
                 width: int, gen: torch.Generator, dtype=torch.float64) -> dict[str, Tensor]:
    """Weights W, U, V, Q (and zero biases b, c) of one dense member."""
    n_in, n_out = len(x_in), len(x_out)
    # a prior mean m of f enters as b = m(x) and c = m(x*) (THEORY.md section 2)
    m = spec.prior_mean if spec.name == "kglm" else 0.0
    zeros_b = {"b": torch.full((width,), m, dtype=dtype), "c": torch.full((n_out,), m, dtype=dtype)}
    if spec.name in ("kglm", "naive") and width != n_in:
        raise ValueError(f"init={spec.name} needs model width == number of input locations "
                         f"({n_in}), got width={width}")
    x_in, x_out = x_in.to(dtype), x_out.to(dtype)
    if spec.name == "kglm":
        k_in = kernel(x_in)
        out = kglm_weights(k_in, kernel(x_out, x_in), kglm_lambda(k_in, spec))
    elif spec.name == "naive":
        k_in = SquaredExponential(spec.naive_lengthscale)(x_in)
        out = {**kglm_weights(k_in, k_in, kglm_lambda(k_in, spec)),  # the naive readout: below
               "V": _uniform((n_out, width), width, gen, dtype),
               "Q": torch.zeros(n_out, n_in, dtype=dtype)}
    else:
        out = {"W": _random_tensor((width, width), width, spec, gen, dtype),
               "U": _random_tensor((width, n_in), n_in, spec, gen, dtype),
               "V": _random_tensor((n_out, width), width, spec, gen, dtype),
               "Q": _random_tensor((n_out, n_in), n_in, spec, gen, dtype)}
        if spec.freeze_q:
            out["Q"] = torch.zeros(n_out, n_in, dtype=dtype)
    return {**out, **zeros_b}


def conv_lengthscales(spec: InitSpec, channels: int, gen: torch.Generator, seed: int,
                      dtype=torch.float64) -> Tensor:
    """Per-channel length-scales ~ U(low, high) of a conv kglm member.

    ``lengthscale_rng="numpy"`` takes the first draws of numpy's generator seeded with the
    member's seed, as the authors' code does after ``np.random.seed(seed)`` (so seed s is
    their seed s); ``"torch"`` draws from the member's own generator.
    """
    lo, hi = spec.lengthscale_low, spec.lengthscale_high
    if spec.lengthscale_rng == "numpy":
        ls = torch.from_numpy(np.random.RandomState(int(seed)).uniform(lo, hi, channels)).to(dtype)
    else:
        ls = lo + (hi - lo) * torch.rand(channels, generator=gen, dtype=dtype)
    return ls.clamp_min(1e-3)


def conv_member(spec: InitSpec, channels: int, kernel_size: int, image_size: tuple[int, int],
                padding: str, gen: torch.Generator, dtype=torch.float64,
                norm_method: str = "exact", seed: int = 0) -> dict[str, Tensor]:
    """Filters W, U, V, Q of one convolutional member (hidden channels = input channels)."""
    r, c = kernel_size // 2, channels
    shape = (c, c, kernel_size, kernel_size)
    if spec.name == "random":
        out = {k: _random_tensor(shape, c * kernel_size**2, spec, gen, dtype) for k in "WUVQ"}
        if spec.freeze_q:
            out["Q"] = torch.zeros(shape, dtype=dtype)
        return out
    if spec.name == "kglm":
        ls = conv_lengthscales(spec, c, gen, seed, dtype)
        filt = multichannel_filters(ls.tolist(), r, spec.coupling, spec.construction, dtype)
    else:
        filt = multichannel_filters([spec.naive_lengthscale] * c, r, 0.0, "pd", dtype)
    lam = lambda_of(spec, lambda: operators.conv_norm(filt, *image_size, padding=padding,
                                                      method=norm_method, generator=gen))
    out = kglm_weights(filt, filt, lam)
    if spec.name == "naive":
        out.update(V=_uniform(shape, c * kernel_size**2, gen, dtype), Q=torch.zeros(shape, dtype=dtype))
    return out


def authors_draws(model: DenseDEQ | ConvDEQ, spec: InitSpec, seed: int) -> dict[str, Tensor]:
    """``trainer.rng=authors``: the weights that the authors' script draws for this init from
    torch's stream after ``manual_seed(seed)`` (:mod:`deqexp.data.streams`); they replace the
    same weights drawn from deqexp's generator (the kGLM's are not random)."""
    gen = authors_generator(seed)
    if isinstance(model, ConvDEQ):
        if spec.name != "random":
            return {}
        w = conv_random_filters(gen, tuple(model.W.shape[1:]), spec.scale / spec.random_divisor)
        return {**w, "V": w["W"], "Q": w["U"]}
    drawn = dense_layer_weights(gen, spec.name, model.U.shape[2], model.width, model.V.shape[1])
    return {"naive": {"V": drawn["V"]}, "random": drawn}.get(spec.name, {})


def initialise(model: DenseDEQ | ConvDEQ, specs: list[InitSpec], seeds: list[int], *,
               kernel: Kernel | None = None, x_in: Tensor | None = None,
               x_out: Tensor | None = None, image_size: tuple[int, int] | None = None,
               rng: str = "deqexp") -> None:
    """Set every member's parameters from its spec and seed (``rng="authors"``: its random
    weights from the authors' stream); freezes Q where asked."""
    if len(specs) != model.ensemble or len(seeds) != model.ensemble:
        raise ValueError(f"need {model.ensemble} init specs and seeds, got {len(specs)}, {len(seeds)}")
    with torch.no_grad():
        for e, (spec, seed) in enumerate(zip(specs, seeds)):
            gen = torch.Generator().manual_seed(int(seed))
            if isinstance(model, ConvDEQ):
                weights = conv_member(spec, model.W.shape[1], model.W.shape[-1], image_size,
                                      model.padding, gen, norm_method=model.norm_method, seed=seed)
            else:
                weights = dense_member(spec, kernel, x_in, x_out, model.width, gen)
            if rng == "authors":
                weights.update(authors_draws(model, spec, seed))
            for name, value in weights.items():
                model.set_member(e, name, value)
    frozen_q = q_frozen(specs)
    if frozen_q.any():
        model.freeze("Q", frozen_q)
