"""The report's claim logic on synthetic metrics: an inverted or weakened claim must fail."""
import math

import numpy as np
import pandas as pd

from deqexp.paper import claims


def _curves(loss_by_init, epochs=8, converged=1.0, residual=1e-3):
    """metrics.csv rows: loss_by_init[init] is a list of final losses, one per seed; the loss
    decays linearly to it from 1."""
    rows = []
    for init, finals in loss_by_init.items():
        for seed, final in enumerate(finals):
            for e in range(epochs + 1):
                loss = 1 + (final - 1) * e / epochs
                rows.append({"init": init, "seed": seed, "epoch": e, "test_loss": loss,
                             "status": "ok" if math.isfinite(final) else "diverged",
                             "fwd_residual": residual, "converged_frac": converged, "op_norm_W": 1.0})
    return pd.DataFrame(rows)


def test_the_paired_test_is_scipys_wilcoxon_on_the_seed_differences():
    from scipy.stats import wilcoxon

    rng = np.random.default_rng(4)
    for n in (3, 6, 9, 25):
        a, b = rng.uniform(0, 1, n), rng.uniform(0, 1, n) + 0.1
        # shuffled seeds: pairs are matched by seed, not by position
        sa, sb = pd.Series(a, index=range(n)), pd.Series(b, index=range(n)).sample(frac=1, random_state=1)
        cmp = claims.paired(sa, sb)
        assert math.isclose(cmp.p, wilcoxon(a - b).pvalue, rel_tol=1e-12), n
        assert cmp.lower == ("base" if (a - b).mean() < 0 else "other")
        assert (cmp.wins, cmp.losses) == (int((a < b).sum()), int((a > b).sum()))
    # the best p that n seeds can give, two-sided exact: 2 / 2^n
    assert claims.best_possible_p(6) == 2 / 64 and claims.best_possible_p(0) == 1.0


def test_wins_are_paired_by_seed_not_by_rank():
    # sorted, kglm's losses beat random's at both ranks; seed by seed it wins one of two
    df = _curves({"kglm": [0.1, 0.5], "random": [0.4, 0.2]})
    assert claims.paired_at(df, 8, "random").rate == 0.5
    # a seed that only one init has is not compared
    df = pd.concat([df, _curves({"kglm": [0.1, 0.5, 0.9]}).query("seed == 2")])
    cmp = claims.paired_at(df, 8, "random")
    assert (cmp.seeds, cmp.wins, cmp.losses) == (2, 1, 1)


def test_curves_claim_needs_a_significant_paired_win():
    six = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    good = claims.curves_table(_curves({"kglm": six, "random": [v + 0.1 + v / 10 for v in six]}))
    verdict, text = claims.curves_claim(good)
    assert verdict == "held" and "6 of 6 paired seeds (Wilcoxon signed-rank p = 0.0312)" in text
    inverted = claims.curves_table(_curves({"kglm": [v + 0.1 + v / 10 for v in six], "random": six}))
    assert claims.curves_claim(inverted)[0] == "did not hold"
    # five seeds, all won: two-sided p = 0.0625 at best (the one-sided sign test said 0.031)
    five = claims.curves_table(_curves({"kglm": six[:5], "random": [v + 0.1 + v / 10 for v in six[:5]]}))
    verdict, text = claims.curves_claim(five)
    assert verdict == "inconclusive" and "5 seeds can reach p = 0.0625 at best" in text
    # kglm's mean is lower (one lucky seed) but it loses 4 of 5 paired seeds: not held
    lucky = claims.curves_table(_curves({"kglm": [0.01, 0.31, 0.41, 0.51, 0.61],
                                         "random": [0.2, 0.3, 0.4, 0.5, 0.6]}))
    row = lucky[(lucky.init == "random") & (lucky.epoch == 8)].iloc[0]
    assert row.kglm_beats == 1 / 5 and bool(row.overlaps_kglm) and row.lower == "other"
    assert claims.curves_claim(lucky)[0] == "inconclusive"
    # 19 of 20 seeds won by a little (Wilcoxon p < 0.001), one lost by so much that kglm's mean
    # is higher: not held
    small = [0.1 + 0.01 * i for i in range(19)]
    mean_worse = claims.curves_table(_curves({"kglm": [*small, 9.0],
                                              "random": [v + 0.001 * (i + 1) for i, v in enumerate(small)]
                                              + [0.1]}))
    row = mean_worse[(mean_worse.init == "random") & (mean_worse.epoch == 8)].iloc[0]
    assert row.p_wilcoxon < 0.001 and row.lower == "base"
    assert claims.curves_claim(mean_worse)[0] == "inconclusive"
    # one competitor held, the other inconclusive: the claim is inconclusive
    mixed = claims.curves_table(_curves({"kglm": six, "random": [v + 0.1 + v / 10 for v in six],
                                         "naive": [0.05, 0.3, 0.25, 0.5, 0.45, 0.65]}))
    assert claims.curves_claim(mixed)[0] == "inconclusive"


