"""What a search leaves in its sweep folder: ``trials.csv``, ``optimization_results.yaml``, the
figures (optimisation history, parameter importances, slice), the confirm stage's comparison,
and what ``deqexp status`` says about it."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..run.folder import atomic_write
from .search_space import params_overrides

STATES = ("COMPLETE", "PRUNED", "RUNNING", "FAIL", "WAITING")


def trials_table(studies) -> pd.DataFrame:
    """One row a trial: study, number, state, value, params, run folders, pruned epoch."""
    rows = []
    for study in studies:
        for t in study.get_trials(deepcopy=False):
            rows.append({"study": study.study_name, "number": t.number, "state": t.state.name,
                         "value": t.value if t.values else None,
                         **{f"params_{k}": v for k, v in t.params.items()},
                         "pruned_at": t.user_attrs.get("pruned_at"),
                         "run_dirs": ";".join(t.user_attrs.get("run_dirs", []))})
    return pd.DataFrame(rows)


def _best(study) -> dict | None:
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return None
    best = study.best_trial
    return {"name": study.study_name, "best_params": dict(best.params),
            "best_value": float(best.value), "best_trial": best.number,
            "run_dirs": list(best.user_attrs.get("run_dirs", []))}


def write_outputs(studies, sweep_dir: Path, settings) -> None:
    """trials.csv, optimization_results.yaml and the figures, rewritten after each study."""
    import yaml

    atomic_write(sweep_dir / "trials.csv", trials_table(studies).to_csv(index=False))
    bests = [b for b in map(_best, studies) if b is not None]
    on_test = "test" in settings.objective
    label = {"objective": settings.objective, "direction": settings.direction,
             "chosen_on": "test (allow_test_selection=true)" if on_test else "validation"}
    text = yaml.safe_dump({**(bests[0] if len(bests) == 1 and len(studies) == 1 else {"studies": bests}),
                           **label}, sort_keys=False)
    atomic_write(sweep_dir / "optimization_results.yaml", text)


def all_figures(studies, sweep_dir: Path) -> list[str]:
    """The figures of every study that has a complete trial."""
    return [f for study in studies if _best(study) is not None for f in figures(study, sweep_dir)]


def figures(study, sweep_dir: Path) -> list[str]:
    """optuna.visualization.matplotlib's history, importances and slice plots (those that the
    finished trials allow: importances need two trials and a varied parameter)."""
    import warnings

    import matplotlib
    import optuna

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # "no complete trials" and the like

    stem = study.study_name.replace("/", "_").replace("[", "-").replace("]", "").replace(",", "-")
    made = []
    for kind, plot in (("history", vis.plot_optimization_history),
                       ("importances", vis.plot_param_importances), ("slice", vis.plot_slice)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna marks these plots experimental
                ax = plot(study)
                fig = (ax.flat[0] if hasattr(ax, "flat") else ax).get_figure()
                fig.tight_layout()
                fig.savefig(sweep_dir / f"{stem}_{kind}.png", dpi=100)
            plt.close(fig)
            made.append(f"{stem}_{kind}.png")
        except (ValueError, RuntimeError, ZeroDivisionError, IndexError):
            plt.close("all")
    return made


def confirm(sweeper, studies, space, arms, sweep_dir: Path):
    """Rerun each study's best parameters on ``confirm_seeds`` fresh seeds (the other grid axes
    kept, the seed axis replaced), then compare the arms on them (``confirm/``)."""
    from .compare import run_compare, summary_lines
    from .compare_report import write_outputs as write_compare

    s = sweeper.s
    seeds = [f"trainer.seed={s.confirm_seed_start + k}" for k in range(s.confirm_seeds)]
    cells = space.cells(without=(*s.arms, "trainer.seed"))
    out = sweep_dir / "confirm"
    jobs = []
    for study, arm in zip(studies, arms):
        best = _best(study)
        if best is None:
            continue
        params = params_overrides(best["best_params"])
        jobs += [[*space.fixed, *arm, *cell, *params, seed, f"hydra.sweep.dir={out}"]
                 for cell in cells for seed in seeds]
    sweeper.launcher.launch(jobs, initial_job_idx=sweeper.job_idx)
    sweeper.job_idx += len(jobs)
    if len(studies) > 1:
        # the measures that the search's choice is reported by (Holm over these three only)
        metrics = ["test_at_best_val" if "val" in s.objective else "best_test_loss", "final_test_loss",
                   "diverged"]
        c = run_compare([out], pair=["trainer.seed"], metrics=metrics)
        write_compare(c, out / "compare", wandb=False)
        print("\n".join(summary_lines(c)) + f"\nfiles: {out}/compare/COMPARE.md")
        return c
    return None


def search_status(sweep_dir: Path, storage_url: str | None = None) -> tuple[str, bool]:
    """The text ``deqexp status`` prints for a search, and whether every study has finished."""
    import optuna

    from ..run.trial import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(storage_url or str(sweep_dir / "optuna.journal"))
    lines, finished = [], True
    for name in optuna.study.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        counts = {k: 0 for k in STATES}
        for t in study.get_trials(deepcopy=False):
            counts[t.state.name] = counts.get(t.state.name, 0) + 1
        best = _best(study)
        lines.append(f"study {name}: " + ", ".join(f"{n} {k.lower()}" for k, n in counts.items() if n))
        if best is not None:
            value = best["best_value"]
            lines.append(f"  best so far: {value:.6g} (trial {best['best_trial']}) "
                         + " ".join(f"{k}={v}" for k, v in best["best_params"].items()))
        finished &= counts["RUNNING"] == 0 and best is not None
    return "\n".join(lines) or "no study in this folder yet", finished
