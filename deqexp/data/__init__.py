"""Data sets: generated and embedded ones (smooth sequences, image patches, digits, copy
memory), your own arrays, and readers for local copies of CIFAR-10, MNIST and hyperspectral
TIFF folders. The data-set functions and their registry live in :mod:`deqexp.data.datasets`,
the file readers in :mod:`deqexp.data.readers`; the public names of both import from here
(lazily: importing the package, e.g. for :mod:`deqexp.data.signatures`, does not import torch)."""
import importlib

PUBLIC = {**dict.fromkeys(["DATASETS", "Data", "arrays", "binary_digits", "cifar10", "copy_memory",
                           "hyperspectral", "load_dataset", "mnist", "skimage_images", "smooth"],
                          "datasets"),
          **dict.fromkeys(["DataError", "read_arrays", "read_cifar10", "read_idx"], "readers")}


def __getattr__(name):
    if name in PUBLIC:
        return getattr(importlib.import_module(f"{__name__}.{PUBLIC[name]}"), name)
    raise AttributeError(f"module 'deqexp.data' has no attribute {name!r}")
