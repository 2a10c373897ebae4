"""Where a run's numbers go as it trains: metrics.csv, W&B and the progress display."""
from __future__ import annotations

import csv
import os
import secrets
import shutil
import sys
from pathlib import Path

from ..deq.solver_loop import OUTCOMES
from .messages import shorten

# samples per solver outcome: the evaluation's forward solves on the test split, and the
# epoch's adjoint solves (every training batch's); deqexp.deq.solver_loop.OUTCOMES
OUTCOME_COLUMNS = [f"{solve}_n_{o}" for solve in ("fwd", "bwd") for o in OUTCOMES]
METRIC_COLUMNS = [
    "member", "seed", "init", "scale", "epoch", "train_loss", "test_loss", "fwd_iters_mean",
    "fwd_iters_max", "fwd_residual", "converged_frac", "bwd_iters_mean", "bwd_residual",
    "bwd_converged_frac", "op_norm_W", "op_norm_U", "jac_norm", *OUTCOME_COLUMNS,
    "epoch_time_s", "status",
]
def metric_columns(validation: bool) -> list[str]:
    """metrics.csv's columns: ``val_loss`` after ``test_loss`` only for runs with a validation
    split, so that the files of runs without one stay as they were."""
    if not validation:
        return METRIC_COLUMNS
    i = METRIC_COLUMNS.index("test_loss") + 1
    return [*METRIC_COLUMNS[:i], "val_loss", *METRIC_COLUMNS[i:]]


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


WANDB_ID = "wandb_id"  # the run folder's W&B run id: a resumed run continues that W&B run


def wandb_run_id(run_dir: Path, resume: bool) -> str:
    """The W&B id of the run in ``run_dir``: the folder's own when resuming, else a new one
    (written there, so that the next resume finds it)."""
    path = Path(run_dir) / WANDB_ID
    if resume and path.exists():
        held = path.read_text().strip()
        if held:
            return held
    run_id = secrets.token_hex(4)  # W&B's ids: 8 of [a-z0-9]
    path.write_text(run_id + "\n")
    return run_id


def wandb_group(config_dict: dict) -> str | None:
    """Runs group by their Optuna study when they are trials (one W&B group a study), else by
    the run's ``name``."""
    return (config_dict.get("search") or {}).get("study") or config_dict.get("name")


class WandbLog:
    """The same per-epoch metrics as the CSV, in a W&B run inside the run's folder. A resumed
    run continues its W&B run (same id). Where to upload offline runs from is said once, at the
    end of the run or sweep (:mod:`deqexp.run.callbacks`)."""

    def __init__(self, run_dir: Path, cfg, config_dict: dict, run_name: str, members: int,
                 resume: bool = False):
        import wandb

        mode = wandb_mode(cfg.mode)
        if mode == "online" and not _has_wandb_key():
            raise WandbError("logger.wandb.mode=online needs a W&B API key (`wandb login`, or set "
                             f"WANDB_API_KEY); {OFFLINE_HINT}")
        self.members, self.offline = members, mode == "offline"
        os.environ.setdefault("WANDB_SILENT", "true")  # W&B's own 3 lines a job; ours says where
        try:
            self.run = wandb.init(
                project=cfg.project, entity=cfg.entity, dir=str(run_dir), mode=mode,
                group=wandb_group(config_dict), name=run_name, config=config_dict,
                id=wandb_run_id(run_dir, resume), resume="allow", reinit="finish_previous",
                # console="off": W&B's copy of the terminal would write into the run folder and, on
                # a full disk, print a logging error for every line
                settings=wandb.Settings(quiet=True, init_timeout=60, console="off"),
            )
        except Exception as err:  # wandb raises its own error types (CommError, UsageError, ...)
            why = shorten(f"{type(err).__name__}: {err}", 200)
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
        # this run, not W&B's global current run (another run in the process may be current)
        self.run.finish(exit_code=1 if failed else 0)



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
            if epoch > self.bar.n:  # evaluated epochs may skip some (trainer.eval_every > 1)
                self.bar.update(epoch - self.bar.n)
            self.bar.set_postfix(test_loss=f"{loss:.4g}", fwd_iters=f"{iters:.1f}")
        elif self.enabled and (epoch % self.every == 0 or epoch == self.epochs):
            print(f"[{self.desc}] epoch {epoch}/{self.epochs}  test_loss {loss:.4g}  "
                  f"fwd_iters {iters:.1f}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
