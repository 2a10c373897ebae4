"""`deqexp compare` (issue 26): paired statistics equal scipy's, Holm equals a hand computation,
a planted effect is found with its sign, a null effect is flagged at about the nominal rate, and
diverged, unpaired, incomplete and stale runs and ensemble members are handled as documented."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats as sps

from deqexp.sweep import stats
from deqexp.sweep.compare import main as compare_main
from deqexp.sweep.compare import run_compare

EPOCHS = [0, 1, 2, 3]


def _config(init="kglm", seed=0, lr=1e-3, dataset="smooth", ensemble=None):
    return {"dataset": {"name": dataset, "n_train": 32}, "init": {"name": init, "scale": None},
            "optim": {"lr": lr}, "task": "train",
            "trainer": {"seed": seed, "threads": 1, "epochs": EPOCHS[-1],
                        "ensemble": ensemble or {"seeds": 1, "inits": [], "scales": []}},
            "logger": {"csv": True}}


def _rows(member, init, seed, finals, diverged=False):
    out = []
    for e in EPOCHS:
        loss = finals * (1 + (EPOCHS[-1] - e) * 0.5)
        out.append({"member": member, "seed": seed, "init": init, "scale": "", "epoch": e,
                    "test_loss": math.nan if diverged and e == EPOCHS[-1] else loss,
                    "fwd_iters_mean": 5.0, "fwd_n_converged": 8, "fwd_n_cap": 0, "fwd_n_stalled": 0,
                    "fwd_n_nonfinite": 0, "status": "diverged" if diverged and e == EPOCHS[-1] else "ok"})
    return out


def write_run(folder, config, rows, state="complete"):
    """A run folder as deqexp writes it; ``state`` complete, stale, failed or incomplete."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    pd.DataFrame(rows).to_csv(folder / "metrics.csv", index=False)
    (folder / "FINGERPRINT").write_text("f" * 16 + "\n")
    if state in ("complete", "stale"):
        (folder / "summary.json").write_text(json.dumps({"members": []}))
        (folder / "COMPLETE").write_text(("f" if state == "complete" else "0") * 16 + "\n")
    if state == "failed":
        (folder / "FAILED").write_text("ConfigError: something\n")


def sweep(root, finals: dict[str, list[float]], diverged=(), skip=()):
    """One run per (init, seed); finals[init][seed] is the final test loss."""
    for init, values in finals.items():
        for seed, v in enumerate(values):
            if (init, seed) in skip:
                continue
            write_run(root / f"init={init},trainer.seed={seed}", _config(init, seed),
                      _rows(0, init, seed, v, (init, seed) in diverged))
    return root


