"""Where a run's results go: its folder (CSV, summary, completion marker), W&B, progress.

Files are written so that a crash never leaves a result that looks complete:
``summary.json`` is written atomically and the ``COMPLETE`` marker last. A folder belongs to
one configuration (its fingerprint, in ``FINGERPRINT``): a different configuration that lands
in the same folder is refused, never allowed to delete the results there. A running job holds
an exclusive lock on ``.lock`` (released by the kernel when the process dies, so a killed run
never leaves it stale); a second run of the same configuration is refused while it is held.
"""
from __future__ import annotations

import csv
import fcntl
import json
import math
import os
import shutil
import socket
import sys
from pathlib import Path

from ..deq.solvers import OUTCOMES

# samples per solver outcome: the evaluation's forward solves on the test split, and the
# epoch's adjoint solves (every training batch's); deqexp.deq.solvers.OUTCOMES
OUTCOME_COLUMNS = [f"{solve}_n_{o}" for solve in ("fwd", "bwd") for o in OUTCOMES]
METRIC_COLUMNS = [
    "member", "seed", "init", "scale", "epoch", "train_loss", "test_loss", "fwd_iters_mean",
    "fwd_iters_max", "fwd_residual", "converged_frac", "bwd_iters_mean", "bwd_residual",
    "bwd_converged_frac", "op_norm_W", "op_norm_U", "jac_norm", *OUTCOME_COLUMNS,
    "epoch_time_s", "status",
]
MARKER = "COMPLETE"
FAILED = "FAILED"    # why the last attempt stopped with an error (deqexp status reads it)
DATA_FILES = "DATA_FILES"  # content hashes of the data files the results were made from
RESULT_FILES = (MARKER, "metrics.csv", "summary.json")


class FolderBusy(RuntimeError):
    """The run folder is in use by another process, or holds another configuration's results."""


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
        return (self.marker.exists() and self.marker.read_text().strip() == self.fingerprint
                and self.summary() is not None)

    def owner(self) -> str | None:
        """The fingerprint of the configuration whose results this folder holds, if any."""
        path = self.path / "FINGERPRINT"
        if not any((self.path / n).exists() for n in RESULT_FILES) or not path.exists():
            return None
        return path.read_text().strip()

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
              resume_epoch: int | None = None) -> None:
        """Claim the folder for this configuration: refuse another configuration's results
        (unless ``force``), then forget an earlier result of this one, or, when resuming from
        a checkpoint at ``resume_epoch``, cut metrics.csv back to it."""
        owner = self.owner()
        if owner is not None and owner != self.fingerprint and not force:
            changed = self._changed_data()
            what = (f"were made from other contents of {', '.join(changed)} (the file changed since)"
                    if changed else f"are a different configuration's (fingerprint {owner}, this one "
                    f"{self.fingerprint})")
            raise FolderBusy(f"the results in {self.path} {what}; nothing was changed. Replace them "
                             "with force=true, or give this run its own folder with name=...")
        if resume_epoch is not None:
            self._cut_metrics(resume_epoch)
        for name in (*RESULT_FILES, FAILED):
            if resume_epoch is None or name != "metrics.csv":
                (self.path / name).unlink(missing_ok=True)
        atomic_write(self.path / "FINGERPRINT", self.fingerprint + "\n")
        atomic_write(self.path / DATA_FILES, json.dumps(self.data_files, indent=1) + "\n")
        if config_text is not None:
            atomic_write(self.path / "config.yaml", config_text)

    def _changed_data(self) -> list[str]:
        """The data files whose contents differ from those the folder's results were made from."""
        from .digests import changed_files

        try:
            before = json.loads((self.path / DATA_FILES).read_text())
        except (OSError, ValueError):
            return []
        return changed_files(before, self.data_files)

    def _cut_metrics(self, epoch: int) -> None:
        """Keep metrics.csv's rows up to ``epoch`` (a resumed run rewrites the later ones)."""
        path = self.path / "metrics.csv"
        if not path.exists():
            return
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows:
            return
        col = rows[0].index("epoch")
        kept = [rows[0]] + [r for r in rows[1:] if len(r) == len(rows[0]) and int(r[col]) <= epoch]

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


