"""The run configuration's schemas: structured dataclasses, one per config group.

Each key's type, default and meaning are written here once; ``conf/<group>/*.yaml`` and the
ConfigStore are generated from them (:mod:`deqexp.run.config`). The ``dataset`` schemas are
generated from the data-set functions' signatures (:func:`dataset_schema`), and the solver
settings are :class:`deqexp.deq.settings.SolverSettings`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import MISSING

from ..data import signatures
from ..deq.init_spec import InitSpec
from ..deq.settings import GradientSettings, SolverSettings

TASKS = ("train", "kglm_agreement", "init_timing")


class ConfigError(ValueError):
    """An invalid configuration value; the message names the key and the valid choices."""


@dataclass
class FamilyConf:
    name: str = "tanh"       # the exponential family: its activation and loss (family=NAME)
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
class SpectralConf:
    """model.recurrence=spectral: W = g W_raw / ||W_raw||_2 (deqexp.deq.spectral)."""

    target: float = 1.0          # g, the norm W is held at
    learned: bool = False        # g a trained parameter per member (starting at target)


@dataclass
class MonotoneConf:
    """model.recurrence=monotone: W = (1 - m) I - A^T A + B - B^T (deqexp.deq.monotone)."""

    margin: float = 1.0          # m: I - W >= m I (m = 1 holds the kGLM init exactly)


@dataclass
class ModelConf:
    kind: str = "dense"          # dense | conv
    width: Optional[int] = None  # dense hidden width (None: number of input locations)
    readout: str = "natural"     # natural (V z + Q t + c) | mean (family mean of it)
    kernel_size: int = 5         # conv
    padding: str = "zeros"       # conv: zeros | circular
    norm_method: str = "exact"   # conv operator norms, for the kglm init's lambda and in the
                                 # metrics alike: exact | dft (the authors') | bound
    tie_readout: bool = False    # conv: the readout uses the layer's filters, V = W and Q = U
                                 # (the authors' E2 model: half the parameters)
    recurrence: str = "free"     # dense W: free | spectral (normalised to a target norm) |
                                 # monotone (monDEQ's class, solved by Peaceman-Rachford)
    spectral: SpectralConf = field(default_factory=SpectralConf)
    monotone: MonotoneConf = field(default_factory=MonotoneConf)


@dataclass
class OptimConf:
    name: str = "adam"           # adam | sgd (per member: a held member keeps its state)
    lr: float = 1e-3             # learning rate
    weight_decay: float = 0.0    # L2 penalty added to the gradient (>= 0)
    schedule: str = "none"       # none | cosine (annealed over all steps)
    eta_min: float = 1e-6        # schedule=cosine: the learning rate it anneals to
    anneal_extra_epochs: int = 0  # cosine T_max = (epochs + this) x batches per epoch; the
                                  # authors' E2 code anneals over one epoch more than it trains


@dataclass
class EnsembleConf:
    """Members trained together in one process: the product inits x scales x seeds."""

    seeds: int = 1                          # seeds trainer.seed .. trainer.seed + seeds - 1
    inits: List[str] = field(default_factory=list)     # empty: init.name
    scales: List[float] = field(default_factory=list)  # empty: init.scale


@dataclass
class JacRegConf:
    """Jacobian regularisation (deqexp.deq.jacreg): loss + weight x Hutchinson ||J_f(z*)||_F^2 / d."""

    weight: float = 0.0          # 0: off
    every: int = 1               # on every k-th training step


@dataclass
class TrainerConf:
    epochs: int = 200            # training epochs (passes over the training split)
    batch_size: int = 0          # 0: full batch
    device: str = "auto"         # auto | cpu | cuda | cuda:N
    dtype: str = "float32"       # float32 | float64
    seed: int = 0                # the member's seed: data, batch order and random init (ensemble:
                                 # trainer.seed .. trainer.seed + ensemble.seeds - 1)
    rng: str = "deqexp"          # deqexp: a generator per purpose (init, batch order, probes) | authors:
                                 # the authors' one torch stream per member, so seed s gives their
                                 # seed s's random init and batch order (E1-E3; data/streams.py)
    threads: int = 0             # torch threads per job (0: the usable cores / parallel jobs)
    eval_train: bool = False     # the training split's loss at every evaluation (always: first, last)
    eval_every: int = 1          # evaluate, log and take operator norms every k epochs (and the last)
    jac_samples: int = 8         # jac_norm (||J||_2 of the fixed-point map at z*) over the first k
                                 # test samples, at every evaluation (0: not computed)
    checkpoint_every: int = 10   # checkpoint every k epochs, at the end and on SIGTERM/SIGUSR2
                                 # (0: never); a rerun of an interrupted config resumes from it
    freeze_wu_epochs: int = 0    # naive init: W and U fixed for this many epochs (E6)
    member_chunk: Optional[int] = None  # members solved together (None: ~1M values a group on
                                        # a CPU, all members on a GPU); results do not depend on it
    ensemble: EnsembleConf = field(default_factory=EnsembleConf)
    jac_reg: JacRegConf = field(default_factory=JacRegConf)


@dataclass
class WandbConf:
    enabled: bool = True         # log each run to W&B (in its folder; logger=csv turns it off)
    mode: Optional[str] = None   # offline | online | disabled (None: $WANDB_MODE, else offline)
    project: str = "deqexp"      # the W&B project
    entity: Optional[str] = None  # the W&B entity (user or team; None: your default)


@dataclass
class LoggerConf:
    csv: bool = True             # write metrics.csv (every evaluated epoch, one row a member)
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

    widths: List[int] = field(default_factory=lambda: [50, 100, 200, 500, 1000])  # dense widths
    channels: List[int] = field(default_factory=lambda: [1, 3, 7, 15, 31, 63])   # conv channels
    trials: int = 10             # timed trials per size (the median is reported)
    kernel_size: int = 5         # conv filter size
    image_size: int = 32         # conv image height and width


@dataclass
class TrialConf:
    """Set by the Optuna sweeper (``hydra/sweeper=optuna``) for each trial's jobs, never by hand:
    where the job reports its validation loss at each evaluated epoch, so that a pruner can stop
    it. Not part of the run's identity."""

    storage: Optional[str] = None   # the study's storage (a journal file, or an RDB URL)
    study: Optional[str] = None     # the study's name
    trial: Optional[int] = None     # the trial's id in the storage (None: not a trial)
    pruner: str = "none"            # none | median | halving
    objective: str = "best_val_loss"  # what the trial is scored on (test_* only when allowed)


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
    search: TrialConf = field(default_factory=TrialConf)


# --------------------------------------------------------------------------- dataset schemas
# a data-set option's type from its annotation as written (data/signatures.py)
FIELD_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "tuple": List[str], "list": List[str]}


def dataset_schema(name: str) -> type:
    """A dataclass for data set ``name`` generated from its function's keyword defaults, and
    ``val_fraction`` (every data set: the share of the training split held out for validation,
    :mod:`deqexp.data.splits`; 0: none)."""
    fields = [("name", str, field(default=name))]
    for opt in signatures.options(name):
        default = list(opt.default) if isinstance(opt.default, tuple) else opt.default
        if opt.name == "root":
            default = "${paths.data}/" + DATA_FOLDERS[name]
        fields.append((opt.name, FIELD_TYPES.get(opt.annotation, Optional[str]),
                       field(default_factory=lambda d=default: d) if isinstance(default, list)
                       else field(default=default)))
    fields.append(("val_fraction", float, field(default=0.0)))
    return dataclasses.make_dataclass(f"{name.title().replace('_', '')}DatasetConf", fields)
