"""Run identity: what makes two runs the same run. Every reader imports it from here.

A run is identified by its **fingerprint**: a hash of the resolved config without the keys that
do not change results (:data:`NON_RESULT_KEYS`), without options added after results were made
while they hold their "off" value (:data:`ADDED_OPTIONS`), and with the content hashes of the
data files it reads (:func:`data_digests`; every dataset key that names a file or folder,
``path`` and ``root``). Its **folder name** comes from the result-changing overrides
(:func:`folder_name`). A folder's **state** against a fingerprint (:func:`folder_state`) is what
``deqexp train`` acts on (skip, refuse, run) and what ``deqexp status``, ``deqexp report`` and
``deqexp compare`` show, so that they never disagree. A job's fingerprint as it would run now
(its overrides composed afresh) is :func:`deqexp.run.config.job_fingerprints`.

Data hashes are cached by path, size and modification time under ``$XDG_CACHE_HOME/deqexp``
(default ``~/.cache/deqexp``), so a rerun reads no file again.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .schemas import JacRegConf, MonotoneConf, SpectralConf

# keys (and key prefixes) that do not change a run's results: left out of its fingerprint and
# of its folder name
NON_RESULT_KEYS = ("force", "name", "launcher", "logger", "trainer.device", "trainer.threads",
                   "trainer.member_chunk", "trainer.checkpoint_every", "paths.output", "hydra",
                   "solver.forward.on_failure", "solver.backward.on_failure", "search")

# options added after results were made, with the value that means "off" (the schemas'
# defaults): left out of the fingerprint while they hold it, so that a new option never
# invalidates the runs that do not use it
ADDED_OPTIONS: dict[str, Any] = {"model.recurrence": "free",
                                 "model.spectral": dataclasses.asdict(SpectralConf()),
                                 "model.monotone": dataclasses.asdict(MonotoneConf()),
                                 "trainer.jac_reg": dataclasses.asdict(JacRegConf()),
                                 "dataset.val_fraction": 0.0, "dataset.noise_pairing": "sample",
                                 "trainer.rng": "deqexp"}

DATA_KEYS = ("path", "root")   # dataset keys that name files or folders to read
MARKER = "COMPLETE"            # written last, holding the fingerprint of the finished run
OWNER = "FINGERPRINT"          # the fingerprint of the configuration whose results a folder holds
RESULT_FILES = (MARKER, "metrics.csv", "summary.json")
_CHUNK = 1 << 20


def is_result_key(key: str) -> bool:
    """Whether a dotted config key can change a run's results (and so its identity)."""
    key = key.lstrip("+~")
    return not any(key == k or key.startswith(k + ".") for k in NON_RESULT_KEYS)


# --------------------------------------------------------------------------- fingerprint
def fingerprint(cfg, digests: dict[str, str] | None = None) -> str:
    """Hash of the resolved config without the keys that do not change results, and of the
    contents of the data files it reads (``digests``; computed when None)."""
    from omegaconf import OmegaConf

    c = copy.deepcopy(cfg) if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    digests = data_digests(c.get("dataset", {})) if digests is None else digests
    if digests:  # generated data: the fingerprint stays what it was before files were hashed
        c["data_files"] = digests
    for key in [*NON_RESULT_KEYS, *ADDED_OPTIONS]:
        *parents, last = key.split(".")
        node = c
        for p in parents:
            node = node.get(p, {})
        if key in NON_RESULT_KEYS or node.get(last) == ADDED_OPTIONS[key]:
            node.pop(last, None)
    return hashlib.sha256(repr(sorted(c.items())).encode()).hexdigest()[:16]