class CsvLog:
    """A CSV of rows (``metrics.csv``: one per member and epoch), flushed after every write."""

    def __init__(self, path: Path, columns: list[str] = METRIC_COLUMNS, append: bool = False):
        resume = append and path.exists()
        self.fh = open(path, "a" if resume else "w", newline="")
        self.writer = csv.DictWriter(self.fh, fieldnames=columns, extrasaction="ignore")
        if not resume:
            self.writer.writeheader()

    def log(self, rows: list[dict]) -> None:
        self.writer.writerows(rows)
        self.fh.flush()

    def summarise(self, summary: dict) -> None:
        """Nothing to add: the summary goes to summary.json."""

    def close(self, failed: bool = False) -> None:
        self.fh.close()


def wandb_mode(configured: str | None) -> str:
    """An explicit ``logger.wandb.mode`` beats ``$WANDB_MODE``; the default is offline."""
    return configured or os.environ.get("WANDB_MODE") or "offline"


class WandbError(RuntimeError):
    """W&B cannot log as configured (online without a key or a network)."""


OFFLINE_HINT = ("to log locally instead, run with logger.wandb.mode=offline (the default) and "
                "upload later with `wandb sync`")


def _has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc

    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbLog:
    """The same per-epoch metrics as the CSV, in a W&B run inside the run's folder."""

    def __init__(self, run_dir: Path, cfg, config_dict: dict, run_name: str, members: int):
        import wandb

        mode = wandb_mode(cfg.mode)
        if mode == "online" and not _has_wandb_key():
            raise WandbError("logger.wandb.mode=online needs a W&B API key (`wandb login`, or set "
                             f"WANDB_API_KEY); {OFFLINE_HINT}")
        self.wandb, self.members, self.offline = wandb, members, mode == "offline"
        try:
            self.run = wandb.init(
                project=cfg.project, entity=cfg.entity, dir=str(run_dir), mode=mode,
                group=config_dict.get("name"), name=run_name, config=config_dict,
                reinit="finish_previous",
                # console="off": W&B's copy of the terminal would write into the run folder and, on
                # a full disk, print a logging error for every line
                settings=wandb.Settings(quiet=True, init_timeout=60, console="off"),
            )
        except Exception as err:  # wandb raises its own error types (CommError, UsageError, ...)
            why = f"{type(err).__name__}: {str(err).strip()[:200]}"
            raise WandbError(f"W&B could not start a {mode} run ({why}); check the network and "
                             f"the key; {OFFLINE_HINT}") from None

    def log(self, rows: list[dict]) -> None:
        metrics = {}
        for row in rows:
            prefix = "" if self.members == 1 else f"member{row['member']}/"
            for key, value in row.items():
                if key not in ("member", "seed", "init", "status", "epoch", "scale"):
                    metrics[prefix + key] = value
        self.run.log(metrics, step=int(rows[0]["epoch"]))

    def summarise(self, summary: dict) -> None:
        for m in summary["members"]:
            prefix = "" if self.members == 1 else f"member{m['member']}/"
            self.run.summary[prefix + "final_test_loss"] = m["final_test_loss"]
            self.run.summary[prefix + "status"] = m["status"]

    def close(self, failed: bool = False) -> None:
        run_dir = self.run.dir
        self.wandb.finish(exit_code=1 if failed else 0)
        if self.offline:
            print(f"W&B (offline): upload later with: wandb sync {Path(run_dir).parent}")


def _usable_terminal() -> bool:
    """A terminal that can draw a bar (a pty of size 0x0, as under `script`, cannot)."""
    if not sys.stderr.isatty():
        return False
    return shutil.get_terminal_size((0, 0)).columns >= 20


class Progress:
    """tqdm over epochs 1..N on a usable terminal (epoch 0, the evaluation before training,
    shows as the starting postfix); otherwise a plain line every few epochs, prefixed with the
    job's name so that parallel jobs' lines can be told apart."""

    def __init__(self, epochs: int, enabled: bool, desc: str, start: int = 0):
        self.enabled, self.epochs, self.desc, self.bar = enabled, epochs, desc, None
        self.every = max(1, epochs // 10)
        if enabled and _usable_terminal():
            from tqdm import tqdm

            self.bar = tqdm(total=epochs, initial=start, desc=desc, unit="epoch", dynamic_ncols=True)

    def update(self, epoch: int, loss: float, iters: float) -> None:
        if self.bar is not None:
            if epoch > 0:
                self.bar.update(1)
            self.bar.set_postfix(test_loss=f"{loss:.4g}", fwd_iters=f"{iters:.1f}")
        elif self.enabled and (epoch % self.every == 0 or epoch == self.epochs):
            print(f"[{self.desc}] epoch {epoch}/{self.epochs}  test_loss {loss:.4g}  "
                  f"fwd_iters {iters:.1f}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
