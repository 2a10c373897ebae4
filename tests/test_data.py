"""Data sets: embedded ones are reproducible; local loaders read files in the real formats."""
import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from deqexp.data import corruptions
from deqexp.data import datasets as data


def write_cifar(root, n=12):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("data_batch_1", "data_batch_2", "test_batch"):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": list(rng.integers(0, 10, n))}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)
    return root


def write_mnist(root, n=10, size=28, gz=True):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for stem in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        arr = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        arr[arr < 180] = 0
        raw = struct.pack(">HBB", 0, 8, 3) + struct.pack(">III", n, size, size) + arr.tobytes()
        if gz:
            with gzip.open(root / (stem + ".gz"), "wb") as fh:
                fh.write(raw)
        else:
            (root / stem).write_bytes(raw)
    return root


def write_hyperspectral(root, files=7, channels=15, size=64):
    import tifffile

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    for i in range(files):
        tifffile.imwrite(root / f"scene_{i}.tif",
                         rng.integers(0, 4096, (size, size, channels)).astype(np.uint16))
    return root


def test_smooth_is_reproducible_and_standardised():
    a, b = data.smooth(3, n_train=50, n_test=10), data.smooth(3, n_train=50, n_test=10)
    assert torch.equal(a.train_input, b.train_input)
    assert not torch.equal(a.train_input, data.smooth(4, n_train=50, n_test=10).train_input)
    both = torch.cat([a.train_input, a.train_target], 1)
    assert abs(float(both.mean())) < 1e-10 and abs(float(both.std()) - 1) < 1e-2
    assert torch.allclose(a.x_out, a.x_in - 2)
    assert a.x_in.shape == (100, 1) and float(a.x_in.max()) == pytest.approx(2 * np.pi)


def test_smooth_noise_covariance():
    # the inputs' covariance is the GP's, up to the standardising factor
    d = data.smooth(0, n_train=20000, n_test=1, length=10)
    emp = torch.cov(d.train_input.T)
    x = d.x_in[:, 0]
    dist = (x[:, None] - x[None]).abs()
    cov = 0.1 * torch.exp(-dist**2 / 2) * torch.exp(-torch.sin(dist) ** 2)
    ratio = emp / cov
    assert float(ratio.std() / ratio.mean()) < 0.05


def test_copy_memory_layout():
    d = data.copy_memory(0, n_train=5, n_test=2, delay=50)
    labels = d.train_input.argmax(-1)
    assert labels.shape == (5, 70)
    assert (labels[:, :10] >= 1).all() and (labels[:, :10] <= 8).all()
    assert (labels[:, 59] == 9).all() and (labels[:, 10:59] == 0).all()
    assert torch.equal(d.train_target[:, -10:].long(), labels[:, :10])
    assert (d.train_target[:, :60] == 0).all()


def test_corruptions():
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(4, 3, 16, 16)
    noisy = corruptions.add_noise(clean, 0.2, gen)
    assert noisy.min() >= 0 and noisy.max() <= 1
    blurred = corruptions.gaussian_blur(clean, 1.0, 1.0, gen)
    assert blurred.std() < clean.std()
    assert torch.allclose(blurred.mean((-1, -2)), clean.mean((-1, -2)), atol=0.05)
    binary = (clean > 0.5).double()
    flipped = corruptions.flip_pixels(binary, 1 / 3, gen)
    assert set(flipped.unique().tolist()) <= {0.0, 1.0}


def test_blur_is_a_mirrored_gaussian_per_image_and_channel():
    # reference: a dense blur matrix M per image (weights exp(-k^2 / 2 sigma^2) for |k| <= 3 *
    # high, normalised; indices mirrored at the edges without repeating the edge pixel), M X M^T
    clean = torch.rand(3, 2, 12, 12, dtype=torch.float64)
    got = corruptions.gaussian_blur(clean, 0.5, 2.0, torch.Generator().manual_seed(3))
    sigmas = 0.5 + 1.5 * torch.rand(3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    n, radius = 12, 6
    for i, s in enumerate(sigmas.tolist()):
        k = np.arange(-radius, radius + 1)
        w = np.exp(-0.5 * k**2 / s**2)
        w /= w.sum()
        m = np.zeros((n, n))
        for row in range(n):
            for off, wk in zip(k, w):
                j = row + off
                m[row, -j if j < 0 else 2 * (n - 1) - j if j >= n else j] += wk
        for c in range(2):
            assert np.allclose(got[i, c].numpy(), m @ clean[i, c].numpy() @ m.T, atol=1e-12), (i, c)


def test_images_split_by_source():
    d = data.skimage_images(0, n_train=20, n_test=5)
    assert d.train_input.shape == (20, 3, 32, 32) and d.test_input.shape == (5, 3, 32, 32)
    assert d.train_target.min() >= 0 and d.train_target.max() <= 1


def test_cifar10_reader(tmp_path):
    root = write_cifar(tmp_path)
    train, test = data.read_cifar10(root)
    assert train.shape == (24, 3, 32, 32) and test.shape == (12, 3, 32, 32)
    d = data.cifar10(0, root=str(root), n_train=10, n_test=4)
    assert d.train_input.shape == (10, 3, 32, 32)


def test_mnist_reader(tmp_path):
    for gz in (True, False):
        root = write_mnist(tmp_path / str(gz), gz=gz)
        d = data.mnist(0, root=str(root), n_train=6, n_test=3)
        assert d.train_input.shape == (6, 1, 28, 28)
        assert set(d.train_target.unique().tolist()) <= {0.0, 1.0}


def test_hyperspectral_reader(tmp_path):
    root = write_hyperspectral(tmp_path)
    d = data.hyperspectral(0, root=str(root), channels=13)
    assert d.train_input.shape[1:] == (13, 32, 32)
    assert len(d.test_input) == 4 and len(d.train_input) == 24  # 1 of 7 files: 4 patches


def test_missing_folder_message(tmp_path):
    for fn in (data.cifar10, data.mnist, data.hyperspectral):
        with pytest.raises(data.DataError, match="dataset.root"):
            fn(0, root=str(tmp_path / "nowhere"))


def test_binary_digits():
    d = data.binary_digits(0, n_train=10, n_test=5)
    assert d.train_input.shape == (10, 1, 28, 28)
    changed = (d.train_input != d.train_target).double().mean()
    assert 0.05 < float(changed) < 0.34  # a third replaced, about half of those differ
