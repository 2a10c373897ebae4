"""`trainer.ensemble`: one job of E members writes what E separate runs would."""
import pandas as pd
import pytest

from tests.cli import deqexp

pytestmark = pytest.mark.slow
COMMON = ["logger=csv", "trainer.dtype=float64", "trainer.epochs=3", "trainer.batch_size=16",
          "dataset.n_train=48", "dataset.n_test=16", "dataset.length=30"]
COMPARED = ["train_loss", "test_loss", "fwd_iters_mean", "fwd_iters_max", "fwd_residual",
            "converged_frac", "bwd_iters_mean", "bwd_residual", "bwd_converged_frac", "op_norm_W",
            "op_norm_U", "jac_norm"]


def _separate(sweep):
    runs = {}
    for d in sweep.iterdir():
        if d.is_dir():
            df = pd.read_csv(d / "metrics.csv")
            runs[(df.init.iloc[0], int(df.seed.iloc[0]), str(df.scale.iloc[0]))] = df
    return runs


def _assert_same(member_rows, single):
    a = member_rows[COMPARED].reset_index(drop=True)
    b = single[COMPARED].reset_index(drop=True)
    assert ((a - b).abs().fillna(0) <= 1e-6).all().all(), (a - b).abs().max()


def test_ensemble_reproduces_separate_runs(tmp_path):
    ens = tmp_path / "ens"
    p = deqexp("train", *COMMON, "trainer.ensemble.inits=[kglm,random]", "trainer.ensemble.seeds=2",
               f"hydra.run.dir={ens}")
    assert p.returncode == 0, p.stderr
    sweep = tmp_path / "sep"
    p = deqexp("train", "-m", *COMMON, "init=kglm,random", "trainer.seed=0,1",
               f"hydra.sweep.dir={sweep}")
    assert p.returncode == 0, p.stderr
    separate = _separate(sweep)
    assert len(separate) == 4
    df = pd.read_csv(ens / "metrics.csv")
    assert sorted(df.member.unique()) == [0, 1, 2, 3]
    for (init, seed, _), single in separate.items():
        rows = df[(df.init == init) & (df.seed == seed)]
        assert len(rows) == 4
        _assert_same(rows, single)


def test_diverging_member_does_not_change_the_others(tmp_path):
    ens = tmp_path / "ens"
    p = deqexp("train", *COMMON, "family=gaussian", "init=random", "trainer.ensemble.scales=[0.5,1e15]",
               f"hydra.run.dir={ens}")
    assert p.returncode == 0, p.stderr
    single = tmp_path / "single"
    p = deqexp("train", *COMMON, "family=gaussian", "init=random", "init.scale=0.5",
               f"hydra.run.dir={single}")
    assert p.returncode == 0, p.stderr
    df = pd.read_csv(ens / "metrics.csv")
    assert df[df.member == 1].status.iloc[-1] == "diverged"
    assert (df[df.member == 0].status == "ok").all()
    _assert_same(df[df.member == 0], pd.read_csv(single / "metrics.csv"))