def _effect(n=12, shift=0.3, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.lognormal(0, 1.0, n) * 5  # between-seed spread far above the effect
    return {"kglm": list(base), "random": list(base + shift + rng.normal(0, 0.05, n))}


def test_a_planted_paired_effect_is_found_with_its_sign_and_scipys_numbers(tmp_path):
    finals = _effect()
    c = run_compare([sweep(tmp_path, finals)], metrics=["final_test_loss"])
    (row,) = c.table.itertuples()
    d = np.array(finals["kglm"]) - np.array(finals["random"])
    assert (row.arm_a, row.arm_b, row.n_pairs) == ("kglm", "random", 12)
    assert row.mean_diff == pytest.approx(d.mean()) and row.median_diff == pytest.approx(np.median(d))
    assert row.p_wilcoxon == pytest.approx(sps.wilcoxon(d).pvalue)
    assert row.p_sign == pytest.approx(sps.binomtest(int((d < 0).sum()), 12).pvalue)
    assert row.ci_low < d.mean() < row.ci_high < 0
    assert row.verdict == "kglm lower"
    # unpaired, the between-seed spread hides the effect
    assert sps.mannwhitneyu(finals["kglm"], finals["random"]).pvalue > 0.3


def test_holm_equals_a_hand_computation():
    p = [0.01, 0.04, 0.03, 0.5, math.nan]
    # sorted 0.01, 0.03, 0.04, 0.5: x4, x3 (running max), x2 -> max, x1
    assert np.allclose(stats.holm(p)[:4], [0.04, 0.09, 0.09, 0.5]) and math.isnan(stats.holm(p)[4])


def test_holm_corrects_over_every_comparison_written(tmp_path):
    c = run_compare([sweep(tmp_path, _effect())], metrics=["final_test_loss", "best_test_loss",
                                                           "auc_test_loss", "fwd_iters_mean"])
    assert np.allclose(c.table.p_holm, stats.holm(c.table.p_wilcoxon))
    assert (c.table.p_holm >= c.table.p_wilcoxon).all() and c.table.p_holm.max() == 1.0


def test_null_effects_are_flagged_at_about_the_nominal_rate():
    rng = np.random.default_rng(1)
    reps, n = 400, 12
    results = [stats.compare_paired(a, a + rng.normal(0, 1, n))
               for a in rng.lognormal(0, 1, (reps, n))]
    rate = np.mean([r.p_wilcoxon < 0.05 for r in results])
    lo, hi = sps.binomtest(20, reps).proportion_ci(0.999)  # 5% of 400 = 20, its 99.9% band
    assert lo <= rate <= hi, rate
    covered = np.mean([r.ci_low <= 0 <= r.ci_high for r in results])
    assert 0.90 <= covered <= 0.98, covered


def test_a_diverged_member_loses_its_comparison_and_is_counted(tmp_path):
    finals = {"kglm": [1.0] * 8, "random": [0.5] * 8}
    c = run_compare([sweep(tmp_path, finals, diverged={("random", s) for s in range(8)})],
                    metrics=["final_test_loss", "diverged"])
    loss = c.table[c.table.metric == "final_test_loss"].iloc[0]
    assert loss.verdict == "kglm lower" and loss.n_pairs == 8 and loss.n_finite == 0
    assert c.arms.set_index(["arm", "metric"]).loc[("random", "diverged"), "diverged"] == 8
    assert c.table[c.table.metric == "diverged"].iloc[0].mean_diff == -1.0


def test_unpaired_incomplete_and_stale_runs_are_listed_apart(tmp_path):
    finals = _effect(n=6)
    root = sweep(tmp_path, finals, skip={("random", 5)})
    write_run(root / "failed", _config("kglm", 9), _rows(0, "kglm", 9, 1.0), state="failed")
    write_run(root / "stale", _config("kglm", 8), _rows(0, "kglm", 8, 1.0), state="stale")
    write_run(root / "cut", _config("kglm", 7), _rows(0, "kglm", 7, 1.0), state="incomplete")
    c = run_compare([root], metrics=["final_test_loss"])
    row = c.table.iloc[0]
    assert (row.n_pairs, row.unpaired_a, row.unpaired_b) == (5, 1, 0)
    assert sorted((p.name, s) for p, s in c.left_out) == [
        ("cut", "incomplete"), ("failed", "failed"), ("stale", "stale")]


def test_ensemble_members_compare_like_separate_runs(tmp_path):
    finals = _effect(n=5)
    separate = run_compare([sweep(tmp_path / "separate", finals)], metrics=["final_test_loss"])
    rows = [r for i, init in enumerate(finals) for s, v in enumerate(finals[init])
            for r in _rows(i * 5 + s, init, s, v)]
    ens = {"seeds": 5, "inits": ["kglm", "random"], "scales": []}
    write_run(tmp_path / "ensemble" / "job", _config("kglm", 0, ensemble=ens), rows)
    together = run_compare([tmp_path / "ensemble"], metrics=["final_test_loss"])
    cols = ["arm_a", "arm_b", "n_pairs", "mean_diff", "p_wilcoxon", "p_holm", "verdict"]
    pd.testing.assert_frame_equal(separate.table[cols], together.table[cols])


@pytest.mark.parametrize("change, says", [
    ("empty", "no completed runs under"),
    ("one arm", "one arm only"),
    ("--by optim.beta", "--by/--pair optim.beta: no run's config has this key"),
    ("--by optim.lr", "--by optim.lr does not vary"),
    ("--metric jac_norm", "--metric jac_norm: no run logged it"),
    ("mixed data", "runs of different datasets or tasks are mixed (dataset.name: digits, smooth)"),
    ("missing", "does not exist"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, change, says):
    root = tmp_path / "sweep"
    root.mkdir()
    args = []
    if change == "one arm":
        sweep(root, {"kglm": [1.0, 2.0]})
    elif change != "empty":
        sweep(root, {"kglm": [1.0, 2.0], "random": [2.0, 3.0]})
    if change.startswith("--"):
        args = change.split()
    if change == "mixed data":
        write_run(root / "digits", _config("kglm", 5, dataset="digits"), _rows(0, "kglm", 5, 1.0))
    path = root if change != "missing" else tmp_path / "nowhere"
    assert compare_main([str(path), *args, "--no-wandb"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("deqexp compare: error: ") and says in err and "\n" not in err
    assert not (root / "compare").exists()


def test_end_to_end_a_real_ensemble_run_then_compare_writes_its_files_and_wandb_run(tmp_path, capsys):
    from deqexp.run.folder import RunFolder
    from deqexp.run.identity import identify
    from deqexp.run.runner import train_job
    from tests.compose import compose_config

    cfg = compose_config("dataset.n_train=24", "dataset.n_test=8", "dataset.length=12", "trainer.epochs=2",
                         "trainer.ensemble.inits=[kglm,random]", "trainer.ensemble.seeds=3", "logger=csv",
                         "logger.progress=false", "trainer.threads=1")
    train_job(cfg, RunFolder(tmp_path / "runs" / "job", *identify(cfg)))
    out = tmp_path / "cmp"
    assert compare_main([str(tmp_path / "runs"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "compared 6 members of 1 completed runs: arms by init.name" in printed
    table = pd.read_csv(out / "comparison.csv")
    assert set(table.metric) >= {"final_test_loss", "diverged", "fwd_cap_share", "jac_norm"}
    assert (table.n_pairs == 3).all() and (table[["arm_a", "arm_b"]].iloc[0] == ["kglm", "random"]).all()
    written = {p.name for p in out.iterdir()}
    assert {"COMPARE.md", "arms.csv", "units.csv", "curves.png", "differences.png"} <= written
    assert "Holm's correction" in (out / "COMPARE.md").read_text()
    (run,) = (out / "wandb").glob("offline-run-*")
    assert list(run.glob("*.wandb"))