def test_diverged_seeds_count_in_the_means_and_lose_their_comparisons():
    five = [0.1, 0.2, 0.3, 0.4, 0.5]
    diverged = claims.curves_table(_curves({"kglm": [0.1, 0.2, 0.3, 0.4, math.nan],
                                            "random": [v + 0.1 for v in five]}))
    last = diverged[diverged.epoch == 8].set_index("init")
    assert last.loc["kglm", "mean"] == math.inf and last.loc["kglm", "diverged"] == 1
    assert abs(last.loc["kglm", "mean_finished"] - 0.25) < 1e-12
    verdict, text = claims.curves_claim(diverged)
    assert verdict == "did not hold" and "inf (1 diverged; the others 0.25)" in text
    other_dead = claims.curves_table(_curves({"kglm": [0.3, 0.3, 0.3], "random": [0.2, math.nan, math.nan]}))
    assert other_dead[(other_dead.init == "random") & (other_dead.epoch == 8)].kglm_beats.item() == 2 / 3


def test_curves_claim_says_when_the_fixed_point_was_not_reached():
    held, text = claims.curves_claim(claims.curves_table(
        _curves({"kglm": [0.1], "naive": [0.2]}, converged=0.25, residual=0.6)))
    assert "NOT at its fixed point" in text and "0.25" in text
    _, text = claims.curves_claim(claims.curves_table(_curves({"kglm": [0.1], "naive": [0.2]})))
    assert "reached their tolerance" in text


def test_jacobian_norm_per_init_in_the_table_and_the_claim():
    df = _curves({"kglm": [0.1, 0.2], "naive": [0.2, 0.3]})
    assert "jac_norm" not in claims.curves_table(df)  # older runs: no column, no sentence
    assert "Jacobian" not in claims.curves_claim(claims.curves_table(df))[1]
    # per seed and epoch: kglm 0.5 + 0.1 seed, naive 1.5 + 0.1 seed at the last epoch
    df["jac_norm"] = np.where(df.init == "kglm", 0.5, 1.5) + 0.1 * df.seed + (8 - df.epoch)
    table = claims.curves_table(df)
    last = table[table.epoch == 8].set_index("init")
    assert np.allclose(last.jac_norm, [0.55, 1.55]) and np.allclose(last.jac_norm_max, [0.6, 1.6])
    assert np.isclose(table[(table.epoch == 0) & (table.init == "kglm")].jac_norm.item(), 8.55)
    text = claims.curves_claim(table)[1]
    assert "kglm 0.55 (max 0.6); naive 1.55 (max 1.6)" in text
    both = claims.compare_curves({"authors": table, "equilibrium": table}).set_index("init")
    assert np.allclose(both["equilibrium: jac_norm"], [0.55, 1.55])


def test_ranges_that_do_not_overlap_are_reported():
    t = claims.curves_table(_curves({"kglm": [0.1, 0.11], "naive": [0.3, 0.31]}))
    last = t[(t.init == "naive") & (t.epoch == 8)].iloc[0]
    assert not last.overlaps_kglm and last.kglm_beats == 1.0


def test_count_sensitivity_is_zero_for_identical_runs_and_measures_change():
    a = _curves({"kglm": [0.1, 0.2]})
    assert claims.count_sensitivity(a, a)[0] == 0
    b = a.assign(test_loss=a.test_loss * 1.1)
    assert abs(claims.count_sensitivity(a, b)[0] - 0.1) < 1e-12


def _sweep(best_k, best_r, scales=(0.01, 0.1, 1.0, 10.0), seeds=2, diverged_r=0, spread=False):
    """E2-like rows: each init's loss grows with the distance (in log scale) from its best scale;
    ``spread`` makes seed s's losses (1 + s/10) times larger, so that seeds are not tied."""
    rows = []
    for init, best in (("kglm", best_k), ("random", best_r)):
        for s in scales:
            for seed in range(seeds):
                loss = 0.01 * (1 + abs(np.log10(s) - np.log10(best))) * (1 + seed / 10 if spread else 1)
                dead = init == "random" and s == scales[-1] and seed < diverged_r
                rows.append({"init": init, "epoch": 1, "scale": s, "seed": seed,
                             "test_loss": math.nan if dead else loss, "status": "diverged" if dead else "ok",
                             "converged_frac": 1.0, "fwd_residual": 1e-3, "fwd_iters_mean": 5})
    return pd.DataFrame(rows)


