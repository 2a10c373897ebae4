"""Data sets: generated and embedded ones (smooth sequences, image patches, digits, copy
memory), your own arrays, and readers for local copies of CIFAR-10, MNIST and hyperspectral
TIFF folders. The data-set functions and their registry live in :mod:`deqexp.data.datasets`
and are importable from here."""
from .datasets import *  # noqa: F401,F403  (the public names: deqexp.data.smooth, DATASETS, ...)
