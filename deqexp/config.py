"""The run configuration: structured dataclasses registered with Hydra's ConfigStore.

One source of truth: the schema and defaults live here (and in the data-set
functions' signatures, from which the ``dataset`` options are generated), the
YAML under ``conf/`` only composes them (top-level defaults, experiment
presets, launchers). Struct mode rejects unknown keys; :func:`validate` checks
values before any training.
"""
from __future__ import annotations

import dataclasses
import inspect
import typing
from dataclasses import dataclass, field
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from . import data
from .families import FAMILIES
from .gradients import GradientSettings
from .inits import DEFAULT_SCALE, INITS, InitSpec
from .kernels import BASE_KERNELS
from .solvers import SOLVERS, SolverSettings

TASKS = ("train", "kglm_agreement", "init_timing")


class ConfigError(ValueError):
    """An invalid configuration value; the message names the key and the valid choices."""


@dataclass
class FamilyConf:
    name: str = "tanh"
    trials: int = 1          # binomial N
    classes: int = 2         # categorical C


@dataclass
class KernelConf:
    name: str = "se"         # a base kernel or a product such as "se*periodic"
    lengthscale: float = 1.0
    variance: float = 1.0
    period: float = 6.283185307179586
    period_lengthscale: float = 1.0
    offset: float = 1.0
    degree: int = 2


@dataclass
class SolverConf:
    """The forward solve and the gradient method with its adjoint solve (same settings type)."""

    forward: SolverSettings = field(default_factory=SolverSettings)
    backward: GradientSettings = field(default_factory=GradientSettings)


@dataclass
class ModelConf:
    kind: str = "dense"          # dense | conv
    width: Optional[int] = None  # dense hidden width (None: number of input locations)
    readout: str = "natural"     # natural (V z + Q t + c) | mean (family mean of it)
    kernel_size: int = 5         # conv
    padding: str = "zeros"       # conv: zeros | circular
    norm_method: str = "exact"   # conv operator norms, for the kglm init's lambda and in the
                                 # metrics alike: exact | dft (the authors') | bound


@dataclass
class OptimConf:
    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "none"       # none | cosine (annealed over all steps)
    eta_min: float = 1e-6


@dataclass
class EnsembleConf:
    """Members trained together in one process: the product inits x scales x seeds."""

    seeds: int = 1                          # seeds trainer.seed .. trainer.seed + seeds - 1
    inits: List[str] = field(default_factory=list)     # empty: init.name
    scales: List[float] = field(default_factory=list)  # empty: init.scale


@dataclass
class TrainerConf:
    epochs: int = 200
    batch_size: int = 0          # 0: full batch
    device: str = "auto"         # auto | cpu | cuda | cuda:N
    dtype: str = "float32"       # float32 | float64
    seed: int = 0
    threads: int = 0             # torch threads per job (0: leave torch's default)
    eval_train: bool = True      # evaluate the full training set after each epoch
    freeze_wu_epochs: int = 0    # naive init: W and U fixed for this many epochs (E6)
    member_chunk: Optional[int] = None  # members solved together (None: ~1M values a group on
                                        # a CPU, all members on a GPU); results do not depend on it
    ensemble: EnsembleConf = field(default_factory=EnsembleConf)


@dataclass
class WandbConf:
    enabled: bool = True
    mode: Optional[str] = None   # offline | online | disabled (None: $WANDB_MODE, else offline)
    project: str = "deqexp"
    entity: Optional[str] = None


@dataclass
class LoggerConf:
    csv: bool = True
    wandb: WandbConf = field(default_factory=WandbConf)
    progress: bool = True        # tqdm on a terminal, plain lines otherwise


@dataclass
class PathsConf:
    output: str = "."            # runs/ and multirun/ are made under it
    data: str = "data"           # local data sets default to folders under it


# where each local data set looks by default, under paths.data
DATA_FOLDERS = {"cifar10": "cifar-10-batches-py", "hyperspectral": "hyperspectral", "mnist": "mnist"}


@dataclass
class TimingConf:
    """task=init_timing (E5): layer sizes to time and trials per size."""

    widths: List[int] = field(default_factory=lambda: [50, 100, 200, 500, 1000])
    channels: List[int] = field(default_factory=lambda: [1, 3, 7, 15, 31, 63])
    trials: int = 10
    kernel_size: int = 5
    image_size: int = 32


@dataclass
class Config:
    dataset: Any = MISSING
    family: FamilyConf = MISSING
    kernel: KernelConf = MISSING
    solver: SolverConf = MISSING
    init: InitSpec = MISSING
    model: ModelConf = MISSING
    optim: OptimConf = MISSING
    trainer: TrainerConf = MISSING
    logger: LoggerConf = MISSING
    paths: PathsConf = MISSING
    name: str = "default"        # experiment name: W&B group and output folder
    task: str = "train"          # train | kglm_agreement (E4) | init_timing (E5)
    force: bool = False          # rerun even if a completed run with this config exists
    timing: TimingConf = field(default_factory=TimingConf)


# --------------------------------------------------------------------------- dataset schemas
def _field_type(hint):
    if hint in (int, float, str, bool):
        return hint
    if hint in (tuple, list):
        return List[str]
    return Optional[str]


