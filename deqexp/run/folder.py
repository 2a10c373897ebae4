"""A run's folder: its owner (fingerprint), its lock and its completion protocol.

Files are written so that a crash never leaves a result that looks complete:
``summary.json`` is written atomically and the ``COMPLETE`` marker last. A folder belongs to
one configuration (its fingerprint, in ``FINGERPRINT``): a different configuration that lands
in the same folder is refused, never allowed to delete the results there (the rule is
:func:`deqexp.run.identity.folder_state`). A running job holds an exclusive lock on ``.lock``
(released by the kernel when the process dies, so a killed run never leaves it stale); a second
run of the same configuration is refused while it is held.
"""
from __future__ import annotations

import csv
import fcntl
import json
import math
import os
import socket
from pathlib import Path

from .identity import MARKER, OWNER, RESULT_FILES, changed_files, folder_state, owner

FAILED = "FAILED"    # why the last attempt stopped with an error (deqexp status reads it)
CHECKPOINT = "checkpoint.pt"  # the last checkpoint (deqexp.run.checkpoints writes and reads it)
MODEL = "model.pt"            # the final and best parameters of a finished run
DATA_FILES = "DATA_FILES"  # content hashes of the data files the results were made from


class FolderBusy(RuntimeError):
    """The run folder is in use by another process, or holds another configuration's results."""


class MetricsLost(RuntimeError):
    """metrics.csv is missing or ends before the checkpoint: resuming would lose those epochs."""


def atomic_replace(path: Path, write) -> None:
    """Create ``path`` by ``write(tmp)`` on a temporary file and a rename: never half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:  # a full disk, a kill: no half-written temporary left behind
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_replace(path, lambda tmp: tmp.write_text(text))


class RunFolder:
    """A run's output folder, its owner (fingerprint), its lock and its completion protocol."""

    def __init__(self, path: Path | str, fingerprint: str, data_files: dict[str, str] | None = None):
        self.path, self.fingerprint, self.data_files = Path(path), fingerprint, data_files or {}
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = None

    @property
    def marker(self) -> Path:
        return self.path / MARKER

    def summary(self) -> dict | None:
        """The finished run's summary.json, or None if it is missing or unreadable."""
        try:
            return json.loads((self.path / "summary.json").read_text())
        except (OSError, ValueError):
            return None

    def is_complete(self) -> bool:
        """A completed run of the same resolved config is here (marker and summary both)."""
        return folder_state(self.path, self.fingerprint) == "complete"

    def owner(self) -> str | None:
        """The fingerprint of the configuration whose results this folder holds, if any."""
        return owner(self.path)

    def acquire(self) -> None:
        """Take the folder's lock, or raise :class:`FolderBusy` if another run holds it."""
        fh = open(self.path / ".lock", "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise FolderBusy(f"a run of this configuration is already in progress in {self.path} "
                             f"(pid {holder}); wait for it to finish, or stop it") from None
        fh.truncate(0)
        fh.write(f"{os.getpid()} on {socket.gethostname()}")
        fh.flush()
        self._lock = fh

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing drops the flock
            self._lock = None

    def start(self, force: bool = False, config_text: str | None = None,
              resume_epoch: int | None = None, evaluated: int | None = None) -> None:
        """Claim the folder for this configuration: refuse another configuration's results
        (unless ``force``), then forget an earlier result of this one, or, when resuming from
        a checkpoint at ``resume_epoch``, cut metrics.csv back to it (refused where the file
        should reach the evaluated epoch ``evaluated`` and does not)."""
        if folder_state(self.path, self.fingerprint) == "stale" and not force:
            changed = self._changed_data()
            what = (f"were made from other contents of {', '.join(changed)} (the file changed since)"
                    if changed else f"are a different configuration's (fingerprint {self.owner()}, this one "
                    f"{self.fingerprint})")
            raise FolderBusy(f"the results in {self.path} {what}; nothing was changed. Replace them "
                             "with force=true, or give this run its own folder with name=...")
        if resume_epoch is not None:
            self._cut_metrics(resume_epoch, evaluated)
        for name in (*RESULT_FILES, FAILED):
            if resume_epoch is None or name != "metrics.csv":
                (self.path / name).unlink(missing_ok=True)
        atomic_write(self.path / OWNER, self.fingerprint + "\n")
        atomic_write(self.path / DATA_FILES, json.dumps(self.data_files, indent=1) + "\n")
        if config_text is not None:
            atomic_write(self.path / "config.yaml", config_text)

    def _changed_data(self) -> list[str]:
        """The data files whose contents differ from those the folder's results were made from."""
        try:
            before = json.loads((self.path / DATA_FILES).read_text())
        except (OSError, ValueError):
            return []
        return changed_files(before, self.data_files)

    def _cut_metrics(self, epoch: int, evaluated: int | None = None) -> None:
        """Keep metrics.csv's rows up to ``epoch`` (a resumed run rewrites the later ones);
        refuse a file that is missing or ends before ``evaluated`` (None: not required)."""
        path = self.path / "metrics.csv"
        rows = []
        if path.exists():
            with open(path, newline="") as fh:
                rows = list(csv.reader(fh))
        col = rows[0].index("epoch") if rows and "epoch" in rows[0] else None
        kept = [rows[0]] + [r for r in rows[1:] if len(r) == len(rows[0]) and r[col].isdigit()
                            and int(r[col]) <= epoch] if col is not None else []
        last = max((int(r[col]) for r in kept[1:]), default=None)
        if evaluated is not None and (last is None or last < evaluated):
            held = "is missing" if not path.exists() else \
                "holds no epochs" if last is None else f"ends at epoch {last}"
            raise MetricsLost(f"{path} {held} but the checkpoint beside it is at epoch {epoch}: resuming "
                              "would lose the epochs in between; restore the file, or start afresh with "
                              "force=true")
        if not kept:
            return

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as fh:
                csv.writer(fh).writerows(kept)

        atomic_replace(path, write)

    def failed(self, why: str) -> None:
        """Record why this attempt ended with an error (a later start removes it)."""
        atomic_write(self.path / FAILED, why.strip() + "\n")

    def finish(self, summary: dict) -> None:
        text = json.dumps(strict_json(summary), indent=2, allow_nan=False)
        atomic_write(self.path / "summary.json", text)
        atomic_write(self.marker, self.fingerprint + "\n")


def strict_json(value):
    """``value`` with NaN/inf floats as None (null): summary.json stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def lock_held(folder: Path) -> bool:
    """Whether a running job holds ``folder``'s lock (a killed one never does: the kernel drops it)."""
    path = Path(folder) / ".lock"
    if not path.exists():
        return False
    with open(path) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False
