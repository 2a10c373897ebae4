"""Where a run's results go: its folder (CSV, summary, completion marker), W&B, progress.

Files are written so that a crash never leaves a result that looks complete:
``summary.json`` is written atomically and the ``COMPLETE`` marker last.
"""
from __future__ import annotations

import csv
import json
import math
import os
import sys
from pathlib import Path

METRIC_COLUMNS = [
    "member", "seed", "init", "scale", "epoch", "train_loss", "test_loss", "fwd_iters_mean",
    "fwd_iters_max", "fwd_residual", "converged_frac", "bwd_iters_mean", "op_norm_W", "op_norm_U",
    "epoch_time_s", "status",
]
MARKER = "COMPLETE"


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class RunFolder:
    """A run's output folder and its completion protocol."""

    def __init__(self, path: Path | str, fingerprint: str):
        self.path, self.fingerprint = Path(path), fingerprint
        self.path.mkdir(parents=True, exist_ok=True)

    @property
    def marker(self) -> Path:
        return self.path / MARKER

    def is_complete(self) -> bool:
        """A completed run of the same resolved config is already here."""
        return self.marker.exists() and self.marker.read_text().strip() == self.fingerprint

    def start(self) -> None:
        """Forget any earlier (complete or interrupted) result in this folder."""
        for name in (MARKER, "metrics.csv", "summary.json"):
            (self.path / name).unlink(missing_ok=True)

    def finish(self, summary: dict) -> None:
        atomic_write(self.path / "summary.json", json.dumps(summary, indent=2, default=_jsonable))
        atomic_write(self.marker, self.fingerprint + "\n")

    def summary(self) -> dict:
        return json.loads((self.path / "summary.json").read_text())


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return str(v)


class CsvLog:
    """A CSV of rows (``metrics.csv``: one per member and epoch), flushed after every write."""

    def __init__(self, path: Path, columns: list[str] = METRIC_COLUMNS):
        self.fh = open(path, "w", newline="")
        self.writer = csv.DictWriter(self.fh, fieldnames=columns, extrasaction="ignore")
        self.writer.writeheader()

    def log(self, rows: list[dict]) -> None:
        self.writer.writerows(rows)
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def wandb_mode(configured: str | None) -> str:
    """An explicit ``logger.wandb.mode`` beats ``$WANDB_MODE``; the default is offline."""
    return configured or os.environ.get("WANDB_MODE") or "offline"


class WandbLog:
    """The same per-epoch metrics as the CSV, in a W&B run inside the run's folder."""

    def __init__(self, run_dir: Path, cfg, config_dict: dict, run_name: str, members: int):
        import wandb

        self.wandb, self.members = wandb, members
        self.run = wandb.init(
            project=cfg.project, entity=cfg.entity, dir=str(run_dir), mode=wandb_mode(cfg.mode),
            group=config_dict.get("name"), name=run_name, config=config_dict,
            reinit="finish_previous", settings=wandb.Settings(quiet=True),
        )
        self.offline = wandb_mode(cfg.mode) == "offline"

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


class Progress:
    """tqdm over epochs on a terminal; a plain line every few epochs otherwise."""

    def __init__(self, epochs: int, enabled: bool, desc: str):
        self.enabled, self.epochs, self.bar = enabled, epochs, None
        self.every = max(1, epochs // 10)
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=epochs, desc=desc, unit="epoch", dynamic_ncols=True)

    def update(self, epoch: int, loss: float, iters: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(test_loss=f"{loss:.4g}", fwd_iters=f"{iters:.1f}")
        elif self.enabled and (epoch % self.every == 0 or epoch == self.epochs):
            print(f"epoch {epoch}/{self.epochs}  test_loss {loss:.4g}  fwd_iters {iters:.1f}",
                  flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
