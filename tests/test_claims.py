"""The report's claim logic on synthetic metrics: an inverted or weakened claim must fail."""
import math

import numpy as np
import pandas as pd

from deqexp import claims


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


def test_curves_claim_holds_only_when_kglm_wins_paired_seeds():
    good = claims.curves_table(_curves({"kglm": [0.1, 0.2, 0.3], "random": [0.2, 0.3, 0.4]}))
    assert claims.curves_claim(good)[0] is True
    inverted = claims.curves_table(_curves({"kglm": [0.2, 0.3, 0.4], "random": [0.1, 0.2, 0.3]}))
    assert claims.curves_claim(inverted)[0] is False
    # kglm's mean is lower (one lucky seed) but it loses 2 of 3 paired seeds: not held
    lucky = claims.curves_table(_curves({"kglm": [0.01, 0.31, 0.41], "random": [0.2, 0.3, 0.4]}))
    row = lucky[(lucky.init == "random") & (lucky.epoch == 8)].iloc[0]
    assert row.kglm_beats == 1 / 3 and bool(row.overlaps_kglm)
    assert claims.curves_claim(lucky)[0] is False
    # a diverged kglm seed loses its comparison and counts against the claim
    diverged = claims.curves_table(_curves({"kglm": [0.1, 0.2, math.nan], "random": [0.2, 0.3, 0.4]}))
    assert claims.curves_claim(diverged)[0] is False
    # ... and a diverged competitor loses its comparison with kglm
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


def _sweep(best_k, best_r, scales=(0.01, 0.1, 1.0, 10.0), seeds=2, diverged_r=0):
    rows = []
    for init, best in (("kglm", best_k), ("random", best_r)):
        for s in scales:
            for seed in range(seeds):
                loss = 0.01 * (1 + abs(np.log10(s) - np.log10(best)))
                dead = init == "random" and s == scales[-1] and seed < diverged_r
                rows.append({"init": init, "epoch": 1, "scale": s, "seed": seed,
                             "test_loss": math.nan if dead else loss, "status": "diverged" if dead else "ok",
                             "converged_frac": 1.0, "fwd_residual": 1e-3, "fwd_iters_mean": 5})
    return pd.DataFrame(rows)


def test_sweep_claim_and_grid_edge():
    df = _sweep(1.0, 0.01)
    table = claims.sweep_table(df)
    k = table.set_index("init").loc["kglm"]
    r = table.set_index("init").loc["random"]
    assert k.best_scale == 1.0 and not k.best_at_grid_edge
    assert r.best_scale == 0.01 and r.best_at_grid_edge
    held, text = claims.sweep_claim(table)
    assert held is False  # equal best losses: kglm does not beat random
    assert "edge of the sweep grid" in text
    better = _sweep(1.0, 0.1)
    better.loc[better.init == "random", "test_loss"] *= 2
    assert claims.sweep_claim(claims.sweep_table(better))[0] is True
    worse = _sweep(1.0, 0.1)
    worse.loc[worse.init == "kglm", "test_loss"] *= 2
    assert claims.sweep_claim(claims.sweep_table(worse))[0] is False
    # kglm ahead on loss but with more diverged runs: not held
    dead = _sweep(1.0, 0.1, diverged_r=0)
    dead.loc[dead.init == "random", "test_loss"] *= 2
    dead.loc[(dead.init == "kglm") & (dead.scale == 10.0), ["test_loss", "status"]] = [math.nan, "diverged"]
    assert claims.sweep_claim(claims.sweep_table(dead))[0] is False


def test_sweep_jacobian_norm_median_and_collapsed_share():
    df = _sweep(1.0, 0.1)
    assert "Jacobian" not in claims.sweep_claim(claims.sweep_table(df))[1]
    # kglm: J = 0 at the two smallest scales (4 of 8 runs), scale itself above; random: 2 x scale
    df["jac_norm"] = np.where(df.init == "kglm", np.where(df.scale < 1, 0.0, df.scale), 2 * df.scale)
    table = claims.sweep_table(df).set_index("init")
    assert table.loc["kglm", "jac_norm_zero"] == 0.5 and table.loc["random", "jac_norm_zero"] == 0
    assert table.loc["kglm", "jac_norm_median"] == 0.5 and table.loc["random", "jac_norm_median"] == 1.1
    text = claims.sweep_claim(claims.sweep_table(df))[1]
    assert "median over runs: kglm 0.5 vs random 1.1" in text
    assert "inputs) in 50% of kglm and 0% of random runs" in text
    assert "(kglm 50%, random 0%)" in text  # every solve converged in the synthetic runs
    df.loc[(df.init == "kglm") & (df.scale == 0.01), "converged_frac"] = 0.5
    assert "(kglm 25%, random 0%)" in claims.sweep_claim(claims.sweep_table(df))[1]
    conv = claims.sweep_convergence(df).set_index(["init", "scale"]).jac_norm
    assert conv[("random", 10.0)] == 20 and conv[("kglm", 0.1)] == 0


def test_timing_claim_states_the_ratio():
    df = pd.DataFrame([{"layer": "dense", "size": n, "init": i, "trial": 0,
                        "seconds": (3e-9 * n**3 if i == "kglm" else 1e-8 * n**2)}
                       for n in (100, 1000) for i in ("kglm", "random")])
    held, text = claims.timing_claim(claims.timing_table(df))
    assert held is None
    assert "ratio 300x" in text and "size^3.00" in text