def test_sweep_claim_needs_paired_seeds_and_an_optimum_inside_the_grid():
    df = _sweep(1.0, 0.01, seeds=5)
    table = claims.sweep_table(df)
    k, r = table.set_index("init").loc["kglm"], table.set_index("init").loc["random"]
    assert k.best_scale == 1.0 and not k.best_at_grid_edge
    assert r.best_scale == 0.01 and r.best_at_grid_edge
    verdict, text = claims.sweep_claim(table, df)
    assert verdict == "inconclusive (bound)"  # tied seeds; random's optimum may be below 0.01
    assert "edge of the sweep grid" in text
    better = _sweep(1.0, 0.1, seeds=6, spread=True)
    better.loc[better.init == "random", "test_loss"] *= 2
    verdict, text = claims.sweep_claim(claims.sweep_table(better), better)
    assert verdict == "held" and "6 of 6 paired seeds" in text
    # the same win with random's best at the grid's edge rests on a bound
    edge = _sweep(1.0, 0.01, seeds=6, spread=True)
    edge.loc[edge.init == "random", "test_loss"] *= 2
    assert claims.sweep_claim(claims.sweep_table(edge), edge)[0] == "inconclusive (bound)"
    worse = _sweep(1.0, 0.1, seeds=6, spread=True)
    worse.loc[worse.init == "kglm", "test_loss"] *= 2
    assert claims.sweep_claim(claims.sweep_table(worse), worse)[0] == "did not hold"
    two = _sweep(1.0, 0.1, seeds=2, spread=True)
    two.loc[two.init == "random", "test_loss"] *= 2
    assert claims.sweep_claim(claims.sweep_table(two), two)[0] == "inconclusive"
    # kglm ahead on loss but with more diverged runs: not held
    dead = _sweep(1.0, 0.1, seeds=6, spread=True)
    dead.loc[dead.init == "random", "test_loss"] *= 2
    dead.loc[(dead.init == "kglm") & (dead.scale == 10.0), ["test_loss", "status"]] = [math.nan, "diverged"]
    assert claims.sweep_claim(claims.sweep_table(dead), dead)[0] == "did not hold"


def test_the_best_scale_is_chosen_on_validation_and_reported_on_test():
    df = _sweep(1.0, 0.1, seeds=6, spread=True)
    df.loc[df.init == "random", "test_loss"] *= 3
    # validation agrees with test for random; for kglm it prefers 0.1 (test prefers 1.0)
    df["val_loss"] = df.test_loss
    df.loc[(df.init == "kglm") & (df.scale == 0.1), "val_loss"] = 1e-4
    table = claims.sweep_table(df).set_index("init")
    k, r = table.loc["kglm"], table.loc["random"]
    assert k.selected_on == "val" and k.best_scale == 0.1 and k.published_best_scale == 1.0
    at = lambda init, scale: df[(df.init == init) & (df.scale == scale)].test_loss  # noqa: E731
    assert math.isclose(k.best_mean_test_loss, at("kglm", 0.1).mean())
    assert math.isclose(k.published_best_mean_test_loss, at("kglm", 1.0).mean())
    assert r.best_scale == r.published_best_scale == 0.1
    verdict, text = claims.sweep_claim(claims.sweep_table(df), df)
    # the paired test is at the scales chosen on validation: kglm 0.02 x (1 + s/10) vs 0.03 x ...
    assert verdict == "held" and "chosen on the validation split" in text and "6 of 6 paired" in text
    assert "as published (best scale chosen on the test split" in text and "kglm 0.01" in text
    # without a validation loss the choice is on test, as before
    assert claims.sweep_table(df.drop(columns="val_loss")).selected_on.eq("test").all()


def test_a_scale_listed_twice_in_the_grid_counts_once():
    # the paper's E2 grid holds 1.0 in both logspaces: the same member trained twice; when it is
    # the best scale the paired comparison must still pair each seed once
    df = _sweep(1.0, 0.1, scales=(0.01, 0.1, 1.0, 1.0, 10.0), seeds=6, spread=True)
    df.loc[df.init == "random", "test_loss"] *= 2
    table = claims.sweep_table(df)
    k = table.set_index("init").loc["kglm"]
    assert k.best_scale == 1.0 and k.runs == 4 * 6
    verdict, text = claims.sweep_claim(table, df)
    assert verdict == "held" and "6 of 6 paired seeds" in text
    assert len(claims.sweep_convergence(df)) == 2 * 4


def test_a_scale_where_a_seed_diverged_is_never_the_best():
    df = _sweep(1.0, 10.0, seeds=3, diverged_r=1)  # random's best scale, 10, loses one seed
    r = claims.sweep_table(df).set_index("init").loc["random"]
    assert r.best_scale == 1.0 and r.diverged == 1
    conv = claims.sweep_convergence(df).set_index(["init", "scale"])
    assert conv.loc[("random", 10.0), "diverged"] == 1


