"""Corruptions that turn clean images into a denoising task's inputs: Gaussian noise, Gaussian
blur with a random width per image, and pixel flips; each draws from the generator it is given."""
from __future__ import annotations

import math

import numpy as np
import torch

from .readers import DataError

Tensor = torch.Tensor


def draw_noise(clean: Tensor, std: float, gen: torch.Generator) -> Tensor:
    """Gaussian noise of ``clean``'s shape with standard deviation ``std``."""
    return std * torch.randn(clean.shape, generator=gen, dtype=clean.dtype)


def noisy(clean: Tensor, noise: Tensor) -> Tensor:
    """``clean + noise``, clipped to [0, 1]."""
    return (clean + noise).clamp(0, 1)


def add_noise(clean: Tensor, std: float, gen: torch.Generator) -> Tensor:
    """Additive Gaussian noise, clipped to [0, 1]."""
    return noisy(clean, draw_noise(clean, std, gen))


def gaussian_blur(clean: Tensor, low: float, high: float, gen: torch.Generator) -> Tensor:
    """Gaussian blur, sigma ~ U(low, high) per image, each channel on its own (scipy.ndimage;
    mirror boundary, the edge pixel not repeated; support radius ceil(3 * high) for every image,
    so a wider draw is not cut off earlier than a narrow one)."""
    from scipy.ndimage import gaussian_filter

    sigmas = low + (high - low) * torch.rand(len(clean), generator=gen, dtype=torch.float64)
    radius = max(1, int(math.ceil(3 * high)))
    images = clean.detach().cpu().numpy()
    out = np.stack([gaussian_filter(img, sigma=(0.0, s, s), mode="mirror", radius=(0, radius, radius))
                    for img, s in zip(images, sigmas.tolist())])
    return torch.from_numpy(out).to(clean.device, clean.dtype)


def flip_pixels(clean: Tensor, fraction: float, gen: torch.Generator) -> Tensor:
    """Replace ``fraction`` of the pixels with flipped values of randomly chosen pixels (E4)."""
    flat = clean.reshape(len(clean), -1)
    n_pix = flat.shape[1]
    k = int(round(fraction * n_pix))
    out = flat.clone()
    for i in range(len(flat)):
        where = torch.randperm(n_pix, generator=gen)[:k]
        source = torch.randint(0, n_pix, (k,), generator=gen)
        out[i, where] = 1 - flat[i, source]
    return out.reshape(clean.shape)


def corrupt(clean: Tensor, kind: str, gen: torch.Generator, noise_std: float = 0.2,
            blur_low: float = 0.0, blur_high: float = 3.0, flip_fraction: float = 1 / 3) -> Tensor:
    """Apply the named corruption: ``noise``, ``blur`` or ``flip``."""
    if kind == "noise":
        return add_noise(clean, noise_std, gen)
    if kind == "blur":
        return gaussian_blur(clean, blur_low, blur_high, gen)
    if kind == "flip":
        return flip_pixels(clean, flip_fraction, gen)
    raise DataError(f"unknown corruption '{kind}'; choose noise, blur or flip")


NOISE_KEYS = ("train_noise", "test_noise", "val_noise")  # dataset=arrays: noise saved with the images


def _split_noise(a: dict, split: str, clean: Tensor, gen: torch.Generator, std: float) -> Tensor:
    """A split's additive noise: the file's ``{split}_noise`` if it has one, else drawn."""
    key = f"{split}_noise"
    if key not in a:
        return draw_noise(clean, std, gen)
    if a[key].shape != tuple(clean.shape):
        raise DataError(f"dataset=arrays: '{key}' has shape {a[key].shape}, but '{split}_target' "
                        f"has {tuple(clean.shape)}; the noise is added to the clean images, so the "
                        "shapes must agree")
    return torch.as_tensor(a[key].astype(np.float64))


def check_unit_range(key: str, y: np.ndarray, corruption: str) -> None:
    """Clean images in [0, 1], as every corruption assumes (noise is clipped to [0, 1]; the
    paper's noise level 0.2 is relative to it): refuse 0..255 integers and other ranges."""
    if np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
        raise DataError(f"dataset=arrays: '{key}' holds {y.dtype} values, but dataset.corruption="
                        f"{corruption} needs clean images as floats in [0, 1]; store x / 255 (for 8-bit "
                        "images) as float32")
    low, high = (float(y.min()), float(y.max())) if y.size else (0.0, 0.0)
    if low < -1e-6 or high > 1 + 1e-6:
        raise DataError(f"dataset=arrays: '{key}' ranges over [{low:.4g}, {high:.4g}], but dataset."
                        f"corruption={corruption} needs clean images in [0, 1] (noise is clipped to it); "
                        "rescale them, e.g. (x - x.min()) / (x.max() - x.min()), or x / 255")


def corrupted_inputs(a: dict, corruption: str, gen: torch.Generator, **opts) -> dict:
    """The arrays with ``*_input`` made by corrupting the clean images ``*_target``; for
    ``noise``, the file's own ``*_noise`` arrays are the noise where it has them (then kept
    under those keys, and the drawn noise too)."""
    saved = [k for k in NOISE_KEYS if k in a]
    if saved and corruption != "noise":
        raise DataError(f"dataset=arrays: the file holds {', '.join(saved)}, which only "
                        f"dataset.corruption=noise adds; set it (it is {corruption})")
    if saved and not {"train_noise", "test_noise"} <= set(saved):
        raise DataError(f"dataset=arrays: the file holds {', '.join(saved)} but not both "
                        "train_noise and test_noise; save the noise of both splits, or neither")
    given = sorted(k for k in ("train_input", "test_input", "val_input") if k in a)
    if given:
        raise DataError(f"dataset=arrays: dataset.corruption={corruption} makes the inputs from the clean "
                        f"targets, but the file has {', '.join(given)}; leave them out, or set "
                        "dataset.corruption=none to train on the file's own inputs")
    out = dict(a)
    for split in ("train", "test", "val"):
        key = f"{split}_target"
        if split == "val" and key not in a:
            continue  # the validation split is optional
        if key not in a:
            raise DataError(f"dataset=arrays: key '{key}' is missing (found: {sorted(a) or 'nothing'}); "
                            f"dataset.corruption={corruption} needs the clean images train_target and "
                            "test_target")
        y = a[key]
        if y.ndim != 4 or not np.issubdtype(y.dtype, np.number) or np.iscomplexobj(y):
            raise DataError(f"dataset=arrays: dataset.corruption={corruption} corrupts clean images; "
                            f"'{key}' has shape {y.shape} and dtype {y.dtype}, not real "
                            "(N, C, H, W)")
        check_unit_range(key, y, corruption)
        clean = torch.as_tensor(y.astype(np.float64))
        if corruption == "noise":
            noise = _split_noise(a, split, clean, gen, opts.get("noise_std", 0.2))
            out[f"{split}_noise"] = noise.numpy()
            out[f"{split}_input"] = noisy(clean, noise).numpy()
        else:
            out[f"{split}_input"] = corrupt(clean, corruption, gen, **opts).numpy()
    return out
