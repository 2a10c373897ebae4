"""``hydra/sweeper=optuna``: hyperparameter search on current Optuna, resumable and fair.

Every trial is one or more ordinary deqexp jobs (one per cell of the grid axes, e.g. seeds),
launched through the configured launcher (basic, joblib, SLURM), so run identity, checkpoints,
resume and the failure policy apply; a trial is scored by the mean of ``objective`` over its
jobs' members (a diverged member: +inf). The study lives in an Optuna journal file in the sweep
folder (``optuna.journal``; no database server, works on a shared filesystem) or at
``storage`` (an RDB URL). Rerunning the command resumes it: finished trials are kept; trials a
killed sweep left running are marked failed and retried with the same parameters (their jobs
resume from their checkpoints), up to ``n_trials`` finished (complete or pruned).

``arms=[key]`` tunes each value of a grid axis as its own study, with the same budget, space
and sampler seed; ``confirm_seeds=K`` then reruns each arm's best parameters on K fresh seeds
and writes ``deqexp compare``'s report on them (``confirm/``).
"""
from __future__ import annotations

import itertools
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.plugins.sweeper import Sweeper

from .search_space import OBJECTIVES, SearchError, Space, check_against, params_overrides, parse

SAMPLERS = ("tpe", "random", "grid", "cmaes", "qmc")
PRUNERS = ("none", "median", "halving")
JOURNAL = "optuna.journal"


@dataclass
class OptunaSweeperConf:
    """``hydra.sweeper.*`` of ``hydra/sweeper=optuna`` (deqexp's own, on Optuna >= 4)."""

    _target_: str = "hydra_plugins.deqexp_optuna.OptunaSweeper"
    sampler: str = "tpe"             # tpe | random | grid | cmaes | qmc, seeded by seed
    seed: int = 0
    direction: str = "minimize"      # minimize | maximize
    n_trials: int = 20               # finished (complete or pruned) trials per study
    n_jobs: int = 1                  # trials launched together through the launcher
    objective: str = "best_val_loss"  # a summary.json member key, averaged over members and cells
    allow_test_selection: bool = False  # objectives on the test split are refused without it
    pruner: str = "none"             # none | median | halving (successive halving)
    storage: Optional[str] = None    # None: the journal file optuna.journal in the sweep folder
    study_name: str = "deqexp"
    arms: List[str] = field(default_factory=list)   # grid axes tuned as separate, equal studies
    confirm_seeds: int = 0           # rerun each study's best on this many fresh seeds, then compare
    confirm_seed_start: int = 1000   # the first of those seeds
    params: Dict[str, str] = field(default_factory=dict)  # the search space (see search_space)


def objective_value(summary: dict, objective: str) -> float:
    """Mean of ``objective`` over a job summary's members; a diverged member counts +inf."""
    values = []
    for m in summary.get("members", []):
        if objective not in m:
            raise SearchError(f"hydra.sweeper.objective={objective}: the runs do not log it; choose one "
                              f"of {', '.join(k for k in OBJECTIVES if k in m)}")
        v = m[objective]
        values.append(math.inf if v is None or not math.isfinite(v) else float(v))
    return sum(values) / len(values) if values else math.inf


def grid_of(space: Space) -> dict[str, list]:
    """sampler=grid's values per key: choice() and range() only."""
    import optuna

    grid = {}
    for k, d in space.distributions.items():
        if isinstance(d, optuna.distributions.CategoricalDistribution):
            grid[k] = list(d.choices)
        elif getattr(d, "step", None) and not d.log:
            n = int(round((d.high - d.low) / d.step)) + 1
            grid[k] = [d.low + i * d.step for i in range(n)]
        else:
            raise SearchError(f"hydra.sweeper.params.{k}: sampler=grid needs choice() or range(), "
                              "not an interval")
    return grid


def make_sampler(name: str, seed: int, space: Space):
    import optuna

    if name == "grid":
        return optuna.samplers.GridSampler(grid_of(space), seed=seed)
    return {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
            "cmaes": optuna.samplers.CmaEsSampler, "qmc": optuna.samplers.QMCSampler}[name](seed=seed)


