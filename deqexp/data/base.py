"""What every data set returns (:class:`Data`) and the two helpers they share: a generator
from a seed and a random subset."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .readers import DataError

Tensor = torch.Tensor


@dataclass
class Data:
    """Train/test inputs and targets plus what the model needs to know about them."""

    train_input: Tensor
    train_target: Tensor
    test_input: Tensor
    test_target: Tensor
    loss: str = "mse"                  # mse | cross_entropy | bce
    support: str = "real"              # what values the inputs take (for the family check)
    x_in: Tensor | None = None         # (n, d) input locations (sequence data)
    x_out: Tensor | None = None        # (m, d) target locations
    classes: int = 0                   # trailing one-hot axis (copy_memory)
    val_input: Tensor | None = None    # the validation split (dataset.val_fraction, or a file's own)
    val_target: Tensor | None = None
    train_noise: Tensor | None = None  # dataset.noise_pairing=batch: the noise added by batch position

    @property
    def is_image(self) -> bool:
        return self.train_input.dim() == 4

    def to(self, device, dtype) -> "Data":
        conv = lambda t: None if t is None else t.to(device=device, dtype=dtype)  # noqa: E731
        return Data(conv(self.train_input), conv(self.train_target), conv(self.test_input),
                    conv(self.test_target), self.loss, self.support, conv(self.x_in),
                    conv(self.x_out), self.classes, conv(self.val_input), conv(self.val_target),
                    conv(self.train_noise))


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def pick(x: Tensor, n: int, gen: torch.Generator, split: str = "train") -> Tensor:
    """A random subset of ``n`` samples (by ``gen``); all of them for ``n = 0``."""
    if n > len(x):
        raise DataError(f"dataset.n_{split}={n}, but the data have {len(x)} {split} samples; "
                        f"use at most {len(x)}, or 0 for all")
    if n <= 0 or n == len(x):
        return x
    return x[torch.randperm(len(x), generator=gen)[:n]]
