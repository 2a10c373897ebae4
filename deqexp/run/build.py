"""From a config to what a job runs on: its members, its data (stacked per seed, in batches)
and its model. Every job (training, the E4 agreement, the E5 timing, the benchmark) builds
through these functions, so a setting means the same everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from omegaconf import OmegaConf

from ..data.datasets import Data, DataError, load_dataset
from ..data.splits import hold_out
from ..deq.inits import DEFAULT_SCALE, InitSpec, initialise
from ..deq.models import ConvDEQ, DenseDEQ
from ..deq.monotone import Monotone
from ..deq.recurrence import Recurrence
from ..deq.spectral import Spectral
from ..theory.families import get_family
from ..theory.filters import grid_locations
from ..theory.kernels import build_kernel
from .batching import take
from .schemas import ConfigError

Tensor = torch.Tensor


@dataclass
class Member:
    """One ensemble member: its index on the ensemble axis, its seed and its init."""

    index: int
    seed: int
    spec: InitSpec


def dataset_options(cfg) -> dict:
    """The data-set function's keyword arguments from ``cfg.dataset``."""
    return {k: v for k, v in OmegaConf.to_container(cfg.dataset, resolve=True).items()
            if k not in ("name", "val_fraction")}


def family_of(cfg):
    return get_family(cfg.family.name, cfg.family.trials, cfg.family.classes)


def kernel_of(cfg):
    return build_kernel(**OmegaConf.to_container(cfg.kernel, resolve=True))


def solvers_of(cfg):
    """The forward solve's and the gradient method's settings (typed, checked)."""
    return OmegaConf.to_object(cfg.solver.forward), OmegaConf.to_object(cfg.solver.backward)


def recurrence_of(cfg) -> Recurrence:
    """The dense layer's parametrisation of W (``model.recurrence``)."""
    kind = cfg.model.recurrence
    if kind == "spectral":
        return Spectral(cfg.model.spectral.target, cfg.model.spectral.learned)
    if kind == "monotone":
        return Monotone(cfg.model.monotone.margin)
    return Recurrence()


def members_from_config(cfg) -> list[Member]:
    """The ensemble's members: inits x scales x seeds, each distinct (init, scale, seed) once (a
    grid that lists a scale twice, as the paper's E2 grid does 1.0, trains it once)."""
    base: InitSpec = OmegaConf.to_object(cfg.init)
    ens = cfg.trainer.ensemble
    inits = list(dict.fromkeys(ens.inits)) or [base.name]
    out = []
    for name in inits:
        scales = list(dict.fromkeys(ens.scales)) or [base.scale if name == base.name else DEFAULT_SCALE[name]]
        for scale in scales:
            for i in range(ens.seeds):
                out.append(Member(len(out), cfg.trainer.seed + i, replace(base, name=name, scale=scale)))
    return out


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when there is one; an unavailable ``cuda`` is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name} but no CUDA device is available; "
                          "use trainer.device=auto or cpu")
    return torch.device(name)


# --------------------------------------------------------------------------- data
@dataclass
class JobData:
    """Per-seed data stacked on a leading axis, and which seed each member uses."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    seed_index: Tensor   # (E,) member -> row of the stacked data
    seeds: list[int]
    meta: Data           # the first seed's data set (loss, locations, classes)
    val_x: Tensor | None = None  # the validation split (dataset.val_fraction, or the file's own)
    val_y: Tensor | None = None
    train_noise: Tensor | None = None  # dataset.noise_pairing=batch: noise rows by batch position
    _whole: dict = field(default_factory=dict, repr=False)  # whole splits per member, built once

    def member_view(self, x: Tensor) -> Tensor:
        """``(S, B, ...)`` to ``(E or 1, B, ...)``: no copy when all members share one seed."""
        return x if x.shape[0] == 1 else x.index_select(0, self.seed_index)

    def batch(self, x: Tensor, idx: Tensor | None) -> Tensor:
        """Members' rows ``idx`` of split ``x``; a whole split (None) is gathered only once."""
        if idx is not None:
            return self.member_view(take(x, idx))
        key = id(x)
        if key not in self._whole:
            self._whole[key] = self.member_view(x)
        return self._whole[key]


def _flatten_images(d: Data) -> Data:
    c, h, w = d.train_input.shape[1:]
    if c != 1:
        raise ConfigError(f"model=dense takes single-channel images (flattened to pixels); this data "
                          f"set has {c} channels: use model=conv")
    flat = lambda t: t.reshape(len(t), -1)  # noqa: E731
    loc = grid_locations(h, w)
    val = (None, None) if d.val_input is None else (flat(d.val_input), flat(d.val_target))
    noise = None if d.train_noise is None else flat(d.train_noise)
    return Data(flat(d.train_input), flat(d.train_target), flat(d.test_input), flat(d.test_target),
                d.loss, d.support, loc, loc, 0, *val, noise)


SPLITS = ("train_input", "train_target", "test_input", "test_target", "val_input", "val_target")