def test_sweep_jacobian_norm_median_and_collapsed_share():
    df = _sweep(1.0, 0.1)
    assert "Jacobian" not in claims.sweep_claim(claims.sweep_table(df), df)[1]
    # kglm: J = 0 at the two smallest scales (4 of 8 runs), scale itself above; random: 2 x scale
    df["jac_norm"] = np.where(df.init == "kglm", np.where(df.scale < 1, 0.0, df.scale), 2 * df.scale)
    table = claims.sweep_table(df).set_index("init")
    assert table.loc["kglm", "jac_norm_zero"] == 0.5 and table.loc["random", "jac_norm_zero"] == 0
    assert table.loc["kglm", "jac_norm_median"] == 0.5 and table.loc["random", "jac_norm_median"] == 1.1
    text = claims.sweep_claim(claims.sweep_table(df), df)[1]
    assert "median over runs: kglm 0.5 vs random 1.1" in text
    assert "inputs) in 50% of kglm and 0% of random runs" in text
    assert "(kglm 50%, random 0%)" in text  # every solve converged in the synthetic runs
    df.loc[(df.init == "kglm") & (df.scale == 0.01), "converged_frac"] = 0.5
    assert "(kglm 25%, random 0%)" in claims.sweep_claim(claims.sweep_table(df), df)[1]
    conv = claims.sweep_convergence(df).set_index(["init", "scale"]).jac_norm
    assert conv[("random", 10.0)] == 20 and conv[("kglm", 0.1)] == 0


def test_timing_claim_states_the_ratio():
    df = pd.DataFrame([{"layer": "dense", "size": n, "init": i, "trial": 0,
                        "seconds": (3e-9 * n**3 if i == "kglm" else 1e-8 * n**2)}
                       for n in (100, 1000) for i in ("kglm", "random")])
    verdict, text = claims.timing_claim(claims.timing_table(df))
    assert verdict == "measured"
    assert "ratio 300x" in text and "size^3.00" in text


def _stability(losses, converged=None):
    """Last-epoch rows: losses[stabiliser][init] = per-seed losses; outcome counts of 10 samples."""
    rows = []
    for stab, by_init in losses.items():
        for init, values in by_init.items():
            for seed, v in enumerate(values):
                ok = (converged or {}).get(stab, 10)
                rows.append({"stabiliser": stab, "init": init, "seed": seed, "epoch": 5, "test_loss": v,
                             "status": "ok", "jac_norm": 0.9, "fwd_n_converged": ok,
                             "fwd_n_cap": 10 - ok, "fwd_n_stalled": 0, "fwd_n_nonfinite": 0,
                             "bwd_n_converged": 4, "bwd_n_cap": 0, "bwd_n_stalled": 0,
                             "bwd_n_nonfinite": 0})
    return pd.DataFrame(rows)


def test_stability_table_pairs_by_seed_within_each_stabiliser():
    rng = np.random.default_rng(0)
    k = rng.uniform(0.1, 0.2, 6)
    df = _stability({"plain": {"kglm": k, "random": k + 0.05},
                     "spectral": {"kglm": k[::-1] + 0.3, "random": k + 0.01}},
                    converged={"plain": 3})
    table = claims.stability_table(df).set_index(["stabiliser", "init"])
    plain, spec = table.loc["plain", "random"], table.loc["spectral", "random"]
    assert plain.wins == 6 and math.isclose(plain.p_wilcoxon, 2 * 0.5**6) and plain.lower == "base"
    # within spectral kglm loses every seed (paired, not the pooled means)
    wins = int(((k[::-1] + 0.3) < (k + 0.01)).sum())
    assert spec.wins == wins == 0 and spec.lower == "other"
    # converged share from the outcome counts; the stabiliser against plain, same init and seed
    assert math.isclose(table.loc["plain", "kglm"].fwd_converged, 0.3)
    assert math.isclose(table.loc["spectral", "kglm"].fwd_converged, 1.0)
    assert table.loc["spectral", "random"].better_than_plain == int(((k + 0.01) < (k + 0.05)).sum()) == 6
    verdict, text = claims.stability_claim(claims.stability_table(df))
    assert verdict == claims.MEASURED
    assert "**plain**: kGLM advantage held" in text and "**spectral**: kGLM advantage did not hold" in text


def test_the_convergence_note_reads_the_outcome_counts():
    df = _curves({"kglm": [0.1, 0.11], "random": [0.2, 0.21]}, converged=0.5)
    df["fwd_n_converged"], df["fwd_n_cap"], df["fwd_n_stalled"], df["fwd_n_nonfinite"] = 5, 2, 3, 0
    note = claims.convergence_note(claims.curves_table(df))
    assert "20% were still improving at the cap, 30% had stalled and 0% were non-finite" in note