def resolve_data_paths(cfg) -> dict[str, str]:
    """Make the data set's relative (or ``~``) path/root keys absolute, from the working
    directory, in ``cfg`` itself: the run's config.yaml then reads the same data from anywhere
    (``deqexp eval``, a SLURM node), and the identity does not depend on how a path was
    written. Return the keys as given, for the record."""
    given = {}
    dataset = cfg.get("dataset") or {}
    for key in DATA_KEYS:
        value = dataset.get(key)
        if value and not Path(str(value)).is_absolute():
            given[f"dataset.{key}"] = str(value)
            dataset[key] = str(Path(str(value)).expanduser().resolve())
    return given


def identify(cfg) -> tuple[str, dict[str, str]]:
    """``(fingerprint, data digests)`` of a resolved job config whose data paths
    :func:`resolve_data_paths` has made absolute."""
    digests = data_digests(cfg.dataset)
    return fingerprint(cfg, digests), digests


# --------------------------------------------------------------------------- folder names
def folder_name(overrides) -> str:
    """Folder name of a run from its overrides that change results ('defaults' when there are
    none), sorted; a long one is cut and given a hash of the whole, so that two configs never
    share a folder."""
    kept = sorted(str(o) for o in overrides if is_result_key(str(o).split("=", 1)[0]))
    name = ",".join(kept).replace("/", "_") if kept else "defaults"
    if len(name) > 200:
        name = name[:180] + "-" + hashlib.sha256(name.encode()).hexdigest()[:12]
    return name


# --------------------------------------------------------------------------- folder states
def owner(folder: Path) -> str | None:
    """The fingerprint of the configuration whose results ``folder`` holds, if any."""
    folder = Path(folder)
    path = folder / OWNER
    if not any((folder / n).exists() for n in RESULT_FILES) or not path.exists():
        return None
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _summary_readable(folder: Path) -> bool:
    try:
        return isinstance(json.loads((folder / "summary.json").read_text()), dict)
    except (OSError, ValueError):
        return False


def folder_state(folder: Path, fp: str) -> str:
    """What ``deqexp train`` does with ``folder`` for a run of fingerprint ``fp``:

    - ``complete``: a finished run of this configuration is there (skipped);
    - ``stale``: another configuration's results are there (refused without force=true);
    - ``open``: nothing finished of this configuration (it runs, resuming from a checkpoint
      of the same fingerprint if there is one).
    """
    folder = Path(folder)
    try:
        marker = (folder / MARKER).read_text().strip()
    except OSError:
        marker = None
    if marker == fp and _summary_readable(folder):
        return "complete"
    held = owner(folder)
    if held is not None and held != fp:
        return "stale"
    if marker is not None and marker != fp:
        return "stale"
    return "open"


# --------------------------------------------------------------------------- data digests
def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "deqexp" / "digests.json"


def _files(target: Path) -> list[Path]:
    if target.is_file():
        return [target]
    if target.is_dir():
        return sorted(p for p in target.rglob("*") if p.is_file() and not p.name.startswith("."))
    return []  # missing: the data set's own check names it


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()[:16]


def data_digests(dataset) -> dict[str, str]:
    """``{file: sha256 prefix}`` for every file under the data set's path/root keys (empty
    for generated or packaged data)."""
    targets = [Path(str(dataset[k])) for k in DATA_KEYS if k in dataset and dataset[k]]
    files = [f.resolve() for t in targets for f in _files(t)]
    if not files:
        return {}
    cache_path = _cache_file()
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    out, fresh = {}, False
    for f in files:
        st = f.stat()
        key = f"{f}|{st.st_size}|{st.st_mtime_ns}"
        if key not in cache:
            cache[key], fresh = _sha256(f), True
        out[str(f)] = cache[key]
    if fresh:
        _save(cache_path, cache)
    return out


def _save(path: Path, cache: dict) -> None:
    """Best effort: an unwritable cache only costs the hashing again next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, path)
    except OSError:
        pass


def changed_files(before: dict[str, str], now: dict[str, str]) -> list[str]:
    """The files whose content differs, or that appeared or went, between two digests."""
    return sorted(f for f in set(before) | set(now) if before.get(f) != now.get(f))
