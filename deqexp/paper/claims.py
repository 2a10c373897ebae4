"""The report's tables and claim checks: pure pandas, no files (``deqexp report`` writes them).

A claim check returns ``(verdict, text)``. The verdict is one of :data:`VERDICTS`: ``held`` and
``did not hold`` need a paired one-sided sign test at level :data:`ALPHA` (seeds are the pairs:
the same data); short of it the claim is ``inconclusive`` (e.g. 3 seeds reach at best
p = 0.125), and ``inconclusive (bound)`` when the verdict would rest on a best scale at the
edge of the sweep grid. ``measured`` is a measurement with no pass/fail (E5). A diverged seed
counts as an infinite loss: it loses every comparison and makes its mean infinite (the mean
over the seeds that finished is given beside it). ``text`` gives the numbers, the number of
seeds and p, and whether the fixed point was reached.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

HELD, NOT_HELD, INCONCLUSIVE, BOUND, MEASURED = (
    "held", "did not hold", "inconclusive", "inconclusive (bound)", "measured")
VERDICTS = (HELD, NOT_HELD, INCONCLUSIVE, BOUND, MEASURED)
ALPHA = 0.05  # one-sided level of the paired sign test
Verdict = tuple[str, str]


def _loss(values: pd.Series) -> pd.Series:
    """Test losses with NaN/inf (diverged) as +inf, so that they lose every comparison."""
    return values.where(np.isfinite(values), np.inf)


def _diverged(rows: pd.DataFrame) -> pd.Series:
    """Rows of a diverged member: marked so, or with a NaN/inf test loss."""
    return (rows.status != "ok") | ~np.isfinite(rows.test_loss)


def reported_epochs(last: int) -> list[int]:
    return sorted({0, last // 8, last // 4, last // 2, last})


# --------------------------------------------------------------------------- paired comparisons
def sign_test(wins: int, losses: int) -> float:
    """One-sided exact sign test (scipy's ``binomtest``): the chance of ``wins`` or more wins in
    ``wins + losses`` fair coin flips (ties are dropped); 1 when there is nothing to compare."""
    from scipy.stats import binomtest

    n = wins + losses
    return float(binomtest(wins, n, 0.5, alternative="greater").pvalue) if n else 1.0


@dataclass
class Paired:
    """``base`` against ``other``, seed by seed: wins, losses, ties and both one-sided p."""

    seeds: int
    wins: int
    losses: int

    @property
    def rate(self) -> float:
        return self.wins / self.seeds if self.seeds else math.nan

    @property
    def p(self) -> float:
        """p that base is not better (small: base wins significantly)."""
        return sign_test(self.wins, self.losses)

    @property
    def p_other(self) -> float:
        return sign_test(self.losses, self.wins)

    def verdict(self) -> str:
        return HELD if self.p <= ALPHA else NOT_HELD if self.p_other <= ALPHA else INCONCLUSIVE

    def describe(self, base: str = "kglm") -> str:
        best = 0.5**self.seeds if self.seeds else 1.0
        reach = "" if best <= ALPHA else f"; {self.seeds} seeds can reach p = {best:.3g} at best"
        return (f"{base} better in {self.wins} of {self.seeds} paired seeds "
                f"(one-sided sign test p = {self.p:.3g}{reach})")


def paired(a: pd.Series, b: pd.Series) -> Paired:
    """Compare two per-seed loss series (index: seed) on their common seeds; NaN/inf lose."""
    common = a.index.intersection(b.index)
    x, y = _loss(a[common]), _loss(b[common])
    return Paired(len(common), int((x < y).sum()), int((x > y).sum()))


# --------------------------------------------------------------------------- E1 and E6
def paired_at(df: pd.DataFrame, epoch: int, other: str, base: str = "kglm") -> Paired:
    """``base`` against ``other`` at ``epoch``, seed by seed."""
    at = df[df.epoch == epoch]
    return paired(at[at.init == base].set_index("seed").test_loss,
                  at[at.init == other].set_index("seed").test_loss)


def paired_wins(df: pd.DataFrame, epoch: int, other: str, base: str = "kglm") -> float:
    """Fraction of seeds in which ``base`` has a lower test loss than ``other`` at ``epoch``."""
    return paired_at(df, epoch, other, base).rate


def curves_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per init and reported epoch: test loss min / mean / max over seeds (a diverged seed is
    +inf; ``mean_finished`` leaves it out), diverged members, the forward solver's mean relative
    residual and converged fraction, mean ||W||_2, the mean and largest Jacobian norm of the
    fixed-point map at z* (when logged), and for the other inits the fraction of seeds that
    kglm beats (paired), the sign test's p and whether the seed ranges overlap kglm's."""
    rows = []
    for e in reported_epochs(int(df.epoch.max())):
        at = df[df.epoch == e]
        kglm = _loss(at[at.init == "kglm"].test_loss)
        for init, g in at.groupby("init", sort=False):
            dead = _diverged(g)
            v = g.test_loss.where(~dead, np.inf)
            row = {"init": init, "epoch": e, "seeds": len(v), "min": v.min(), "mean": v.mean(),
                   "mean_finished": v[~dead].mean(), "max": v.max(), "diverged": int(dead.sum()),
                   "fwd_residual": g.fwd_residual.mean(), "converged_frac": g.converged_frac.mean(),
                   "op_norm_W": g.op_norm_W.mean(), **_jacobian_stats(g), **_outcome_stats(g)}
            if init != "kglm" and len(kglm):
                cmp = paired_at(df, e, init)
                row.update(kglm_beats=cmp.rate, pairs=cmp.seeds, wins=cmp.wins, losses=cmp.losses,
                           sign_p=cmp.p, overlaps_kglm=bool(v.min() <= kglm.max() and kglm.min() <= v.max()))
            rows.append(row)
    return pd.DataFrame(rows)


def has_jacobian(df: pd.DataFrame) -> bool:
    """Whether the runs logged jac_norm (older runs, or trainer.jac_samples=0, did not)."""
    return "jac_norm" in df and bool(df.jac_norm.notna().any())


def _jacobian_stats(g: pd.DataFrame) -> dict:
    """Mean and largest jac_norm of a group of rows (nothing for runs that did not log it)."""
    if not has_jacobian(g):
        return {}
    return {"jac_norm": g.jac_norm.mean(), "jac_norm_max": g.jac_norm.max()}


def _outcome_stats(g: pd.DataFrame) -> dict:
    """Shares of the forward solves that hit the cap, stalled or went non-finite (runs that
    logged the outcome counts; older runs give nothing)."""
    if "fwd_n_cap" not in g or not bool(g.fwd_n_cap.notna().any()):
        return {}
    return {f"fwd_{o}": outcome_share(g, "fwd", o) for o in ("cap", "stalled", "nonfinite")}


def _outcomes_text(row) -> str:
    if "fwd_stalled" not in row or not np.isfinite(row["fwd_stalled"]):
        return ""
    return (f"; of its test samples {row['fwd_cap']:.0%} were still improving at the cap, "
            f"{row['fwd_stalled']:.0%} had stalled and {row['fwd_nonfinite']:.0%} were non-finite")


def stability_note(table: pd.DataFrame) -> str:
    """A sentence on the fixed-point map's Jacobian norm per init at the last epoch: below 1
    the map is a local contraction at the solution (the stability the paper's claim is about)."""
    if "jac_norm" not in table:
        return ""
    last = table[table.epoch == table.epoch.max()]
    parts = [f"{r.init} {r.jac_norm:.3g} (max {r.jac_norm_max:.3g})" for r in last.itertuples()]
    return ("Jacobian norm of the fixed-point map at the solver's z (z* where it converged), "
            "||J_f(z)||_2, mean over seeds at the last epoch (< 1: locally contractive): "
            + "; ".join(parts) + ".")


def convergence_note(table: pd.DataFrame, where: str = "epoch") -> str:
    """A sentence saying whether the forward solves reached their tolerance."""
    worst = table.loc[table.converged_frac.idxmin()]
    if worst.converged_frac >= 1.0:
        return "The forward solves reached their tolerance everywhere (converged fraction 1)."
    return (f"The DEQ was NOT at its fixed point: the forward solver stopped at its iteration "
            f"cap with converged fraction as low as {worst.converged_frac:.2g} ({worst.init}, "
            f"{where} {worst[where]:.3g}, mean relative residual {worst.fwd_residual:.2g}"
            f"{_outcomes_text(worst)}); the "
            f"losses are those of the iterate it stopped at, and the implicit gradient was taken "
            f"at a point that is not a fixed point.")


def _mean_text(r) -> str:
    if not r["diverged"]:
        return f"{r['mean']:.4g}"
    return f"{r['mean']:.4g} ({int(r['diverged'])} diverged; the others {r['mean_finished']:.4g})"


def combine(verdicts: list[str]) -> str:
    """One verdict for a claim made against several competitors: held only if held against each."""
    if NOT_HELD in verdicts:
        return NOT_HELD
    return HELD if verdicts and all(v == HELD for v in verdicts) else INCONCLUSIVE


def curves_claim(table: pd.DataFrame) -> Verdict:
    """kglm beats every other init at the last epoch: it wins the paired seeds significantly
    (sign test), with a lower mean and no more diverged members; it did not hold when another
    init wins significantly or kglm diverged more; inconclusive otherwise."""
    last = table[table.epoch == table.epoch.max()].set_index("init")
    k = last.loc["kglm"]
    others = [i for i in last.index if i != "kglm"]
    verdicts, parts = [], [f"kglm {_mean_text(k)} (range {k['min']:.4g}-{k['max']:.4g})"]
    for o in others:
        r = last.loc[o]
        cmp = Paired(int(r["pairs"]), int(r["wins"]), int(r["losses"]))
        v = cmp.verdict()
        if k["diverged"] > r["diverged"]:
            v = NOT_HELD
        elif v == HELD and not k["mean"] < r["mean"]:
            v = INCONCLUSIVE
        verdicts.append(v)
        parts.append(f"{o} {_mean_text(r)} (range {r['min']:.4g}-{r['max']:.4g}; {cmp.describe()}, "
                     f"ranges {'overlap' if r['overlaps_kglm'] else 'do not overlap'})")
    return combine(verdicts), (
        f"final mean test loss over {int(k['seeds'])} seeds at epoch {int(k['epoch'])}: "
        + "; ".join(parts) + ". " + convergence_note(table) + (" " + stability_note(table)).rstrip())


def compare_curves(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Last-epoch mean test loss, converged fraction, residual and (when logged) Jacobian norm
    per init, one column group per variant (e.g. the authors' counting, one application fewer,
    solved to equilibrium)."""
    out = None
    for label, t in tables.items():
        last = t[t.epoch == t.epoch.max()].set_index("init")
        part = pd.DataFrame({f"{label}: mean": last["mean"], f"{label}: converged_frac": last.converged_frac,
                             f"{label}: residual": last.fwd_residual})
        if "jac_norm" in last:
            part[f"{label}: jac_norm"] = last.jac_norm
        out = part if out is None else out.join(part, how="outer")
    return out.reset_index()


def count_sensitivity(authors: pd.DataFrame, fewer: pd.DataFrame) -> tuple[float, str]:
    """Largest relative change of an init's mean test loss curve when each solve applies f once
    less; a converged solver gives ~0."""
    a = authors.groupby(["init", "epoch"]).test_loss.mean()
    b = fewer.groupby(["init", "epoch"]).test_loss.mean()
    rel = ((a - b).abs() / a.abs()).dropna()
    worst = rel.idxmax()
    last = int(authors.epoch.max())
    finals = "; ".join(f"{i} {a[(i, last)]:.4g} -> {b[(i, last)]:.4g}" for i in a.index.levels[0]
                       if (i, last) in a and (i, last) in b)
    return float(rel.max()), (f"with one application of f fewer per solve, the mean test loss "
                              f"changes by up to {rel.max():.1%} ({worst[0]}, epoch {worst[1]}); "
                              f"final epoch: {finals}")


# --------------------------------------------------------------------------- E2 and E3
def _seed_losses(g: pd.DataFrame) -> pd.DataFrame:
    """Rows with ``loss``: the test loss, +inf where the member diverged."""
    return g.assign(loss=g.test_loss.where(~_diverged(g), np.inf))


def unique_members(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (init, scale, seed, epoch): a grid that lists a scale twice (the paper's E2
    grid has 1.0 in both of its logspaces) trains the same member twice, with the same result."""
    return df.drop_duplicates(["init", "scale", "seed", "epoch"])


def best_scale_losses(df: pd.DataFrame, init: str, scale: float, epoch: int) -> pd.Series:
    """Per seed, an init's test loss (diverged: +inf) at one scale and epoch."""
    df = unique_members(df)
    g = df[(df.init == init) & (df.scale == scale) & (df.epoch == epoch)]
    return _seed_losses(g).set_index("seed").loss


def sweep_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per init and epoch: the best scale's mean test loss and its std over seeds (a diverged
    seed makes its scale's mean infinite, so such a scale is never the best), whether that
    scale is at the edge of the sweep grid, its converged fraction, the median over scales, the
    number of diverged runs and (when logged) the median Jacobian norm over runs and the share of
    runs where it is exactly 0."""
    df = unique_members(df)
    lo, hi = df.scale.min(), df.scale.max()
    rows = []
    for (init, epoch), g in df.groupby(["init", "epoch"], sort=False):
        per_scale = _seed_losses(g).groupby("scale").agg(
            mean=("loss", "mean"), std=("loss", "std"), converged=("converged_frac", "mean"))
        row = {"init": init, "epoch": epoch, "best_scale": math.nan, "best_mean_test_loss": math.nan,
               "best_std_over_seeds": math.nan, "best_at_grid_edge": False,
               "best_converged_frac": math.nan, "median_over_scales": math.nan}
        finite = per_scale[np.isfinite(per_scale["mean"])]
        if len(finite):  # a scale where a seed diverged has an infinite mean: never the best
            best = finite["mean"].idxmin()
            row.update(best_scale=best, best_mean_test_loss=per_scale.loc[best, "mean"],
                       best_std_over_seeds=per_scale.loc[best, "std"],
                       best_at_grid_edge=bool(best in (lo, hi)),
                       best_converged_frac=per_scale.loc[best, "converged"],
                       median_over_scales=per_scale["mean"].median())
        row.update(converged_frac=g.converged_frac.mean(),
                   diverged=int(_diverged(g).sum()), runs=len(g))
        if has_jacobian(g):
            zero = g.jac_norm == 0
            row.update(jac_norm_median=g.jac_norm.median(), jac_norm_zero=float(zero.mean()),
                       jac_norm_zero_converged=float((zero & (g.converged_frac == 1)).mean()))
        rows.append(row)
    return pd.DataFrame(rows)


def sweep_convergence(df: pd.DataFrame) -> pd.DataFrame:
    """Per init and scale at the last epoch: converged fraction, residual, Jacobian norm (when
    logged), diverged runs."""
    df = unique_members(df)
    last = df[df.epoch == df.epoch.max()]
    jac = {"jac_norm": ("jac_norm", "mean")} if has_jacobian(last) else {}
    return (last.groupby(["init", "scale"])
                .agg(converged_frac=("converged_frac", "mean"), fwd_residual=("fwd_residual", "mean"),
                     fwd_iters_mean=("fwd_iters_mean", "mean"), **jac,
                     diverged=("status", lambda s: int((s != "ok").sum())))
                .reset_index())


def sweep_claim(table: pd.DataFrame, df: pd.DataFrame) -> Verdict:
    """kglm's best scale beats random's, seed by seed (sign test) and on the mean, with no more
    diverged runs. A verdict that a best scale on the grid's edge could overturn (the loser's
    optimum may lie outside the grid) is ``inconclusive (bound)``; unconverged solves are said."""
    epoch = table.epoch.max()
    last = table[table.epoch == epoch].set_index("init")
    k, r = last.loc["kglm"], last.loc["random"]
    if math.isnan(k.best_scale) or math.isnan(r.best_scale):
        cmp = Paired(0, 0, 0)
    else:
        cmp = paired(best_scale_losses(df, "kglm", k.best_scale, epoch),
                     best_scale_losses(df, "random", r.best_scale, epoch))
    verdict, loser = cmp.verdict(), None
    if k.diverged > r.diverged:
        verdict = NOT_HELD
    elif verdict == HELD and not k.best_mean_test_loss < r.best_mean_test_loss:
        verdict = INCONCLUSIVE
    else:
        loser = {HELD: "random", NOT_HELD: "kglm"}.get(verdict)
    edges = [i for i in ("kglm", "random") if last.loc[i, "best_at_grid_edge"]]
    if (loser in edges) or (verdict == INCONCLUSIVE and edges):
        verdict = BOUND
    text = (f"final epoch, best scale: kglm {k.best_mean_test_loss:.4g} "
            f"(+/- {k.best_std_over_seeds:.2g}, scale {k.best_scale:.3g}) vs random "
            f"{r.best_mean_test_loss:.4g} (+/- {r.best_std_over_seeds:.2g}, scale "
            f"{r.best_scale:.3g}), {cmp.describe()}; median over scales kglm {k.median_over_scales:.4g} vs "
            f"random {r.median_over_scales:.4g}; diverged runs kglm {int(k.diverged)} vs "
            f"random {int(r.diverged)} of {int(k.runs)} each")
    if edges:
        text += (f". The best scale of {' and '.join(edges)} sits at the edge of the sweep grid: "
                 "its optimum may lie outside it, so its best loss is a bound, not a minimum")
    frac = table[table.epoch == table.epoch.max()].converged_frac.min()
    if frac < 1:
        text += (f". Not every solve reached its tolerance (mean converged fraction over scales "
                 f"as low as {frac:.2g}; per scale in the convergence table)")
    if "jac_norm_median" in last:
        text += (f". Jacobian norm of the fixed-point map at the solver's z, median over runs: kglm "
                 f"{k.jac_norm_median:.3g} vs random {r.jac_norm_median:.3g}. It is exactly 0 (a'' = 0 "
                 f"at every unit on the sampled test inputs) in {k.jac_norm_zero:.0%} of kglm and "
                 f"{r.jac_norm_zero:.0%} of random runs: with every solve converged (kglm "
                 f"{k.jac_norm_zero_converged:.0%}, random {r.jac_norm_zero_converged:.0%}) that is a "
                 f"dead layer, for ReLU z* = 0 and the output is the readout's input path alone; "
                 f"otherwise the solver stopped at its cap on a point where a'' = 0 (for ReLU, "
                 f"alternating between relu(U t) and 0)")
    return verdict, text


# --------------------------------------------------------------------------- E4
def agreement_table(df: pd.DataFrame) -> pd.DataFrame:
    return (df.groupby("init", sort=False)
              .agg(images=("image", "count"), msd_mean=("msd", "mean"), msd_max=("msd", "max"),
                   pixels_differ_mean=("pixels_differ", "mean"),
                   pixels_differ_max=("pixels_differ", "max"), iterations_max=("iterations", "max"),
                   converged_frac=("converged", "mean"))
              .reset_index())


def agreement_claim(table: pd.DataFrame) -> Verdict:
    t = table.set_index("init")
    k, r = t.loc["kglm"], t.loc["random"]
    held = bool(k.msd_max < 1e-10 and k.pixels_differ_max == 0 and r.msd_mean > 1e-3)
    return (HELD if held else NOT_HELD), (
        f"kglm: mean squared difference {k.msd_mean:.3g} (max {k.msd_max:.3g}), "
        f"{k.pixels_differ_max:.0f} pixels differ at most; random: {r.msd_mean:.3g}, "
        f"{r.pixels_differ_mean:.1f} pixels differ on average ({int(k.images)} images)")


# --------------------------------------------------------------------------- E5
def timing_table(df: pd.DataFrame) -> pd.DataFrame:
    med = df.groupby(["layer", "size", "init"]).seconds.median().unstack("init").reset_index()
    med["kglm/random"] = med["kglm"] / med["random"]
    return med.rename(columns={"kglm": "kglm_s", "random": "random_s"})


def timing_claim(table: pd.DataFrame) -> Verdict:
    """A measurement, not a pass/fail claim: the cost ratio at the largest size and how the
    kglm init's time grows with the size (log-log slope)."""
    parts = []
    for layer, g in table.groupby("layer"):
        row = g.loc[g["size"].idxmax()]
        sizes = np.log(g["size"].astype(float))
        slope = np.polyfit(sizes, np.log(g.kglm_s), 1)[0] if len(g) > 1 else math.nan
        parts.append(f"{layer} size {row['size']}: kglm {row.kglm_s * 1e3:.3g} ms vs random "
                     f"{row.random_s * 1e3:.3g} ms, ratio {row['kglm/random']:.3g}x; kglm time grows "
                     f"as size^{slope:.2f}")
    return MEASURED, "the kglm init against a random draw, median over trials: " + "; ".join(parts)


# --------------------------------------------------------------------------- stability (issue 18)
STABILISERS = ("plain", "jac_reg", "spectral", "monotone")


def stabiliser_of(cfg: dict) -> str:
    """Which stabiliser a run's resolved config switched on (conf/stabiliser/)."""
    recurrence = cfg.get("model", {}).get("recurrence", "free")
    if recurrence != "free":
        return recurrence
    return "jac_reg" if cfg.get("trainer", {}).get("jac_reg", {}).get("weight", 0) > 0 else "plain"


def outcome_share(g: pd.DataFrame, solve: str, outcome: str = "converged") -> float:
    """Share of a group's ``solve`` (fwd / bwd) samples that ended with ``outcome``, from the
    metrics' outcome counts (NaN for runs that did not log them)."""
    cols = [c for c in g.columns if c.startswith(f"{solve}_n_")]
    if not cols:
        return math.nan
    total = g[cols].sum().sum()
    return float(g[f"{solve}_n_{outcome}"].sum() / total) if total else math.nan


def stability_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per stabiliser and init at the last epoch: test loss over seeds (diverged: +inf), the
    forward and backward solves' converged shares and the forward's stalled share (from the
    outcome counts), the Jacobian norm, and for naive/random kglm's paired wins and sign test
    within that stabiliser; for each stabiliser but plain, how often it lowered the same
    init's and seed's loss against plain."""
    last = df[df.epoch == df.epoch.max()]
    plain = last[last.stabiliser == "plain"]
    rows = []
    for stab in [s for s in STABILISERS if s in set(last.stabiliser)]:
        at = last[last.stabiliser == stab]
        kglm = at[at.init == "kglm"].set_index("seed").test_loss
        for init, g in at.groupby("init", sort=False):
            dead = _diverged(g)
            row = {"stabiliser": stab, "init": init, "epoch": int(g.epoch.iloc[0]), "seeds": len(g),
                   "mean": g.test_loss.where(~dead, np.inf).mean(), "diverged": int(dead.sum()),
                   "fwd_converged": outcome_share(g, "fwd"),
                   "fwd_stalled": outcome_share(g, "fwd", "stalled"),
                   "bwd_converged": outcome_share(g, "bwd"), "jac_norm": g.jac_norm.mean()}
            if init != "kglm":
                cmp = paired(kglm, g.set_index("seed").test_loss)
                row.update(kglm_wins=cmp.wins, pairs=cmp.seeds, sign_p=cmp.p, kglm_advantage=cmp.verdict())
            if stab != "plain" and len(plain):
                base = plain[plain.init == init].set_index("seed").test_loss
                vs = paired(g.set_index("seed").test_loss, base)
                row.update(better_than_plain=vs.wins, vs_plain_pairs=vs.seeds, vs_plain_p=vs.p)
            rows.append(row)
    return pd.DataFrame(rows)


def stability_claim(table: pd.DataFrame) -> Verdict:
    """Measured, not a claim of the paper: per stabiliser, whether kglm still beats naive and
    random (paired sign test, as in E1), with the numbers behind it."""
    parts = []
    for stab, g in table.groupby("stabiliser", sort=False):
        g = g.set_index("init")
        others = [i for i in g.index if i != "kglm"]
        verdicts = [g.loc[o, "kglm_advantage"] for o in others]
        if "kglm" in g.index and g.loc["kglm", "diverged"] > max(g.loc[o, "diverged"] for o in others):
            verdicts.append(NOT_HELD)
        k = g.loc["kglm"]
        cmp = "; ".join(f"{o} {g.loc[o, 'mean']:.4g} (kglm better in {int(g.loc[o, 'kglm_wins'])} of "
                        f"{int(g.loc[o, 'pairs'])} seeds, p = {g.loc[o, 'sign_p']:.3g})" for o in others)
        fwd = ", ".join(f"{i} {g.loc[i, 'fwd_converged']:.0%}" for i in g.index)
        jac = ", ".join(f"{i} {g.loc[i, 'jac_norm']:.3g}" for i in g.index)
        parts.append(f"**{stab}**: kGLM advantage {combine(verdicts)}: kglm {k['mean']:.4g} vs {cmp}; "
                     f"forward solves converged {fwd}; ||J_f(z)||_2 {jac}")
    return MEASURED, ("final mean test loss per stabiliser, paired by seed within each. "
                      + ". ".join(parts) + ".")
