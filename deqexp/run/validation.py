"""Checks of a composed config that types alone cannot make: unknown keys (with a
suggestion), value ranges, choices, combinations that would silently do nothing, and whatever
the library itself would reject (kernel, family, solver settings), each raised as a
:class:`ConfigError` that names the key and the fix, before anything runs."""
from __future__ import annotations

import dataclasses
import difflib

from omegaconf import OmegaConf

from ..deq.inits import INITS
from ..deq.settings import LINEAR_ONLY
from ..theory.families import FAMILIES, get_family
from ..theory.kernels import build_kernel
from .schemas import TASKS, ConfigError


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


def _unknown_key(path: str, allowed: list[str], extra: str = "") -> ConfigError:
    near = difflib.get_close_matches(path.rsplit(".", 1)[-1], allowed, n=1)
    hint = f"; did you mean '{near[0]}'?" if near else f"; valid keys: {', '.join(allowed)}"
    return ConfigError(f"unknown key '{path}' (not in the schema, so it would be ignored){hint}{extra}")


def untyped_dataset_keys(node) -> None:
    """A data set option written without its schema line (e.g. a user's YAML from scratch) is
    not typed by Hydra: check its keys against the data set's schema here."""
    from ..data.signatures import registry
    from .schemas import dataset_schema

    if dataclasses.is_dataclass(OmegaConf.get_type(node)):
        return  # typed: Hydra and unknown_keys refuse unknown keys
    name = node.get("name")
    _choice("dataset.name", name, registry())
    allowed = sorted(f.name for f in dataclasses.fields(dataset_schema(name)))
    for key in node.keys():
        if key not in allowed:
            raise _unknown_key(f"dataset.{key}", allowed,
                               f" (a data set option of your own: start from a copy of "
                               f"conf/dataset/{name}.yaml, whose schema line types its keys)")


def validate(cfg) -> None:
    """Check values that types alone cannot; raise :class:`ConfigError` naming the key."""
    for path, allowed in unknown_keys(cfg):
        raise _unknown_key(path, allowed)
    untyped_dataset_keys(cfg.dataset)
    _choice("task", cfg.task, TASKS)
    for key in ("forward", "backward"):
        try:
            OmegaConf.to_object(cfg.solver[key]).check(f"solver.{key}")
        except ValueError as err:
            raise ConfigError(str(err)) from None
    if cfg.solver.forward.name in LINEAR_ONLY:
        raise ConfigError(f"solver.forward.name={cfg.solver.forward.name} solves affine maps only, and "
                          f"the forward map is nonlinear; use it for the adjoint solve: "
                          f"solver.backward.name={cfg.solver.forward.name}")
    if cfg.solver.backward.gradient == "unrolled" and cfg.solver.forward.name != "forward" \
            and cfg.model.recurrence != "monotone":  # monotone: its own refusal (stabilisers)
        raise ConfigError("solver.backward.gradient=unrolled backpropagates through the forward solver's "
                          f"iterations, which solver.forward.name={cfg.solver.forward.name} computes in "
                          "place (not differentiable); use solver=forward, or "
                          "solver.backward.gradient=implicit")
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
    _positive("trainer.jac_samples", cfg.trainer.jac_samples, strict=False)
    _choice("family.name", cfg.family.name, FAMILIES)
    _choice("init.name", cfg.init.name, INITS)
    _choice("optim.name", cfg.optim.name, ("adam", "sgd"))
    _positive("optim.weight_decay", cfg.optim.weight_decay, strict=False)
    for name in cfg.trainer.ensemble.inits:
        _choice("trainer.ensemble.inits", name, INITS)
    for s in cfg.trainer.ensemble.scales:
        _positive("trainer.ensemble.scales", s)
    if cfg.init.lam is not None and len(cfg.trainer.ensemble.scales) > 0:
        raise ConfigError(f"init.lam={cfg.init.lam} gives every member the same lambda, so the sweep "
                          f"trainer.ensemble.scales={list(cfg.trainer.ensemble.scales)} would do "
                          "nothing; set one of them")
    for key, v in (("init.naive_lengthscale", cfg.init.naive_lengthscale),
                   ("init.random_divisor", cfg.init.random_divisor), ("model.width", cfg.model.width)):
        _positive(key, v)
    _positive("trainer.freeze_wu_epochs", cfg.trainer.freeze_wu_epochs, strict=False)
    _positive("trainer.checkpoint_every", cfg.trainer.checkpoint_every, strict=False)
    for key in ("n_train", "n_test"):  # 0 takes every sample of a file-backed data set
        if isinstance(cfg.dataset.get(key), int) and not isinstance(cfg.dataset.get(key), bool):
            _positive(f"dataset.{key}", cfg.dataset[key], strict=False)
    frac = cfg.dataset.get("val_fraction", 0.0)
    if not 0 <= frac < 1:
        raise ConfigError(f"dataset.val_fraction={frac} is not valid; it is the share of the training "
                          "split held out for validation: 0 (none) <= it < 1, e.g. 0.2")
    if not 0 <= cfg.init.lengthscale_low <= cfg.init.lengthscale_high:
        raise ConfigError(f"init.lengthscale_low={cfg.init.lengthscale_low} and init.lengthscale_high="
                          f"{cfg.init.lengthscale_high} must satisfy 0 <= low <= high")
    if cfg.model.kernel_size < 1 or cfg.model.kernel_size % 2 != 1:
        raise ConfigError(f"model.kernel_size={cfg.model.kernel_size} is not valid; it must be odd "
                          "(a centred window), e.g. 3 or 5")
    _library_check("kernel", lambda: build_kernel(**OmegaConf.to_container(cfg.kernel)))
    _library_check("family", lambda: get_family(cfg.family.name, cfg.family.trials, cfg.family.classes))
    _choice("init.construction", cfg.init.construction, ("pd", "paper"))
    _choice("init.lengthscale_rng", cfg.init.lengthscale_rng, ("torch", "numpy"))
    _positive("optim.anneal_extra_epochs", cfg.optim.anneal_extra_epochs, strict=False)
    if cfg.model.tie_readout and cfg.model.kind != "conv":
        raise ConfigError("model.tie_readout=true is for model=conv (its readout filters have the "
                          "layer's shape); a dense readout V (outputs x width) cannot be W")
    if cfg.model.tie_readout and cfg.init.freeze_q:
        raise ConfigError("init.freeze_q=true fixes Q at 0, but model.tie_readout=true makes Q the "
                          "input filters U; set one of them to false")
    stabilisers(cfg)
    authors_rng(cfg)
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