def check_data(name: str, seed: int, d: Data) -> None:
    """Refuse empty or non-finite splits, naming the data set, seed and split."""
    for split in SPLITS:
        t = getattr(d, split)
        if t is None:
            continue
        if len(t) == 0:
            raise DataError(f"dataset={name} (seed {seed}): the {split.split('_')[0]} split is empty; "
                            f"set dataset.n_{split.split('_')[0]} to at least 1")
        if not bool(torch.isfinite(t).all()):
            raise DataError(f"dataset={name} (seed {seed}): {split} contains NaN or inf; "
                            "clean the data (or its source files) first")


def check_range(name: str, d: Data, dtype) -> None:
    """Refuse values that the training dtype cannot hold, and BCE targets outside [0, 1]."""
    top = torch.finfo(dtype).max
    for split in SPLITS:
        t = getattr(d, split)
        if t is not None and bool((t.abs() > top).any()):
            raise DataError(f"dataset={name}: {split} has values up to {float(t.abs().max()):.3g}, "
                            f"beyond {str(dtype).split('.')[-1]}'s range ({top:.3g}); rescale the data, "
                            "or set trainer.dtype=float64")
    for split in ("train_target", "test_target", "val_target"):
        t = getattr(d, split)
        if t is not None and d.loss == "bce" and bool(((t < 0) | (t > 1)).any()):
            span = f"[{float(t.min()):.3g}, {float(t.max()):.3g}]"
            raise DataError(f"dataset={name}: dataset.loss=bce needs targets in [0, 1] (labels or "
                            f"probabilities), but {split} spans {span}; use dataset.loss=mse for "
                            "real-valued targets, or rescale them")


def load_sets(cfg, seeds) -> list[Data]:
    """Each seed's data set, checked."""
    sets = []
    for s in seeds:
        d = load_dataset(cfg.dataset.name, s, **dataset_options(cfg))
        if cfg.dataset.get("val_fraction", 0):
            d = hold_out(d, cfg.dataset.val_fraction, s, cfg.dataset.name)
        check_data(cfg.dataset.name, s, d)
        sets.append(d)
    return sets


def load_job_data(cfg, members: list[Member], device, dtype) -> JobData:
    """Load each distinct seed's data set once and stack them."""
    seeds = sorted({m.seed for m in members})
    sets = load_sets(cfg, seeds)
    if cfg.model.kind == "dense" and sets[0].is_image:
        sets = [_flatten_images(d) for d in sets]
    if cfg.model.kind == "conv" and not sets[0].is_image:
        raise ConfigError(f"model=conv needs image data; dataset={cfg.dataset.name} is a sequence "
                          "data set: use model=dense")
    family = family_of(cfg)
    for d in sets:
        for x in (d.train_input, d.test_input, d.val_input):
            if x is not None:
                family.validate(x)
        check_range(cfg.dataset.name, d, dtype)
    stack = lambda key: torch.stack([getattr(d, key) for d in sets]).to(device, dtype)  # noqa: E731
    index = torch.tensor([seeds.index(m.seed) for m in members], device=device)
    val = (stack("val_input"), stack("val_target")) if sets[0].val_input is not None else (None, None)
    noise = stack("train_noise") if sets[0].train_noise is not None else None
    return JobData(stack("train_input"), stack("train_target"), stack("test_input"),
                   stack("test_target"), index, seeds, sets[0].to(device, dtype), *val, noise)


# --------------------------------------------------------------------------- model
def build_model(cfg, job: JobData, members: list[Member], device, dtype):
    """The DEQ with one member per :class:`Member`, initialised from its spec and seed."""
    family = family_of(cfg)
    solver, gradient = solvers_of(cfg)
    e, meta = len(members), job.meta
    specs, seeds = [m.spec for m in members], [m.seed for m in members]
    if cfg.model.kind == "conv":
        c, h, w = meta.train_input.shape[1:]
        model = ConvDEQ(c, cfg.model.kernel_size, family, e, padding=cfg.model.padding,
                        solver=solver, gradient=gradient, readout=cfg.model.readout,
                        norm_method=cfg.model.norm_method, tie_readout=cfg.model.tie_readout,
                        dtype=torch.float64)
        initialise(model, specs, seeds, image_size=(h, w), rng=cfg.trainer.rng)
    else:
        n_in, n_out = meta.x_in.shape[0], meta.x_out.shape[0]
        width = n_in if cfg.model.width is None else cfg.model.width
        model = DenseDEQ(n_in, width, n_out, family, e, solver=solver, gradient=gradient,
                         readout=cfg.model.readout, classes=meta.classes or None,
                         recurrence=recurrence_of(cfg), dtype=torch.float64)
        initialise(model, specs, seeds, kernel=kernel_of(cfg), x_in=meta.x_in.double().cpu(),
                   x_out=meta.x_out.double().cpu(), rng=cfg.trainer.rng)
    model.member_chunk = member_chunk(cfg, job, device)
    return model.to(device=device, dtype=dtype)


CPU_GROUP_VALUES = 2**20  # about 4 MB of float32 per group tensor: stays in a CPU's caches


def member_chunk(cfg, job: JobData, device) -> int | None:
    """Members solved together: as configured, else all on a GPU and ~1M values on a CPU."""
    if cfg.trainer.member_chunk is not None or device.type != "cpu":
        return cfg.trainer.member_chunk
    batch = cfg.trainer.batch_size or job.train_x.shape[1]
    per_sample = job.train_x[0, 0].numel()
    return max(1, CPU_GROUP_VALUES // max(1, batch * per_sample))
