"""`hydra/sweeper=optuna` (issue 27), in-process on tiny jobs: results agree with trials.csv, a
rerun resumes (killed trials retried), the seed fixes the trial sequence, pruning is recorded,
arms get equal budgets and the confirm stage pairs seeds, and bad input stops before any trial."""
import optuna
import pandas as pd
import pytest
import yaml

from deqexp import cli

TINY = ["dataset.val_fraction=0.25", "trainer.epochs=2", "dataset.n_train=16", "dataset.n_test=8",
        "dataset.length=8", "logger=csv", "logger.progress=false", "trainer.threads=1",
        "trainer.jac_samples=0"]
LR = "optim.lr=tag(log,interval(1e-3,1e-1))"


def search(tmp_path, *extra, trials=3):
    """``deqexp train -m hydra/sweeper=optuna ...`` in this process; its exit code."""
    given = {a.split("=", 1)[0] for a in extra}  # a key may be given once: extra replaces the base
    base = [a for a in [f"hydra.sweeper.n_trials={trials}", *TINY] if a.split("=", 1)[0] not in given]
    try:
        cli.main(["train", "-m", "hydra/sweeper=optuna", *base, f"paths.output={tmp_path}", *extra])
    except SystemExit as stop:
        return stop.code or 0
    return 0


def _trials(tmp_path) -> pd.DataFrame:
    return pd.read_csv(tmp_path / "multirun" / "default" / "trials.csv")


def test_best_params_are_the_best_row_of_trials_csv(tmp_path):
    assert search(tmp_path, LR, trials=4) == 0
    trials = _trials(tmp_path)
    assert len(trials) == 4 and (trials.state == "COMPLETE").all()
    best = yaml.safe_load((tmp_path / "multirun/default/optimization_results.yaml").read_text())
    row = trials.loc[trials.value.idxmin()]
    assert best["best_value"] == pytest.approx(row.value)
    assert best["best_params"]["optim.lr"] == row["params_optim.lr"]
    assert best["chosen_on"] == "validation"
    summary = pd.read_csv(f"{row.run_dirs}/metrics.csv")  # the value is the run's best val loss
    assert row.value == pytest.approx(summary.val_loss.min())
    assert (tmp_path / "multirun/default/deqexp_history.png").exists()


def test_a_rerun_resumes_and_retries_a_killed_trial(tmp_path):
    assert search(tmp_path, LR, trials=2) == 0
    storage = optuna.storages.journal.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(tmp_path / "multirun/default/optuna.journal")))
    study = optuna.load_study(study_name="deqexp", storage=storage)
    killed = study.ask({"optim.lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)})
    assert search(tmp_path, LR, trials=3) == 0
    trials = _trials(tmp_path)
    assert list(trials.state) == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    assert trials.loc[3, "params_optim.lr"] == killed.params["optim.lr"]  # retried as it was
    before = trials.value[:2].tolist()
    assert search(tmp_path, LR, trials=3) == 0  # nothing left to do
    assert len(_trials(tmp_path)) == 4 and _trials(tmp_path).value[:2].tolist() == before


def test_the_seed_fixes_the_trial_sequence(tmp_path):
    for name in ("a", "b", "c"):
        seed = 1 if name == "c" else 0
        assert search(tmp_path / name, LR, f"hydra.sweeper.seed={seed}", trials=2) == 0
    lrs = [_trials(tmp_path / n)["params_optim.lr"].tolist() for n in ("a", "b", "c")]
    assert lrs[0] == lrs[1] != lrs[2]


def test_pruned_trials_are_recorded_with_their_folder_and_epoch(tmp_path):
    # the median pruner starts after 5 trials; large learning rates do badly from epoch 1
    code = search(tmp_path, "optim.lr=tag(log,interval(1e-4,10.0))", "hydra.sweeper.pruner=median",
                  "trainer.epochs=4", trials=9)
    assert code == 0
    trials = _trials(tmp_path)
    pruned = trials[trials.state == "PRUNED"]
    assert len(pruned) >= 1 and (pruned.number >= 5).all()
    for r in pruned.itertuples():
        assert 0 < r.pruned_at < 4
        assert (tmp_path / "multirun/default" / r.run_dirs.split("/")[-1] / "PRUNED").read_text().strip() \
            == str(int(r.pruned_at))


def test_arms_get_equal_budgets_and_the_confirm_stage_pairs_seeds(tmp_path):
    assert search(tmp_path, LR, "hydra.sweeper.arms=[init]", "init=kglm,random",
                  "hydra.sweeper.confirm_seeds=2", trials=2) == 0
    trials = _trials(tmp_path)
    per_study = trials.groupby("study")["params_optim.lr"].apply(list)
    assert list(per_study.index) == ["deqexp[init=kglm]", "deqexp[init=random]"]
    assert per_study.iloc[0] == per_study.iloc[1]  # same space, same seed, same budget
    table = pd.read_csv(tmp_path / "multirun/default/confirm/compare/comparison.csv")
    assert (table.n_pairs == 2).all() and set(table.metric) == {"test_at_best_val", "final_test_loss",
                                                                 "diverged"}


@pytest.mark.parametrize("args, says", [
    (["optim.lrr=interval(0.1,0.2)"], "hydra.sweeper.params.optim.lrr: the config has no key optim.lrr"),
    (["optim.lr=interval(0.2,0.1)"], "interval(0.2, 0.1) needs low < high"),
    (["optim.lr=tag(log,interval(0,0.1))"], "a log interval needs low > 0"),
    (["model.kind=interval(0,1)"], "interval/range needs a numeric key, but model.kind is 'dense'"),
    (["optim.lr=choice()"], "choice"),
    ([LR, "hydra.sweeper.objective=best_tst_loss"], "hydra.sweeper.objective=best_tst_loss is not valid"),
    ([LR, "hydra.sweeper.objective=final_test_loss"], "chooses on the test split"),
    ([LR, "hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials=0 must be at least 1"),
    ([LR, "dataset.val_fraction=0"], "needs a validation split: add dataset.val_fraction=0.2"),
])
def test_bad_input_stops_before_any_trial(tmp_path, capsys, args, says):
    assert search(tmp_path, *args) == 2
    err = capsys.readouterr().err
    assert says in err, err[-2000:]
    assert not list(tmp_path.rglob("metrics.csv"))


def test_a_journal_from_another_search_space_is_refused(tmp_path, capsys):
    assert search(tmp_path, LR, trials=1) == 0
    assert search(tmp_path, "optim.lr=interval(0.01,0.02)", trials=1) == 2
    assert "was made for another search space" in capsys.readouterr().err


def test_status_shows_the_studies(tmp_path, capsys):
    from deqexp.sweep.status import main as status_main

    assert search(tmp_path, LR, trials=2) == 0
    capsys.readouterr()
    assert status_main([str(tmp_path / "multirun/default")]) == 0
    out = capsys.readouterr().out
    assert "study deqexp: 2 complete" in out and "best so far" in out


@pytest.mark.slow
def test_a_search_launches_two_trials_at_a_time_through_joblib(tmp_path):
    from tests.cli import deqexp

    p = deqexp("train", "-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2",
               "launcher=joblib", LR, *TINY, f"paths.output={tmp_path}")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Joblib" in p.stdout + p.stderr  # Hydra's joblib launcher ran the batch of two
    trials = _trials(tmp_path)
    assert list(trials.state) == ["COMPLETE", "COMPLETE"] and trials.value.notna().all()
