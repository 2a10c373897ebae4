"""Data sets: generated and embedded ones (smooth sequences, image patches, digits, copy
memory), your own arrays, and readers for local copies of CIFAR-10, MNIST and hyperspectral
TIFF folders. The data-set functions and their registry live in :mod:`deqexp.data.datasets`,
the file readers in :mod:`deqexp.data.readers`; the public names of both import from here."""
from .datasets import (  # noqa: F401
    DATASETS,
    Data,
    arrays,
    binary_digits,
    cifar10,
    copy_memory,
    hyperspectral,
    load_dataset,
    mnist,
    skimage_images,
    smooth,
)
from .readers import DataError, read_arrays, read_cifar10, read_idx  # noqa: F401
