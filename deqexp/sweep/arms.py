"""Arms and pairs: which units are compared with which.

The **arm keys** are the result-changing config keys that define what is compared (``--by``;
by default every key that varies between the units except the pairing keys). The **pairing
keys** say which units are the same experiment in two arms (``--pair``; by default every other
key that varies, which is the seed in a plain sweep): units that agree on them are a pair.
"""
from __future__ import annotations

from collections import defaultdict

from .collect import Unit

PAIR_DEFAULT = "trainer.seed"
_ABSENT = "<absent>"
# keys that say what data or task a run is: runs that differ in them are never arms by default
DATA_PREFIXES = ("dataset.", "task")


class CompareError(ValueError):
    """Input that ``deqexp compare`` cannot compare; the message names the problem and the fix."""


def value_of(unit: Unit, key: str):
    return unit.config.get(key, _ABSENT)


def varying_keys(units: list[Unit]) -> list[str]:
    """The config keys whose value is not the same in every unit (sorted)."""
    keys = sorted(set().union(*(u.config for u in units)))
    return [k for k in keys if len({repr(value_of(u, k)) for u in units}) > 1]


def _show(v) -> str:
    return "null" if v is None else str(v)


def _values(units, key) -> str:
    return ", ".join(sorted({_show(value_of(u, key)) for u in units}))


def choose_keys(units: list[Unit], by: list[str] | None,
                pair: list[str] | None) -> tuple[list[str], list[str]]:
    """``(arm keys, pairing keys)``; refuses keys no run has or that do not vary, mixed data
    sets or tasks, and pairs that are not unique."""
    known = set().union(*(u.config for u in units))
    varying = varying_keys(units)
    for key in [*(by or []), *(pair or [])]:
        if key not in known:
            raise CompareError(f"--by/--pair {key}: no run's config has this key; keys that vary "
                               f"between these runs: {', '.join(varying) or 'none'}")
    for key in by or []:
        if key not in varying:
            raise CompareError(f"--by {key} does not vary: every run has {key}={_values(units, key)}; "
                               f"keys that vary: {', '.join(varying) or 'none'}")
    mixed = [k for k in varying if k.startswith(DATA_PREFIXES) and k not in (by or [])
             and k not in (pair or [])]
    if mixed:
        k = mixed[0]
        raise CompareError(f"runs of different datasets or tasks are mixed ({k}: {_values(units, k)}); "
                           f"compare them apart, or separate them with --by {k}")
    if by:
        arms = list(by)
        pairs = list(pair) if pair else [k for k in varying if k not in arms]
    else:
        pairs = list(pair) if pair else [k for k in varying if k == PAIR_DEFAULT]
        arms = [k for k in varying if k not in pairs]
    if not arms:
        raise CompareError("one arm only: no result-changing key varies between these runs except "
                           f"the pairing keys ({', '.join(pairs) or 'none'}); point at runs that differ")
    _check_unique(units, arms, pairs, varying)
    return arms, pairs


def _check_unique(units, arms, pairs, varying) -> None:
    groups = defaultdict(list)
    for u in units:
        groups[key_of(u, arms), key_of(u, pairs)].append(u)
    for group in groups.values():
        if len(group) > 1:
            extra = [k for k in varying_keys(group) if k not in arms and k not in pairs]
            why = (f"they differ in {', '.join(extra)}: add it to --by or --pair" if extra
                   else "they are copies of one configuration (remove one)")
            raise CompareError(f"{len(group)} runs fall in one arm and pair ({group[0].run} and "
                               f"{group[1].run}); {why}")


def key_of(unit: Unit, keys: list[str]) -> tuple:
    return tuple(repr(value_of(unit, k)) for k in keys)


def sort_key(unit: Unit, keys: list[str]) -> tuple:
    """Orders arms by their keys' values: numbers numerically, then the rest as text."""
    out = []
    for k in keys:
        v = value_of(unit, k)
        out.append((0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool)
                   else (1, 0.0, _show(v)))
    return tuple(out)


def label_keys(units: list[Unit], arms: list[str]) -> list[str]:
    """The fewest arm keys, in order, that still tell the arms apart (``init.scale`` is left
    out of the labels when ``init.name`` alone decides it)."""
    keys = list(arms)
    n = len({key_of(u, arms) for u in units})
    for k in reversed(arms):
        fewer = [x for x in keys if x != k]
        if fewer and len({key_of(u, fewer) for u in units}) == n:
            keys = fewer
    return keys


def label(unit: Unit, keys: list[str]) -> str:
    """An arm's or pair's name: ``key=value`` for each key, or the value alone for one key."""
    if len(keys) == 1:
        return _show(value_of(unit, keys[0]))
    return ",".join(f"{k}={_show(value_of(unit, k))}" for k in keys)
