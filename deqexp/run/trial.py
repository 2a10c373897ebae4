"""A run that is a trial of an Optuna study (``hydra/sweeper=optuna``): it reports its
validation loss (or, where test selection is allowed, its test loss) at each evaluated epoch to
the study's storage, and stops when the study's pruner says so.

The storage is the sweep folder's journal file (or an RDB URL), so this works from any launcher's
worker process, on any node that sees the file.
"""
from __future__ import annotations

import math

PRUNED = "PRUNED"  # marker file in a pruned trial's run folder: the epoch it stopped at


class Pruned(Exception):
    """The study's pruner stopped this trial at ``epoch``."""

    def __init__(self, epoch: int):
        self.epoch = epoch
        super().__init__(f"pruned by the study's pruner at epoch {epoch}")


def open_storage(url: str):
    """An Optuna storage: a journal file (a path) or an RDB URL (``sqlite:///...``, ...)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if "://" in url:
        return optuna.storages.RDBStorage(url)
    return JournalStorage(JournalFileBackend(url))


def make_pruner(name: str):
    import optuna

    return {"none": optuna.pruners.NopPruner, "median": optuna.pruners.MedianPruner,
            "halving": optuna.pruners.SuccessiveHalvingPruner}[name]()


class Reporter:
    """Reports a trial's intermediate values and raises :class:`Pruned` when it should stop."""

    def __init__(self, search):
        import optuna

        storage = open_storage(search.storage)
        study = optuna.load_study(study_name=search.study, storage=storage,
                                  pruner=make_pruner(search.pruner))
        self.trial = optuna.trial.Trial(study, search.trial)
        # best_val_loss is scored on validation; every other objective on test (allowed ones only)
        self.key = "val_loss" if search.objective == "best_val_loss" else "test_loss"

    def __call__(self, epoch: int, rows: list[dict]) -> None:
        values = [r.get(self.key) for r in rows if r["status"] == "ok"]
        values = [v for v in values if v is not None and math.isfinite(v)]
        self.trial.report(sum(values) / len(values) if values else math.inf, step=epoch)
        if epoch > 0 and self.trial.should_prune():
            raise Pruned(epoch)


def reporter(cfg) -> Reporter | None:
    """The trial's reporter, or None for a run that is not a trial."""
    search = cfg.get("search")
    return Reporter(search) if search is not None and search.trial is not None else None
