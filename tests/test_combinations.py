"""Options crossed: solver x gradient x stabiliser x init x model x (eval_every, resume,
ensemble), every pair of levels in at least one tiny run (a greedy all-pairs design, seeded;
the pairs deqexp refuses, e.g. a spectral W on a conv model, are left out and checked as
refusals). Each run checks the invariants that hold for every combination:

- every logged result is finite or recorded as diverged;
- a run resumed from a checkpoint ends exactly as an uninterrupted one;
- the identity changes exactly when a result-changing key changes (not with threads or logger);
- the settings reach the model: the run's losses differ from the default run's.
"""
import itertools
import random

import numpy as np
import pandas as pd
import pytest

from deqexp.run.folder import RunFolder
from deqexp.run.identity import fingerprint
from deqexp.run.runner import train_job
from deqexp.run.schemas import ConfigError
from deqexp.run.validation import validate
from tests.compose import compose_config
from tests.helpers import train_until_interrupted

FACTORS = {
    "solver": ["forward", "anderson", "broyden"],
    "gradient": ["implicit", "unrolled", "onestep"],
    "stabiliser": ["plain", "jac_reg", "spectral", "monotone"],
    "init": ["kglm", "naive", "random"],
    "model": ["dense", "conv"],
    "mode": ["plain", "eval_every", "resume", "ensemble"],
}
DEFAULTS = {"solver": "anderson", "gradient": "implicit", "stabiliser": "plain", "init": "kglm",
            "model": "dense", "mode": "plain"}
# what deqexp refuses, by design: the stabilisers that parametrise a dense W on conv filters, and
# differentiating through iterations that are not differentiable (the monotone layer's splitting;
# Anderson's and Broyden's in-place histories: this test found those crashing)
REFUSED = [({"stabiliser": "spectral", "model": "conv"}, "model.recurrence=spectral parametrises a dense W"),
           ({"stabiliser": "monotone", "model": "conv"}, "model.recurrence=monotone parametrises a dense W"),
           ({"stabiliser": "monotone", "gradient": "unrolled"}, "Peaceman-Rachford splitting"),
           ({"solver": "anderson", "gradient": "unrolled"}, "solver.forward.name=anderson computes in place"),
           ({"solver": "broyden", "gradient": "unrolled"}, "solver.forward.name=broyden computes in place")]
DATA = {"dense": ["dataset.n_train=24", "dataset.n_test=8", "dataset.length=10"],
        "conv": ["dataset=images", "model=conv", "family=relu", "dataset.n_train=4", "dataset.n_test=2",
                 "dataset.patch=8", "trainer.batch_size=2"]}
MODES = {"plain": [], "eval_every": ["trainer.eval_every=2"], "resume": [],
         "ensemble": ["trainer.ensemble.seeds=2"]}
RUN = ["trainer.epochs=3", "trainer.checkpoint_every=1", "logger=csv", "logger.progress=false",
       "solver.forward.on_failure=ignore", "solver.backward.on_failure=ignore"]


def _allowed(combo: dict) -> bool:
    return not any(all(combo.get(k) == v for k, v in bad.items()) for bad, _ in REFUSED)


def all_pairs(seed: int = 0) -> list[dict]:
    """Allowed combinations that cover every allowed pair of levels of two factors: each step
    takes, of 200 random allowed candidates, the one that covers most pairs not yet covered."""
    rng, names = random.Random(seed), list(FACTORS)
    pairs = lambda c: {(a, c[a], b, c[b]) for a, b in itertools.combinations(names, 2)}  # noqa: E731
    every = {p for c in itertools.product(*FACTORS.values()) if _allowed(d := dict(zip(names, c)))
             for p in pairs(d)}
    chosen = []
    while every:
        candidates = [dict(zip(names, (rng.choice(FACTORS[n]) for n in names))) for _ in range(200)]
        best = max((c for c in candidates if _allowed(c)), key=lambda c: len(pairs(c) & every))
        if not pairs(best) & every:
            continue
        chosen.append(best)
        every -= pairs(best)
    return chosen


COMBOS = all_pairs()


def overrides(combo: dict) -> list[str]:
    return [f"solver={combo['solver']}", f"solver.backward.gradient={combo['gradient']}",
            f"stabiliser={combo['stabiliser']}", f"init={combo['init']}", *DATA[combo["model"]],
            *MODES[combo["mode"]], *RUN]


def _train(tmp_path, name, combo):
    cfg = compose_config(*overrides(combo))
    folder = RunFolder(tmp_path / name, fingerprint(cfg))
    summary = train_job(cfg, folder)
    return cfg, summary, pd.read_csv(folder.path / "metrics.csv")


@pytest.fixture(scope="module")
def default_runs(tmp_path_factory):
    """The default run on each model's data: what every combination's losses must differ from."""
    return {m: _train(tmp_path_factory.mktemp("default"), m, {**DEFAULTS, "model": m})[2] for m in DATA}


def test_the_design_covers_every_allowed_pair_in_few_runs():
    assert 16 <= len(COMBOS) <= 24  # stabiliser x mode alone needs 16
    assert all(_allowed(c) for c in COMBOS)


@pytest.mark.parametrize("bad, says", REFUSED)
def test_the_left_out_pairs_are_refused_with_one_line(bad, says):
    with pytest.raises(ConfigError, match=says):
        validate(compose_config(*overrides({**DEFAULTS, **bad})))


@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: "-".join(c.values()))
def test_each_combination_keeps_the_invariants(combo, default_runs, tmp_path, monkeypatch):
    cfg, summary, df = _train(tmp_path, "whole", combo)
    # finite, or recorded as diverged
    ok = df[df.status == "ok"]
    assert np.isfinite(ok.test_loss).all()
    assert {m["status"] for m in summary["members"]} <= {"completed", "diverged"}
    assert sorted(df.epoch.unique()) == ([0, 2, 3] if combo["mode"] == "eval_every" else [0, 1, 2, 3])
    # the identity follows the result keys only
    same = compose_config(*overrides(combo), "trainer.threads=1", "logger=none")
    assert fingerprint(same) == fingerprint(cfg)
    default = compose_config(*overrides({**DEFAULTS, "model": combo["model"]}))
    assert (fingerprint(default) == fingerprint(cfg)) == (combo == {**DEFAULTS, "model": combo["model"]})
    # the settings reach the model
    if combo != {**DEFAULTS, "model": combo["model"]}:
        base = default_runs[combo["model"]]
        assert not np.array_equal(df.groupby("epoch").test_loss.mean().to_numpy(),
                                  base.groupby("epoch").test_loss.mean().to_numpy())
    if combo["mode"] == "resume":  # stopped as epoch 3 starts, resumed: the same numbers
        folder = RunFolder(tmp_path / "resumed", fingerprint(cfg))
        train_until_interrupted(monkeypatch, cfg, folder, 3)
        monkeypatch.undo()
        train_job(cfg, folder)
        again = pd.read_csv(folder.path / "metrics.csv")
        cols = ["epoch", "train_loss", "test_loss", "fwd_iters_mean", "op_norm_W", "jac_norm"]
        assert np.allclose(again[cols], df[cols], rtol=1e-12, atol=1e-14, equal_nan=True)
