"""Data sets, each reproducible from its seed (settings: PAPER-PROTOCOL.md).

Embedded (no download): ``smooth`` (E1 sequences), ``copy_memory`` (E6),
``images`` (32x32 patches of scikit-image's sample images, E2/E3) and
``binary_digits`` (scikit-learn's digits, binarised, E4). Local folders:
``cifar10`` (``cifar-10-batches-py``), ``hyperspectral`` (multi-channel TIFFs)
and ``mnist`` (IDX files). Your own: ``arrays`` (an .npz file or a folder of .npy files).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .base import Data, pick, seeded
from .corruptions import NOISE_KEYS, corrupt, corrupted_inputs, draw_noise, noisy
from .digits import binary_digits, mnist
from .readers import (
    ARRAY_KEYS,
    VAL_KEYS,
    DataError,
    array_locations,
    check_arrays,
    read_arrays,
    read_cifar10,
    read_tiff,
    require_dir,
)

Tensor = torch.Tensor


# --------------------------------------------------------------------------- E1
def smooth_signal(x: Tensor) -> Tensor:
    """``g(x) = exp(-0.1 x^2) sin(x) + exp(-(x+9)^2)`` (E1)."""
    return torch.exp(-0.1 * x**2) * torch.sin(x) + torch.exp(-((x + 9) ** 2))


def smooth(seed: int, n_train: int = 2000, n_test: int = 200, length: int = 100,
           shift: float = 2.0, noise_variance: float = 0.1, **_) -> Data:
    """E1: noisy smooth sequences on [-2pi, 2pi]; the target is read at ``x - shift``."""
    if noise_variance < 0 or length < 2 or n_train < 1 or n_test < 1:
        raise DataError(f"dataset=smooth: need noise_variance >= 0, length >= 2, n_train >= 1 and "
                        f"n_test >= 1 (got {noise_variance}, {length}, {n_train}, {n_test})")
    x_in = torch.linspace(-2 * math.pi, 2 * math.pi, length, dtype=torch.float64)
    x_out = x_in - shift
    both = torch.cat([x_in, x_out])
    d = (both[:, None] - both[None, :]).abs()
    cov = noise_variance * torch.exp(-0.5 * d**2) * torch.exp(-torch.sin(d) ** 2)
    chol = torch.linalg.cholesky(cov + 1e-8 * torch.eye(len(both), dtype=torch.float64))
    noise = torch.randn(n_train + n_test, len(both), generator=seeded(seed), dtype=torch.float64)
    values = smooth_signal(both) + noise @ chol.T
    inp, tgt = values[:, :length], values[:, length:]
    mean, std = values[:n_train].mean(), values[:n_train].std()
    inp, tgt = (inp - mean) / std, (tgt - mean) / std
    return Data(inp[:n_train], tgt[:n_train], inp[n_train:], tgt[n_train:], "mse", "real",
                x_in[:, None], x_out[:, None])


# --------------------------------------------------------------------------- E6
def copy_memory(seed: int, n_train: int = 200, n_test: int = 20, delay: int = 50,
                n_copy: int = 10, alphabet: int = 8, **_) -> Data:
    """E6: ten symbols, ``delay`` blanks, a marker 9; recall the symbols after the marker."""
    n, length, classes = n_train + n_test, delay + 2 * n_copy, alphabet + 2
    sym = torch.randint(1, alphabet + 1, (n, n_copy), generator=seeded(seed))
    inp = torch.zeros(n, length, dtype=torch.long)
    inp[:, :n_copy] = sym
    inp[:, delay + n_copy - 1] = alphabet + 1  # the marker, at position T+10 (1-based)
    tgt = torch.zeros(n, length, dtype=torch.long)
    tgt[:, -n_copy:] = sym
    onehot = F.one_hot(inp, classes).double()
    x = torch.arange(length, dtype=torch.float64)
    x = ((x - x.mean()) / x.std())[:, None]
    return Data(onehot[:n_train], tgt[:n_train].double(), onehot[n_train:], tgt[n_train:].double(),
                "cross_entropy", "{0,1}", x, x, classes)


# --------------------------------------------------------------------------- images
SKIMAGE_TRAIN = ("astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")
SKIMAGE_TEST = ("chelsea",)


def _patches(img: Tensor, size: int) -> Tensor:
    """Non-overlapping ``size x size`` patches of a ``(C, H, W)`` image."""
    p = img.unfold(1, size, size).unfold(2, size, size)  # C, nh, nw, size, size
    return p.permute(1, 2, 0, 3, 4).reshape(-1, img.shape[0], size, size)


PAIRINGS = ("sample", "batch")


def check_pairing(name: str, pairing: str, corruption: str) -> None:
    """``noise_pairing`` is ``sample`` or ``batch``, and ``batch`` pairs additive noise only."""
    if pairing not in PAIRINGS:
        raise DataError(f"dataset={name}: dataset.noise_pairing={pairing!r}; choose sample or batch")
    if pairing == "batch" and corruption != "noise":
        raise DataError(f"dataset={name}: dataset.noise_pairing=batch adds noise by batch position, "
                        f"but dataset.corruption={corruption}; set dataset.corruption=noise, or "
                        "dataset.noise_pairing=sample")


def _image_data(train: Tensor, test: Tensor, seed: int, n_train: int, n_test: int,
                corruption: str, noise_pairing: str = "sample", name: str = "images", **opts) -> Data:
    check_pairing(name, noise_pairing, corruption)
    gen = seeded(seed)
    train, test = pick(train, n_train, gen), pick(test, n_test, gen, "test")
    if noise_pairing == "batch":  # the same draws as 'sample'; the training loop pairs them
        noise = draw_noise(train, opts["noise_std"], gen)
        return Data(noisy(train, noise), train, corrupt(test, corruption, gen, **opts), test,
                    "mse", "[0,1]", train_noise=noise)
    return Data(corrupt(train, corruption, gen, **opts), train,
                corrupt(test, corruption, gen, **opts), test, "mse", "[0,1]")


def skimage_images(seed: int, patch: int = 32, channels: int = 3, n_train: int = 500,
                   n_test: int = 100, train_images: tuple = SKIMAGE_TRAIN,
                   test_images: tuple = SKIMAGE_TEST, corruption: str = "noise", noise_std: float = 0.2,
                   blur_low: float = 0.0, blur_high: float = 3.0, noise_pairing: str = "sample",
                   **_) -> Data:
    """E2/E3 default: patches of scikit-image's bundled colour images, split by source image.
    ``noise_pairing``: ``sample`` adds each image its own noise; ``batch`` adds the noise by
    position in each epoch's batch sequence, as the authors' loop (the k-th training sample of
    every epoch gets noise row k; evaluation is in order, so there the two agree)."""
    import skimage.data

    def load(names):
        out = []
        for name in names:
            img = torch.as_tensor(np.asarray(getattr(skimage.data, name)()), dtype=torch.float64) / 255
            img = img.permute(2, 0, 1) if img.dim() == 3 else img[None].expand(3, -1, -1)
            out.append(_patches(img[:channels], patch))
        return torch.cat(out)

    return _image_data(load(train_images), load(test_images), seed, n_train, n_test, corruption,
                       noise_pairing, noise_std=noise_std, blur_low=blur_low, blur_high=blur_high)


def cifar10(seed: int, root: str | None = None, n_train: int = 5000, n_test: int = 1000,
            corruption: str = "noise", noise_std: float = 0.2,
            blur_low: float = 0.0, blur_high: float = 3.0, noise_pairing: str = "sample", **_) -> Data:
    """CIFAR-10 from a local folder, corrupted as configured (E2); ``noise_pairing`` as for
    dataset=images."""
    train, test = read_cifar10(root)
    return _image_data(train, test, seed, n_train, n_test, corruption, noise_pairing, "cifar10",
                       noise_std=noise_std, blur_low=blur_low, blur_high=blur_high)


def hyperspectral(seed: int, root: str | None = None, channels: int = 13, patch: int = 32,
                  n_train: int = 0, n_test: int = 0, test_fraction: float = 1 / 7,
                  corruption: str = "noise", noise_std: float = 0.2,
                  blur_low: float = 0.0, blur_high: float = 3.0, noise_pairing: str = "sample",
                  **_) -> Data:
    """Multi-channel TIFFs from a local folder: first ``channels`` bands, split by file (E2/E3);
    ``noise_pairing`` as for dataset=images."""
    root = require_dir(root, "hyperspectral", "multi-channel .tif/.tiff images")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
    if len(files) < 2:
        raise DataError(f"hyperspectral: need at least 2 TIFF files in {root}, found {len(files)}")
    order = torch.randperm(len(files), generator=seeded(seed)).tolist()
    n_test_files = max(1, int(round(test_fraction * len(files))))
    test_idx = set(order[:n_test_files])

    load = lambda f: _patches(read_tiff(f, channels, patch), patch)  # noqa: E731
    train = torch.cat([load(f) for i, f in enumerate(files) if i not in test_idx])
    test = torch.cat([load(f) for i, f in enumerate(files) if i in test_idx])
    return _image_data(train, test, seed, n_train, n_test, corruption, noise_pairing,
                       "hyperspectral", noise_std=noise_std, blur_low=blur_low, blur_high=blur_high)


# --------------------------------------------------------------------------- your own
def arrays(seed: int, path: str | None = None, n_train: int = 0, n_test: int = 0,
           loss: str = "mse", corruption: str = "none", noise_std: float = 0.2,
           blur_low: float = 0.0, blur_high: float = 3.0, noise_pairing: str = "sample", **_) -> Data:
    """Your own data: an ``.npz`` file (or a folder of ``.npy`` files) with ``train_input``,
    ``train_target``, ``test_input``, ``test_target``. Sequences are ``(N, n)`` inputs and
    ``(N, m)`` targets, at locations ``x_in`` ``(n, d)`` and ``x_out`` ``(m, d)`` (default:
    positions 0..n-1, and x_out = x_in when m = n); images are ``(N, C, H, W)``. ``n_train`` /
    ``n_test`` > 0 take a random subset (by seed); ``loss`` is ``mse`` or ``bce``. With a
    ``corruption`` (noise, blur, flip; as the image data sets, e.g. under the E2/E3 presets)
    the file holds clean images only, ``train_target`` and ``test_target``, and the inputs are
    made from them by seed; ``corruption=none`` takes the file's inputs as they are. With
    ``corruption=noise`` the file may hold the noise itself, ``train_noise`` and ``test_noise``
    (the targets' shapes; e.g. the authors' saved noise), added to the clean images and clipped
    to [0, 1]; ``noise_pairing`` as for dataset=images (``batch``: training row k of every
    epoch gets noise row k)."""
    if not path:
        raise DataError("dataset=arrays needs dataset.path=/path/to/data.npz (or a folder of .npy files)")
    if loss not in ("mse", "bce"):
        raise DataError(f"dataset=arrays: dataset.loss={loss!r}; choose mse or bce")
    a = read_arrays(path)
    check_pairing("arrays", noise_pairing, corruption)
    saved = [k for k in NOISE_KEYS if k in a]
    if corruption == "none" and saved:
        raise DataError(f"dataset=arrays: the file holds {', '.join(saved)}; set "
                        "dataset.corruption=noise to add it to the clean targets")
    # 0.2, the default: any other value was asked for, and the file's noise would ignore it
    if corruption == "noise" and {"train_noise", "test_noise"} <= set(saved) and noise_std != 0.2:
        raise DataError(f"dataset.noise_std={noise_std} has no effect: the file's own train_noise and "
                        "test_noise are added as they are; remove dataset.noise_std (or scale the "
                        "saved noise)")
    if corruption != "none":
        a = corrupted_inputs(a, corruption, seeded(seed), noise_std=noise_std, blur_low=blur_low,
                              blur_high=blur_high)
    check_arrays(a)
    t = {k: torch.as_tensor(a[k].astype(np.float64)) for k in ARRAY_KEYS}
    gen = seeded(seed)
    train = pick(torch.arange(len(t["train_input"])), n_train, gen)
    test = pick(torch.arange(len(t["test_input"])), n_test, gen, "test")
    parts = [t["train_input"][train], t["train_target"][train], t["test_input"][test], t["test_target"][test]]
    val = {k: torch.as_tensor(a[k].astype(np.float64)) for k in VAL_KEYS if k in a}
    val = {"val_input": val.get("val_input"), "val_target": val.get("val_target")}
    if noise_pairing == "batch":  # by position: the first rows, whichever samples were taken
        val["train_noise"] = torch.as_tensor(a["train_noise"][: len(train)].astype(np.float64))
    if parts[0].dim() == 4:
        return Data(*parts, loss, "real", **val)
    n, m = parts[0].shape[1], parts[1].shape[1]
    x_in = array_locations(a, "x_in", n, torch.arange(n, dtype=torch.float64)[:, None])
    x_out = array_locations(a, "x_out", m, x_in if m == n else None,
                            f"'train_target' has {m} values per sample and 'train_input' {n}")
    return Data(*parts, loss, "real", x_in, x_out, **val)


DATASETS = {"smooth": smooth, "copy_memory": copy_memory, "images": skimage_images,
            "cifar10": cifar10, "hyperspectral": hyperspectral, "binary_digits": binary_digits,
            "mnist": mnist, "arrays": arrays}


def load_dataset(name: str, seed: int, **options) -> Data:
    """Build data set ``name`` from ``seed`` and its options."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}'; choose one of {sorted(DATASETS)}")
    return DATASETS[name](seed, **options)