def authors_rng(cfg) -> None:
    """``trainer.rng=authors`` replays the draws of the authors' scripts (E1: dense, full batch;
    E2/E3: conv with the tied readout); refuse what those scripts never ran."""
    _choice("trainer.rng", cfg.trainer.rng, ("deqexp", "authors"))
    if cfg.trainer.rng != "authors":
        return
    from .build import members_from_config  # the members' own scales, not a second rule for them

    members = members_from_config(cfg)
    inits = {m.spec.name for m in members}
    random_scales = [m.spec.scale is not None for m in members if m.spec.name == "random"]
    scaled = all(random_scales) if random_scales else None
    why = None
    if cfg.model.kind == "conv":
        if not cfg.model.tie_readout:
            why = "their E2/E3 model's readout is the layer: set model.tie_readout=true"
        elif "naive" in inits:
            why = "their E2/E3 scripts have no naive init: drop it from the inits"
        elif scaled is False:
            why = ("their conv random init is N(0, (s/19)^2) at a sweep scale s: set "
                   "trainer.ensemble.scales (or init.scale)")
        elif "kglm" in inits and cfg.init.lengthscale_rng != "numpy":
            why = "their length-scales are numpy's draws: set init.lengthscale_rng=numpy"
    elif cfg.dataset.name not in ("smooth", "arrays"):
        why = f"their dense script (E1) regresses sequences, not dataset={cfg.dataset.name}"
    elif cfg.trainer.batch_size:
        why = "their E1 loop trains on the full batch: set trainer.batch_size=0"
    elif cfg.model.recurrence != "free" or cfg.model.width is not None:
        why = "their E1 layer is a free W as wide as the input: leave model.recurrence and model.width"
    elif scaled:
        why = "their E1 random init is the layer's default, without a scale: leave the scales unset"
    elif not inits & {"naive", "random"}:
        raise ConfigError("trainer.rng=authors would change nothing here: the kglm init draws "
                          "nothing and the full batch has no order; remove it")
    if why:
        raise ConfigError(f"trainer.rng=authors has no authors' stream here: {why}, or use "
                          "trainer.rng=deqexp")


RECURRENCES = ("free", "spectral", "monotone")


def stabilisers(cfg) -> None:
    """The stability options: model.recurrence (spectral, monotone) and trainer.jac_reg."""
    from ..deq.monotone import Monotone

    rec = cfg.model.recurrence
    _choice("model.recurrence", rec, RECURRENCES)
    _positive("model.spectral.target", cfg.model.spectral.target)
    _positive("model.monotone.margin", cfg.model.monotone.margin)
    _positive("trainer.jac_reg.weight", cfg.trainer.jac_reg.weight, strict=False)
    _positive("trainer.jac_reg.every", cfg.trainer.jac_reg.every)
    if rec != "free" and cfg.model.kind != "dense":
        raise ConfigError(f"model.recurrence={rec} parametrises a dense W; model=conv has filters "
                          "(use trainer.jac_reg for a conv DEQ, or model=dense)")
    if rec == "monotone":
        _library_check("family", lambda: Monotone(cfg.model.monotone.margin)
                       .check_family(get_family(cfg.family.name, cfg.family.trials, cfg.family.classes)))
        if cfg.solver.backward.gradient == "unrolled":
            raise ConfigError("model.recurrence=monotone solves by Peaceman-Rachford splitting, which "
                              "solver.backward.gradient=unrolled would not differentiate; use implicit "
                              "(with solver.backward.name=gmres: it needs no contraction) or onestep")


def check_sweep_axes(cfg, overrides: list[str]) -> None:
    """Refuse an ``init=`` override that the ensemble would ignore: with
    ``trainer.ensemble.inits`` set (as the paper presets do), every job trains those inits, so
    ``-m init=kglm,random`` would train the same members twice."""
    chosen = [o.split("=", 1)[1] for o in overrides if o.lstrip("+").split("=", 1)[0] == "init"]
    inits = list(cfg.trainer.ensemble.inits)
    if not chosen or not inits:
        return
    listed = ",".join(inits)
    raise ConfigError(
        f"init={chosen[0]} would be ignored: trainer.ensemble.inits=[{listed}] (set by the preset) "
        f"trains those inits in every job. To run one init per job, add trainer.ensemble.inits=[] "
        f"(then init=... decides); to choose the ensemble's inits, set "
        f"trainer.ensemble.inits=[{chosen[0]}] instead of init=...")
