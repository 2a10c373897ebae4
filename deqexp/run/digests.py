"""Content hashes of the data files a run reads, part of its identity (issue 16).

A run keyed by ``dataset.path=my.npz`` alone would be "already complete" after ``my.npz`` was
regenerated; with the files' hashes in its fingerprint, a changed file makes it another
configuration, and the run folder's ``DATA_FILES`` (the hashes it was made with) lets the
refusal say which file changed. Hashes are cached by path, size and modification time under
``$XDG_CACHE_HOME/deqexp`` (default ``~/.cache/deqexp``), so a rerun reads no file again.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

DATA_KEYS = ("path", "root")   # dataset keys that name files or folders to read
CHUNK = 1 << 20


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
        for block in iter(lambda: fh.read(CHUNK), b""):
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
