"""The runs under some folders, as units to compare: one unit per ensemble member of each run.

A run folder is any folder with a ``FINGERPRINT`` or ``COMPLETE`` file. Its state comes from
:func:`deqexp.run.identity.folder_state` against the fingerprint it claims: ``complete`` runs
are counted; ``stale`` ones (a ``COMPLETE`` of another configuration than its ``FINGERPRINT``),
``running``, ``failed`` and ``incomplete`` ones are listed apart, never silently dropped.

A unit's config is the run's resolved ``config.yaml``, flattened to dotted keys, keeping only
the keys that change results (:func:`deqexp.run.identity.is_result_key`), with the member's own
init, seed and scale written in: an ensemble member (inits x scales x seeds in one job) is a
unit exactly like a separate run of that init, seed and scale.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ..run.folder import lock_held
from ..run.identity import MARKER, OWNER, folder_state, is_result_key

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader: 1,000 configs in a second
ENSEMBLE = "trainer.ensemble."


@dataclass
class Unit:
    """One trained member: where it came from, its result-changing config and its curve."""

    run: Path
    member: int
    config: dict
    curve: pd.DataFrame          # this member's metrics.csv rows, by epoch
    diverged: bool


@dataclass
class Found:
    """What :func:`collect` found: the units of completed runs, and the runs left out."""

    units: list[Unit] = field(default_factory=list)
    left_out: list[tuple[Path, str]] = field(default_factory=list)  # (run folder, state)


def run_folders(paths: list[Path]) -> list[Path]:
    """Every run folder at or under ``paths`` (sorted, each once)."""
    out = set()
    for p in paths:
        if (p / OWNER).exists() or (p / MARKER).exists():
            out.add(p.resolve())
        for name in (OWNER, MARKER):
            out |= {f.parent.resolve() for f in p.rglob(name)}
    return sorted(out)


def flatten(node, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists become tuples (hashable)."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tuple(node) if isinstance(node, list) else node}


def run_state(folder: Path) -> str:
    """complete, stale, running, failed or incomplete."""
    try:
        claimed = (folder / OWNER).read_text().strip()
    except OSError:
        claimed = ""
    state = folder_state(folder, claimed)
    if state == "complete":
        return "complete"
    if (folder / MARKER).exists():
        return "stale"
    if lock_held(folder):
        return "running"
    return "failed" if (folder / "FAILED").exists() else "incomplete"


def _member_config(base: dict, row: pd.Series) -> dict:
    """The run's config as a run of this member alone would have it."""
    cfg = {k: v for k, v in base.items() if not k.startswith(ENSEMBLE)}
    cfg["init.name"] = str(row["init"])
    cfg["trainer.seed"] = int(row["seed"])
    scale = row["scale"]
    cfg["init.scale"] = None if scale is None or (isinstance(scale, float) and math.isnan(scale)) \
        else float(scale)
    return cfg


def units_of(folder: Path) -> list[Unit]:
    """The units of one completed run folder."""
    with open(folder / "config.yaml") as fh:
        raw = yaml.load(fh, Loader=_LOADER) or {}
    base = {k: v for k, v in flatten(raw).items() if is_result_key(k)}
    metrics = pd.read_csv(folder / "metrics.csv")
    out = []
    for member, curve in metrics.groupby("member", sort=True):
        curve = curve.sort_values("epoch").reset_index(drop=True)
        last = curve.iloc[-1]
        diverged = last["status"] != "ok" or not np.isfinite(last["test_loss"])
        out.append(Unit(folder, int(member), _member_config(base, last), curve, bool(diverged)))
    return out


def collect(paths: list[Path]) -> Found:
    """The units of every completed run under ``paths``, and the runs left out with their state."""
    found = Found()
    for folder in run_folders(paths):
        state = run_state(folder)
        if state != "complete":
            found.left_out.append((folder, state))
            continue
        try:
            found.units += units_of(folder)
        except (OSError, ValueError, KeyError, yaml.YAMLError):
            found.left_out.append((folder, "damaged (config.yaml or metrics.csv unreadable)"))
    return found
