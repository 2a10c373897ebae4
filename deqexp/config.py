"""The run configuration: structured dataclasses registered with Hydra's ConfigStore.

One source of truth: the schema and defaults live here (and in the data-set
functions' signatures, from which the ``dataset`` options are generated), the
YAML under ``conf/`` only composes them (top-level defaults, experiment
presets, launchers). Struct mode rejects unknown keys; :func:`validate` checks
values before any training.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from . import data
from .families import FAMILIES, get_family
from .gradients import GradientSettings
from .inits import DEFAULT_SCALE, INITS, InitSpec
from .kernels import BASE_KERNELS, build_kernel
from .solvers import SOLVERS, SolverSettings

TASKS = ("train", "kglm_agreement", "init_timing")
# keys (and key prefixes) that do not change a run's results: left out of its fingerprint and
# of its folder name
NON_RESULT_KEYS = ("force", "name", "launcher", "logger", "trainer.device", "trainer.threads",
                   "trainer.member_chunk", "paths.output", "hydra")


class ConfigError(ValueError):
    """An invalid configuration value; the message names the key and the valid choices."""


@dataclass
class FamilyConf:
    name: str = "tanh"
    trials: int = 1          # binomial N
    classes: int = 2         # categorical C


@dataclass
class KernelConf:
    """A kernel by name; unset (null) parameters take the kernel's own default, and setting
    one that the kernel does not use is an error."""

    name: str = "se"         # a base kernel or a product such as "se*periodic"
    lengthscale: Optional[float] = None        # se, matern*: 1.0
    variance: Optional[float] = None           # all: 1.0 (first factor of a product)
    period: Optional[float] = None             # periodic: 2 pi
    period_lengthscale: Optional[float] = None  # periodic's length-scale: 1.0
    offset: Optional[float] = None             # linear: 0.0, polynomial: 1.0
    degree: Optional[int] = None               # polynomial: 2


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
    eval_every: int = 1          # evaluate, log and take operator norms every k epochs (and the last)
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


CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def compose(*overrides: str, hydra: bool = False):
    """The config ``deqexp train OVERRIDES`` would run (in-process, Hydra's compose API);
    with ``hydra=True`` the ``hydra`` node too (launcher, sweeper)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from .cli import register_resolvers

    register()
    register_resolvers()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR, job_name="train"):
        return hydra_compose("config", list(overrides), return_hydra_config=hydra)


# --------------------------------------------------------------------------- validation
def _choice(key: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of {sorted(choices)}")


def _positive(key: str, value, strict: bool = True) -> None:
    if value is None:
        return
    if (strict and not value > 0) or (not strict and value < 0):
        raise ConfigError(f"{key}={value} is not valid; it must be {'>' if strict else '>='} 0")


def _library_check(group: str, build) -> None:
    """Build a library object; its ValueError becomes a ConfigError naming the group."""
    try:
        build()
    except ValueError as err:
        raise ConfigError(f"{group}: {err}") from None


def unknown_keys(node, prefix: str = "") -> list[tuple[str, list[str]]]:
    """Keys that the schema does not define (Hydra's ``+key=value`` adds them even to a typed
    config), each with the node's valid keys."""
    from omegaconf import DictConfig

    found = []
    kind = OmegaConf.get_type(node)
    allowed = {f.name for f in dataclasses.fields(kind)} if dataclasses.is_dataclass(kind) else None
    for key in node.keys():
        path = f"{prefix}{key}"
        if allowed is not None and key not in allowed:
            found.append((path, sorted(allowed)))
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            found += unknown_keys(child, path + ".")
    return found


def validate(cfg) -> None:
    """Check values that types alone cannot; raise :class:`ConfigError` naming the key."""
    for path, allowed in unknown_keys(cfg):
        near = difflib.get_close_matches(path.rsplit(".", 1)[-1], allowed, n=1)
        hint = f"; did you mean '{near[0]}'?" if near else f"; valid keys: {', '.join(allowed)}"
        raise ConfigError(f"unknown key '{path}' (not in the schema, so it would be ignored){hint}")
    _choice("task", cfg.task, TASKS)
    for key in ("forward", "backward"):
        try:
            OmegaConf.to_object(cfg.solver[key]).check(f"solver.{key}")
        except ValueError as err:
            raise ConfigError(str(err)) from None
    for key, v in (("init.lam", cfg.init.lam),
                   ("init.scale", cfg.init.scale), ("optim.lr", cfg.optim.lr),
                   ("kernel.lengthscale", cfg.kernel.lengthscale), ("kernel.variance", cfg.kernel.variance),
                   ("kernel.period", cfg.kernel.period),
                   ("kernel.period_lengthscale", cfg.kernel.period_lengthscale),
                   ("trainer.epochs", cfg.trainer.epochs),
                   ("trainer.ensemble.seeds", cfg.trainer.ensemble.seeds),
                   ("trainer.eval_every", cfg.trainer.eval_every),
                   ("trainer.member_chunk", cfg.trainer.member_chunk)):
        _positive(key, v)
    _positive("trainer.batch_size", cfg.trainer.batch_size, strict=False)
    _choice("family.name", cfg.family.name, FAMILIES)
    _choice("init.name", cfg.init.name, INITS)
    for name in cfg.trainer.ensemble.inits:
        _choice("trainer.ensemble.inits", name, INITS)
    for s in cfg.trainer.ensemble.scales:
        _positive("trainer.ensemble.scales", s)
    if cfg.init.lam is not None and len(cfg.trainer.ensemble.scales) > 0:
        raise ConfigError(f"init.lam={cfg.init.lam} gives every member the same lambda, so the sweep "
                          f"trainer.ensemble.scales={list(cfg.trainer.ensemble.scales)} would do "
                          "nothing; set one of them")
    for key, v in (("init.naive_lengthscale", cfg.init.naive_lengthscale),
                   ("init.random_divisor", cfg.init.random_divisor), ("model.width", cfg.model.width),
                   ("trainer.freeze_wu_epochs", cfg.trainer.freeze_wu_epochs + 1)):
        _positive(key, v)
    if not 0 <= cfg.init.lengthscale_low <= cfg.init.lengthscale_high:
        raise ConfigError(f"init.lengthscale_low={cfg.init.lengthscale_low} and init.lengthscale_high="
                          f"{cfg.init.lengthscale_high} must satisfy 0 <= low <= high")
    if cfg.model.kernel_size < 1 or cfg.model.kernel_size % 2 != 1:
        raise ConfigError(f"model.kernel_size={cfg.model.kernel_size} is not valid; it must be odd "
                          "(a centred window), e.g. 3 or 5")
    _library_check("kernel", lambda: build_kernel(**OmegaConf.to_container(cfg.kernel)))
    _library_check("family", lambda: get_family(cfg.family.name, cfg.family.trials, cfg.family.classes))
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