def dataset_schema(name: str) -> type:
    """A dataclass for data set ``name`` generated from its function's keyword defaults."""
    fn = data.DATASETS[name]
    hints = typing.get_type_hints(fn)
    fields = [("name", str, field(default=name))]
    for p in inspect.signature(fn).parameters.values():
        if p.default is inspect.Parameter.empty or p.kind == p.VAR_KEYWORD:
            continue
        default = list(p.default) if isinstance(p.default, tuple) else p.default
        if p.name == "root":
            default = "${paths.data}/" + DATA_FOLDERS[name]
        fields.append((p.name, _field_type(hints.get(p.name)),
                       field(default_factory=lambda d=default: d) if isinstance(default, list)
                       else field(default=default)))
    return dataclasses.make_dataclass(f"{name.title().replace('_', '')}DatasetConf", fields)


E1_KERNEL = dict(name="se*periodic", lengthscale=1.0, period=3.141592653589793,
                 period_lengthscale=1.4142135623730951)


def register() -> None:
    """Register the schema and every group option with Hydra's ConfigStore."""
    cs = ConfigStore.instance()
    cs.store(name="deqexp_schema", node=Config)
    for name in data.DATASETS:
        cs.store(group="dataset", name=name, node=dataset_schema(name))
    for name in FAMILIES:
        cs.store(group="family", name=name, node=FamilyConf(name=name))
    for name in [*BASE_KERNELS, "se*periodic"]:
        cs.store(group="kernel", name=name.replace("*", "_x_"), node=KernelConf(name=name))
    cs.store(group="kernel", name="e1", node=KernelConf(**E1_KERNEL))
    for name in SOLVERS:
        cs.store(group="solver", name=name,   # both solves: the backward one must converge too
                 node=SolverConf(forward=SolverSettings(name=name), backward=GradientSettings(name=name)))
    for name in INITS:
        cs.store(group="init", name=name, node=InitSpec(name=name, scale=DEFAULT_SCALE[name]))
    cs.store(group="model", name="dense", node=ModelConf(kind="dense"))
    cs.store(group="model", name="conv", node=ModelConf(kind="conv", readout="mean"))
    cs.store(group="optim", name="adam", node=OptimConf())
    cs.store(group="optim", name="adam_cosine", node=OptimConf(schedule="cosine"))
    cs.store(group="trainer", name="default", node=TrainerConf())
    cs.store(group="logger", name="default", node=LoggerConf())
    cs.store(group="logger", name="wandb", node=LoggerConf())
    cs.store(group="logger", name="csv", node=LoggerConf(wandb=WandbConf(enabled=False)))
    cs.store(group="logger", name="none", node=LoggerConf(csv=False, wandb=WandbConf(enabled=False)))
    cs.store(group="paths", name="default", node=PathsConf())


# --------------------------------------------------------------------------- validation
def _choice(key: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of {sorted(choices)}")


def _positive(key: str, value, strict: bool = True) -> None:
    if value is None:
        return
    if (strict and not value > 0) or (not strict and value < 0):
        raise ConfigError(f"{key}={value} is not valid; it must be {'>' if strict else '>='} 0")


def validate(cfg) -> None:
    """Check values that types alone cannot; raise :class:`ConfigError` naming the key."""
    _choice("task", cfg.task, TASKS)
    for key in ("forward", "backward"):
        try:
            OmegaConf.to_object(cfg.solver[key]).check(f"solver.{key}")
        except ValueError as err:
            raise ConfigError(str(err)) from None
    for key, v in (("init.lam", cfg.init.lam),
                   ("init.scale", cfg.init.scale), ("optim.lr", cfg.optim.lr),
                   ("kernel.lengthscale", cfg.kernel.lengthscale), ("trainer.epochs", cfg.trainer.epochs),
                   ("trainer.ensemble.seeds", cfg.trainer.ensemble.seeds),
                   ("trainer.member_chunk", cfg.trainer.member_chunk)):
        _positive(key, v)
    _positive("trainer.batch_size", cfg.trainer.batch_size, strict=False)
    _choice("family.name", cfg.family.name, FAMILIES)
    _choice("init.name", cfg.init.name, INITS)
    for name in cfg.trainer.ensemble.inits:
        _choice("trainer.ensemble.inits", name, INITS)
    for s in cfg.trainer.ensemble.scales:
        _positive("trainer.ensemble.scales", s)
    _choice("init.construction", cfg.init.construction, ("pd", "paper"))
    _choice("model.norm_method", cfg.model.norm_method, ("exact", "dft", "bound"))
    _choice("model.kind", cfg.model.kind, ("dense", "conv"))
    _choice("model.readout", cfg.model.readout, ("natural", "mean"))
    _choice("model.padding", cfg.model.padding, ("zeros", "circular"))
    _choice("optim.schedule", cfg.optim.schedule, ("none", "cosine"))
    _choice("optim.name", cfg.optim.name, ("adam", "sgd"))
    _choice("trainer.dtype", cfg.trainer.dtype, ("float32", "float64"))
    if not (cfg.trainer.device in ("auto", "cpu", "cuda") or str(cfg.trainer.device).startswith("cuda:")):
        raise ConfigError(f"trainer.device={cfg.trainer.device!r} is not valid; "
                          "choose auto, cpu, cuda or cuda:N")
    if cfg.logger.wandb.mode is not None:
        _choice("logger.wandb.mode", cfg.logger.wandb.mode, ("offline", "online", "disabled"))