class OptunaSweeper(Sweeper):
    """The sweeper; Hydra instantiates it from :class:`OptunaSweeperConf`."""

    def __init__(self, **settings: Any):
        from omegaconf import OmegaConf

        self.s = OmegaConf.create({k: v for k, v in settings.items()})
        self.launcher = self.config = self.hydra_context = None
        self.job_idx = 0

    def setup(self, *, hydra_context, task_function, config) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    # ------------------------------------------------------------------ checks
    def check_settings(self) -> None:
        s = self.s
        for key, value, allowed in (("sampler", s.sampler, SAMPLERS), ("pruner", s.pruner, PRUNERS),
                                    ("direction", s.direction, ("minimize", "maximize")),
                                    ("objective", s.objective, OBJECTIVES)):
            if value not in allowed:
                raise SearchError(f"hydra.sweeper.{key}={value} is not valid; choose one of "
                                  f"{', '.join(allowed)}")
        for key in ("n_trials", "n_jobs"):
            if s[key] <= 0:
                raise SearchError(f"hydra.sweeper.{key}={s[key]} must be at least 1")
        if s.confirm_seeds < 0:
            raise SearchError(f"hydra.sweeper.confirm_seeds={s.confirm_seeds} must be 0 (off) or more")
        if "test" in s.objective and not s.allow_test_selection:
            raise SearchError(f"hydra.sweeper.objective={s.objective} chooses on the test split, which "
                              "biases the reported test loss; use best_val_loss (with "
                              "dataset.val_fraction > 0), or set hydra.sweeper.allow_test_selection=true "
                              "and label the result as chosen on test")

    def plan(self, arguments: list[str]) -> Space:
        """The search space, checked against the composed job config; raises SearchError."""
        from omegaconf import OmegaConf

        self.check_settings()
        space = parse(OmegaConf.to_container(self.s.params), arguments)
        for key in self.s.arms:
            if key not in space.grid:
                raise SearchError(f"hydra.sweeper.arms=[{key}]: give its values as a grid axis on the "
                                  f"command line, e.g. {key}=a,b")
        cells = space.cells()
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, [*space.fixed, *cells[0]])
        check_against(space, cfg)
        if self.s.objective == "best_val_loss" and not (cfg.dataset.get("val_fraction") or 0) > 0 \
                and cfg.dataset.name != "arrays":
            raise SearchError(f"hydra.sweeper.objective={self.s.objective} needs a validation split: "
                              "add dataset.val_fraction=0.2 (the runs do not log it otherwise)")
        if self.s.sampler == "grid":
            grid_of(space)  # refuses intervals now, not mid-sweep
        return space

    # ------------------------------------------------------------------ the sweep
    def sweep(self, arguments: List[str]) -> Any:
        from omegaconf import OmegaConf

        from .search_outputs import all_figures, confirm, write_outputs

        try:
            space = self.plan(arguments)
        except SearchError as err:
            print(f"deqexp train: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        storage = self.s.storage or str(sweep_dir / JOURNAL)
        # one study per combination of the arm axes' values (one study without arms)
        arms = [list(c) for c in itertools.product(*[[f"{k}={v}" for v in space.grid[k]]
                                                     for k in self.s.arms])]
        try:
            studies = [self.open_study(storage, space, arm) for arm in arms]
        except SearchError as err:
            print(f"deqexp train: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        for study, arm in zip(studies, arms):
            self.run_study(study, space, arm, storage)
            write_outputs(studies, sweep_dir, self.s)
        all_figures(studies, sweep_dir)
        if self.s.confirm_seeds:
            confirm(self, studies, space, arms, sweep_dir)
        return studies

    def open_study(self, storage_url: str, space: Space, arm: list[str]):
        """Create or resume the study of one arm; refuse a journal made for another space."""
        import optuna

        from ..run.trial import make_pruner, open_storage

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        name = self.s.study_name + (f"[{','.join(arm)}]" if arm else "")
        storage = open_storage(storage_url)
        study = optuna.create_study(study_name=name, storage=storage, direction=self.s.direction,
                                    sampler=make_sampler(self.s.sampler, self.s.seed, space),
                                    pruner=make_pruner(self.s.pruner), load_if_exists=True)
        signature = repr((space.describe(), self.s.objective, self.s.direction))
        held = study.user_attrs.get("space")
        if held is not None and held != signature:
            raise SearchError(f"the study '{name}' in {storage_url} was made for another search space, "
                              "objective or direction; give this search its own "
                              "hydra.sweeper.study_name=..., or name=... for a new sweep folder")
        study.set_user_attr("space", signature)
        return study

    def run_study(self, study, space: Space, arm: list[str], storage: str) -> None:
        """Ask, launch and tell until ``n_trials`` trials have finished."""
        from optuna.trial import TrialState

        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(t.number, state=TrialState.FAIL)  # left running by a killed sweep
            study.enqueue_trial(t.params, skip_if_exists=False)  # retried: its jobs resume
        cells = space.cells(without=tuple(self.s.arms))
        n_trials = self.s.n_trials
        if self.s.sampler == "grid":
            n_trials = min(n_trials, math.prod(len(v) for v in grid_of(space).values()))
        while (done := len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,
                                                                    TrialState.PRUNED)))) < n_trials:
            trials = [study.ask(space.distributions) for _ in range(min(self.s.n_jobs, n_trials - done))]
            jobs = [[*space.fixed, *arm, *cell, *params_overrides(t.params),
                     f"search.storage='{storage}'", f"search.study='{study.study_name}'",
                     f"search.trial={t._trial_id}", f"search.pruner={self.s.pruner}",
                     f"search.objective={self.s.objective}"] for t in trials for cell in cells]
            results = self.launcher.launch(jobs, initial_job_idx=self.job_idx)
            self.job_idx += len(jobs)
            for i, t in enumerate(trials):
                self.tell(study, t, results[i * len(cells):(i + 1) * len(cells)])

    def tell(self, study, trial, results) -> None:
        """Score one trial from its jobs' returns: pruned, failed, or the mean objective."""
        from hydra.core.utils import JobStatus
        from optuna.trial import TrialState

        # the grid sampler stops its study when the grid is done, which Optuna allows only inside
        # study.optimize(); this loop is that loop, and ends by counting finished trials
        study._thread_local.in_optimize_loop = True
        try:
            self._tell(study, trial, results, JobStatus, TrialState)
        finally:
            study._thread_local.in_optimize_loop = False

    def _tell(self, study, trial, results, JobStatus, TrialState) -> None:
        summaries = [r._return_value if r.status == JobStatus.COMPLETED else None for r in results]
        dirs = [s.get("run_dir") for s in summaries if isinstance(s, dict)]
        trial.set_user_attr("run_dirs", [d for d in dirs if d])
        pruned = [s["pruned_at"] for s in summaries if isinstance(s, dict) and "pruned_at" in s]
        if pruned:
            trial.set_user_attr("pruned_at", min(pruned))
            study.tell(trial, state=TrialState.PRUNED)
        elif any(not isinstance(s, dict) or "members" not in s for s in summaries):
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, sum(objective_value(s, self.s.objective) for s in summaries) / len(summaries))
