"""E4's data: binarised digits with a third of their pixels flipped (scikit-learn's bundled
digits, or MNIST from local IDX files)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Data, pick, seeded
from .corruptions import flip_pixels
from .readers import find_idx, read_idx, require_dir

Tensor = torch.Tensor


def _binarise_to(images: Tensor, size: int, threshold: float) -> Tensor:
    img = images[:, None].double()
    img = img / img.amax(dim=(-1, -2), keepdim=True).clamp_min(1e-12)
    if img.shape[-1] != size:
        img = F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False)
    return (img > threshold).double()


def _digit_data(train: Tensor, test: Tensor, seed: int, n_train: int, n_test: int, size: int,
                threshold: float, flip_fraction: float) -> Data:
    gen = seeded(seed)
    train, test = pick(train, n_train, gen), pick(test, n_test, gen, "test")
    clean_tr = _binarise_to(train, size, threshold)
    clean_te = _binarise_to(test, size, threshold)
    noisy_tr = flip_pixels(clean_tr, flip_fraction, gen)
    noisy_te = flip_pixels(clean_te, flip_fraction, gen)
    return Data(noisy_tr, clean_tr, noisy_te, clean_te, "bce", "{0,1}")


def binary_digits(seed: int, size: int = 28, n_train: int = 200, n_test: int = 50,
                  threshold: float = 0.3, flip_fraction: float = 1 / 3, **_) -> Data:
    """scikit-learn's 8x8 digits, upsampled to ``size`` and binarised; a third of pixels flipped."""
    from sklearn.datasets import load_digits

    imgs = torch.as_tensor(load_digits().images)
    perm = torch.randperm(len(imgs), generator=seeded(seed + 1))
    half = len(imgs) * 4 // 5
    return _digit_data(imgs[perm[:half]], imgs[perm[half:]], seed, n_train, n_test, size,
                       threshold, flip_fraction)


def mnist(seed: int, root: str | None = None, n_train: int = 1000, n_test: int = 200, threshold: float = 0.0,
          flip_fraction: float = 1 / 3, **_) -> Data:
    """MNIST from local IDX files, binarised (pixel > 0) with flipped pixels (E4)."""
    root = require_dir(root, "mnist", "the IDX files train-images-idx3-ubyte and "
                        "t10k-images-idx3-ubyte (optionally .gz)")
    train = torch.as_tensor(read_idx(find_idx(root, "train-images-idx3-ubyte")).copy())
    test = torch.as_tensor(read_idx(find_idx(root, "t10k-images-idx3-ubyte")).copy())
    return _digit_data(train, test, seed, n_train, n_test, train.shape[-1], threshold, flip_fraction)
