"""The Optuna sweeper's search space, written as Hydra users know it.

- ``key=interval(a, b)`` (``tag(log, interval(a, b))`` for a log scale): a float, or an int when
  both ends are ints;
- ``key=range(start, stop[, step])``: an int (or float) on a grid;
- ``key=choice(a, b, c)``: a categorical;
- ``key=a,b,c`` (the plain sweep form): a fixed **grid axis** across trials: every trial runs
  once per value (e.g. ``trainer.seed=0,1,2``) and is scored by the mean over them;
- ``key=value``: fixed.

Each key is checked against the composed config before any trial starts.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

OBJECTIVES = ("best_val_loss", "test_loss_at_best_val", "final_test_loss", "best_test_loss",
              "initial_test_loss")


class SearchError(ValueError):
    """A search space, objective or storage that cannot be used; the message names the key."""


@dataclass
class Space:
    """Distributions to sample, grid axes to cross with every trial, and fixed overrides."""

    distributions: dict = field(default_factory=dict)   # key -> optuna distribution
    grid: dict = field(default_factory=dict)            # key -> list of values (as override strings)
    fixed: list = field(default_factory=list)           # "key=value" overrides

    def cells(self, without: tuple = ()) -> list[list[str]]:
        """Every combination of the grid axes (``without`` some), as overrides."""
        axes = [[f"{k}={v}" for v in vals] for k, vals in self.grid.items() if k not in without]
        return [list(c) for c in itertools.product(*axes)]

    def describe(self) -> str:
        """A canonical text of the space (stored with the study: a resumed study must match)."""
        dists = {k: repr(v) for k, v in sorted(self.distributions.items())}
        return repr((dists, sorted((k, list(v)) for k, v in self.grid.items()), sorted(self.fixed)))


def params_overrides(params: dict) -> list[str]:
    """A trial's parameters as overrides (floats in full, so the run folder names the value)."""
    return [f"{k}={repr(v) if isinstance(v, float) else v}" for k, v in params.items()]


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _distribution(key: str, sweep):
    import optuna.distributions as d
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    log = "log" in sweep.tags
    if isinstance(sweep, ChoiceSweep):
        if not sweep.list:
            raise SearchError(f"hydra.sweeper.params.{key}: choice() is empty; give at least one value")
        return d.CategoricalDistribution([str(v) if not _is_number(v) else v for v in sweep.list])
    if isinstance(sweep, IntervalSweep):
        lo, hi = sweep.start, sweep.end
        if not lo < hi:
            raise SearchError(f"hydra.sweeper.params.{key}: interval({lo}, {hi}) needs low < high")
        if log and lo <= 0:
            raise SearchError(f"hydra.sweeper.params.{key}: a log interval needs low > 0, got {lo}")
        if isinstance(lo, int) and isinstance(hi, int):
            return d.IntDistribution(lo, hi, log=log)
        return d.FloatDistribution(float(lo), float(hi), log=log)
    if isinstance(sweep, RangeSweep):
        lo, hi, step = sweep.start, sweep.stop, sweep.step
        if not lo < hi or step <= 0:
            raise SearchError(f"hydra.sweeper.params.{key}: range({lo}, {hi}, {step}) is empty")
        if all(isinstance(v, int) for v in (lo, hi, step)):
            return d.IntDistribution(lo, hi - 1, step=step, log=log)
        return d.FloatDistribution(float(lo), float(hi), step=float(step), log=log)
    raise SearchError(f"hydra.sweeper.params.{key}: {sweep} is not interval, range or choice")


def parse(params: dict, arguments: list[str]) -> Space:
    """The space from ``hydra.sweeper.params`` and the command line (which wins)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep
    from hydra.errors import OverrideParseException

    given = [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments)
    try:
        parsed = OverridesParser.create().parse_overrides(given)
    except OverrideParseException as err:
        raise SearchError(f"the search space does not parse: {str(err).splitlines()[0]}") from None
    space, seen = Space(), {}
    for o in parsed:
        key = o.get_key_element()
        seen[key] = o
    for key, o in seen.items():
        space.distributions.pop(key, None)
        space.grid.pop(key, None)
        if not o.is_sweep_override():
            space.fixed.append(f"{key}={o.get_value_element_as_str()}")
        elif isinstance(o.value(), ChoiceSweep) and o.value().simple_form:
            space.grid[key] = list(o.sweep_string_iterator())
        else:
            space.distributions[key] = _distribution(key, o.value())
    return space


def check_against(space: Space, cfg) -> None:
    """Refuse keys the config does not have, and numeric distributions over non-numeric keys."""
    import optuna.distributions as d
    from omegaconf import OmegaConf

    for key in [*space.distributions, *space.grid]:
        plain = key.lstrip("+~")
        if "/" in plain or (plain in cfg and OmegaConf.is_config(cfg[plain])):
            continue  # a config group (init=..., dataset=...): Hydra checks the option names
        value = OmegaConf.select(cfg, plain, default="<missing>")
        if value == "<missing>":
            raise SearchError(f"hydra.sweeper.params.{key}: the config has no key {plain} "
                              "(deqexp train --cfg job shows them)")
        dist = space.distributions.get(key)
        if isinstance(dist, (d.FloatDistribution, d.IntDistribution)) and value is not None \
                and not _is_number(value):
            raise SearchError(f"hydra.sweeper.params.{key}: interval/range needs a numeric key, but "
                              f"{plain} is {value!r}; use choice(...)")
