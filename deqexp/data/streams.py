"""The authors' random stream (``trainer.rng=authors``): the draws their scripts make from
torch's global generator, replayed from a member's own generator so that seed s gives their
seed s's initial weights and batch order (PAPER-PROTOCOL.md E1-E3; issue 30).

deqexp's default (``trainer.rng=deqexp``) gives each purpose its own generator instead
(:mod:`deqexp.data.seeds`). The authors' scripts seed torch's global generator with the seed
and then, for each (init, scale), draw in this order:

- E2/E3 (conv): their model's ``init_params`` re-seeds with the seed; the random init fills
  four float32 filter banks with ``normal_(0, s / 19)``, and their tied model keeps the third
  as W and the fourth as U (V, Q share them); the kGLM init draws nothing from torch. Then each
  epoch, the evaluation pass at epoch 0 included, their DataLoaders draw three int64 values:
  the training iterator's base seed, the RandomSampler's seed (which seeds a fresh generator
  for ``randperm(N)``, the epoch's order) and the test iterator's base seed.
- E1 (dense, full batch): no DataLoader. Their script builds one fully connected layer per
  init, in the order kglm, naive, random, each with the framework's default ``nn.Linear``
  initialisation; naive keeps its readout V from the second build, random keeps W, U and V
  from the third.
"""
from __future__ import annotations

import math

import torch

Tensor = torch.Tensor

# E1: the authors build one layer per init, in this order; each build draws the same amount
DENSE_BUILDS = {"kglm": 0, "naive": 1, "random": 2}


def authors_generator(seed: int) -> torch.Generator:
    """A generator in the state of torch's global one after ``torch.manual_seed(seed)``."""
    return torch.Generator().manual_seed(int(seed))


def conv_random_filters(gen: torch.Generator, shape: tuple, std: float) -> dict[str, Tensor]:
    """The authors' E2/E3 random init: four float32 fills, the third W and the fourth U."""
    fills = [torch.empty(shape, dtype=torch.float32).normal_(0, std, generator=gen) for _ in range(4)]
    return {"W": fills[2].double(), "U": fills[3].double()}


def _linear(gen: torch.Generator, n_out: int, n_in: int, bias: bool) -> Tensor:
    """The draws of one ``nn.Linear(n_in, n_out)``'s default initialisation; its weight."""
    weight = torch.empty(n_out, n_in, dtype=torch.float32)
    torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=gen)
    if bias:  # drawn, then replaced by zeros in their layer
        bound = 1 / math.sqrt(n_in)
        torch.nn.init.uniform_(torch.empty(n_out, dtype=torch.float32), -bound, bound, generator=gen)
    return weight.double()


def dense_layer_weights(gen: torch.Generator, init: str, n_in: int, width: int,
                        n_out: int) -> dict[str, Tensor]:
    """The authors' E1 layer for ``init``: the builds before it drawn and dropped, then its own
    build's W, U, V (W and U map the input size to the width, as theirs)."""
    for _ in range(DENSE_BUILDS[init] + 1):
        built = {"W": _linear(gen, width, n_in, False), "U": _linear(gen, width, n_in, True),
                 "V": _linear(gen, n_out, width, True)}
        _linear(gen, n_out, n_in, False)  # Q: drawn, then replaced by zeros
    return built


def _int64(gen: torch.Generator) -> int:
    return int(torch.empty((), dtype=torch.int64).random_(generator=gen).item())


class AuthorsOrder:
    """One member's batch order as the authors' DataLoaders draw it (E2/E3), from the stream
    after its initial weights. ``gen`` is the stream; checkpoints save and restore it."""

    def __init__(self, gen: torch.Generator):
        self.gen = gen

    def epoch(self, n: int) -> Tensor:
        """The next epoch's order of ``n`` training samples (its three draws taken)."""
        _int64(self.gen)  # the training iterator's base seed
        order = torch.randperm(n, generator=torch.Generator().manual_seed(_int64(self.gen)))
        _int64(self.gen)  # the test iterator's base seed (even unshuffled, it draws one)
        return order
