"""The order of a job's training batches and how a batch is gathered.

The order comes from one stream per seed by default (``trainer.rng=deqexp``, the generator
seeded with ``seed + seeds.BATCH_ORDER``), or, with ``trainer.rng=authors``, from the authors'
stream of each (seed, init) (:mod:`deqexp.data.streams`: members that share both share it).
With ``dataset.noise_pairing=batch`` a training batch's input is its clean images plus the
noise rows of its position in the epoch, as in the authors' loop.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.seeds import BATCH_ORDER
from ..data.streams import AuthorsOrder, authors_generator, conv_random_filters

Tensor = torch.Tensor


def batches(n: int, batch_size: int, orders: Tensor | None = None):
    """Index tensors ``(G, B)`` over ``n`` samples, cut from ``orders`` ``(G, n)`` (None: in
    order, ``(1, B)``). A single full batch in order is yielded as None (the whole split, no
    gather): the loss is a mean, so the order of its samples does not matter."""
    bs = batch_size or n
    if orders is None:
        if bs >= n:
            yield None
            return
        orders = torch.arange(n)[None]
    for start in range(0, n, bs):
        yield orders[:, start : start + bs]


def take(x: Tensor, idx: Tensor | None, rows: list[int] | None = None) -> Tensor:
    """``x[rows[g], idx[g]]`` for each stream g (rows: one per seed of ``x``; all of ``x`` for
    None)."""
    if idx is None:
        return x
    rows = list(range(x.shape[0])) if rows is None else rows
    if idx.shape[0] == 1 and len(rows) > 1:
        idx = idx.expand(len(rows), -1)
    return torch.stack([x[r, i.to(x.device)] for r, i in zip(rows, idx)])


@dataclass
class OrderStreams:
    """A job's batch-order streams: ``gens`` (checkpointed), the data row of each stream
    (``rows``) and the stream of each member (``index``, ``(E,)``)."""

    gens: list[torch.Generator]
    rows: list[int]
    index: Tensor        # on the data's device: gathered with every batch
    authors: bool = False

    def start(self, n: int) -> None:
        """Before the first epoch: the authors' stream takes the draws of their evaluation
        pass at epoch 0 (their DataLoaders draw even when nothing trains)."""
        if self.authors:
            self.orders(n)

    def orders(self, n: int) -> Tensor:
        """This epoch's order of ``n`` training samples for every stream, ``(G, n)``."""
        if self.authors:
            return torch.stack([AuthorsOrder(g).epoch(n) for g in self.gens])
        return torch.stack([torch.randperm(n, generator=g) for g in self.gens])

    def epoch(self, n: int, batch_size: int, paired: bool = False):
        """The epoch's batches. A full batch draws no order in deqexp's streams unless the
        noise is paired by position (``paired``); the authors' stream always draws."""
        if not (self.authors or paired) and (batch_size or n) >= n:
            return batches(n, batch_size)
        return batches(n, batch_size, self.orders(n))

    def gather(self, job, x: Tensor, idx: Tensor | None) -> Tensor:
        """Each member's rows ``idx`` of split ``x`` (``(S, N, ...)``)."""
        if idx is None:
            return job.batch(x, None)
        got = take(x, idx, self.rows)
        return got if got.shape[0] == 1 else got.index_select(0, self.index)

    def inputs(self, job, k: int, idx: Tensor | None, batch_size: int) -> Tensor:
        """The inputs of the epoch's ``k``-th training batch: the split's own, or, with the
        noise paired by batch position, the clean images plus noise rows ``k*B .. (k+1)*B``."""
        if job.train_noise is None:
            return self.gather(job, job.train_x, idx)
        clean = self.gather(job, job.train_y, idx)
        bs = batch_size or job.train_x.shape[1]
        noise = job.member_view(job.train_noise[:, k * bs : k * bs + clean.shape[1]])
        return (clean + noise).clamp(0, 1)


def order_streams(rng: str, job, members, filter_shape: tuple | None = None) -> OrderStreams:
    """The streams of ``trainer.rng``: one per seed (deqexp), or one per (seed, init) that starts
    after that init's draws from the authors' stream (``filter_shape``: the conv random init's
    filters, ``(C, C, k, k)``)."""
    if rng != "authors":
        gens = [torch.Generator().manual_seed(s + BATCH_ORDER) for s in job.seeds]
        return OrderStreams(gens, list(range(len(job.seeds))), job.seed_index)
    keys = list(dict.fromkeys((m.seed, m.spec.name) for m in members))
    gens = []
    for seed, init in keys:
        gen = authors_generator(seed)
        if init == "random" and filter_shape is not None:
            conv_random_filters(gen, filter_shape, 1.0)  # the same draws at every scale
        gens.append(gen)
    index = torch.tensor([keys.index((m.seed, m.spec.name)) for m in members], device=job.seed_index.device)
    return OrderStreams(gens, [job.seeds.index(s) for s, _ in keys], index, authors=True)
