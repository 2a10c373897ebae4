"""When each config key has an effect: a setting that would change nothing is refused.

Every key of every schema is declared here, either as always effective or with the condition
under which it acts (its switch, its solver, its model kind, its family, its init, its task).
:func:`check_effects` refuses a key given on the command line (or in a user's preset) whose
condition does not hold, naming the key and the switch it needs; a test fails when a schema
gains a key that declares nothing.
"""
from __future__ import annotations

from typing import Callable

from .schemas import ConfigError

Condition = Callable[[object], bool]


def _inits(cfg) -> set[str]:
    return set(cfg.trainer.ensemble.inits) or {cfg.init.name}


def _is(key: str, *values) -> tuple[str, Condition]:
    from omegaconf import OmegaConf

    return (f"{key}={'|'.join(map(str, values))}",
            lambda cfg: OmegaConf.select(cfg, key) in values)


def _init(*names) -> tuple[str, Condition]:
    return (f"init={'|'.join(names)} (or trainer.ensemble.inits with it)",
            lambda cfg: bool(_inits(cfg) & set(names)))


IMPLICIT = _is("solver.backward.gradient", "implicit")
CONV, DENSE = _is("model.kind", "conv"), _is("model.kind", "dense")
# key prefix -> (what it needs, the condition); the longest matching prefix decides
NEEDS: dict[str, tuple[str, Condition]] = {
    "model.spectral": _is("model.recurrence", "spectral"),
    "model.monotone": _is("model.recurrence", "monotone"),
    "model.kernel_size": CONV, "model.padding": CONV, "model.tie_readout": CONV,
    "model.norm_method": CONV, "model.width": DENSE,
    "trainer.jac_reg.every": ("trainer.jac_reg.weight > 0", lambda cfg: cfg.trainer.jac_reg.weight > 0),
    "trainer.freeze_wu_epochs": _init("naive"),
    "family.trials": _is("family.name", "binomial"),
    "family.classes": _is("family.name", "categorical"),
    "optim.eta_min": _is("optim.schedule", "cosine"),
    "optim.anneal_extra_epochs": _is("optim.schedule", "cosine"),
    "init.freeze_q": _init("random"),
    "init.random_divisor": _init("random"),
    "init.naive_lengthscale": _init("naive"),
    "init.construction": CONV, "init.coupling": CONV, "init.lengthscale_low": CONV,
    "init.lengthscale_high": CONV, "init.lengthscale_rng": CONV,
    "init.prior_mean": DENSE,
    "logger.wandb.mode": _is("logger.wandb.enabled", True),
    "logger.wandb.project": _is("logger.wandb.enabled", True),
    "logger.wandb.entity": _is("logger.wandb.enabled", True),
    "timing": _is("task", "init_timing"),
    **{f"solver.backward.{k}": IMPLICIT for k in ("name", "tol", "max_iter", "damping", "memory", "stop",
                                                  "residual_eps", "counting", "check_every",
                                                  "on_failure", "jacobian_at")},
}
# keys (prefixes) that act in every run: the rest of the schemas
ALWAYS = ("dataset", "family.name", "kernel", "solver.forward", "solver.backward.gradient", "init.name",
          "init.scale", "init.lam", "model.kind", "model.readout", "model.recurrence", "optim.name",
          "optim.lr", "optim.weight_decay", "optim.schedule", "trainer", "logger", "paths", "name",
          "task", "force", "search")


def declared(key: str) -> str | None:
    """The prefix that declares ``key`` (in :data:`NEEDS` or :data:`ALWAYS`), or None."""
    hits = [p for p in [*NEEDS, *ALWAYS] if key == p or key.startswith(p + ".") or key.startswith(p + "[")]
    return max(hits, key=len) if hits else None


def check_effects(cfg, overrides: list[str]) -> None:
    """Refuse each ``key=value`` override whose key would change nothing in this config."""
    for o in overrides:
        key = o.lstrip("+~").split("=", 1)[0]
        prefix = declared(key)
        if prefix in NEEDS:
            need, holds = NEEDS[prefix]
            if not holds(cfg):
                raise ConfigError(f"{key} has no effect in this run: it needs {need}; set that, or "
                                  f"remove {key}")
