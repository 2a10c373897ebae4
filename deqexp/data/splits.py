"""The validation split: held out from the training split, by seed, so that choices (a scale, a
learning rate, an early-stopping epoch) are made on data the test loss never sees."""
from __future__ import annotations

import dataclasses

import torch

from . import seeds
from .datasets import Data
from .readers import DataError


def validation_size(n_train: int, fraction: float) -> int:
    """Samples held out of ``n_train`` for ``dataset.val_fraction``: at least one, and at least
    one left to train on."""
    return min(max(1, round(fraction * n_train)), n_train - 1)


def hold_out(d: Data, fraction: float, seed: int, name: str = "") -> Data:
    """``d`` with a random ``fraction`` of its training samples (by ``seed``) moved to the
    validation split; refused when the data set has a validation split of its own."""
    if d.val_input is not None:
        raise DataError(f"dataset={name}: the file has its own validation split (val_input, val_target), "
                        f"so dataset.val_fraction={fraction} would hold out a second one; set "
                        "dataset.val_fraction=0")
    n = len(d.train_input)
    if n < 2:
        raise DataError(f"dataset={name}: dataset.val_fraction={fraction} needs at least 2 training "
                        f"samples (there are {n})")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + seeds.VALIDATION))
    k = validation_size(n, fraction)
    val, train = order[:k], order[k:]
    return dataclasses.replace(d, train_input=d.train_input[train], train_target=d.train_target[train],
                               val_input=d.train_input[val], val_target=d.train_target[val])
