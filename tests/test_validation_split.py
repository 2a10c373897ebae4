"""The validation split (issue 26, item 5): held out of the training split by seed, evaluated
and logged as val_loss, the best parameters chosen on it, part of the run identity; and
`deqexp compare --select` choosing a swept key on it."""
import numpy as np
import pandas as pd
import pytest
import torch

from deqexp.data import seeds
from deqexp.data.datasets import DataError, load_dataset
from deqexp.data.splits import hold_out, validation_size
from deqexp.run.folder import RunFolder
from deqexp.run.identity import fingerprint, identify
from deqexp.run.runner import train_job
from deqexp.run.runs import evaluate_run, load_run
from deqexp.sweep.arms import CompareError
from deqexp.sweep.compare import run_compare
from tests.compose import compose_config
from tests.test_arrays import _sequences
from tests.test_compare import _config, _rows, write_run

SMALL = ["dataset.n_train=24", "dataset.n_test=8", "dataset.length=12", "trainer.epochs=3",
         "logger=csv", "logger.progress=false", "trainer.threads=1", "trainer.dtype=float64"]


def test_hold_out_moves_a_seeded_share_of_the_training_split():
    d = load_dataset("smooth", 3, n_train=40, n_test=5, length=8)
    a, b = hold_out(d, 0.25, 3), hold_out(d, 0.25, 3)
    assert len(a.val_input) == validation_size(40, 0.25) == 10 and len(a.train_input) == 30
    assert torch.equal(a.val_input, b.val_input)  # the same seed, the same split
    order = torch.randperm(40, generator=torch.Generator().manual_seed(3 + seeds.VALIDATION))
    assert torch.equal(a.val_input, d.train_input[order[:10]])
    assert torch.equal(a.train_target, d.train_target[order[10:]])
    assert not torch.equal(hold_out(d, 0.25, 4).val_input, a.val_input)  # another seed, another split
    assert torch.equal(a.test_input, d.test_input)
    assert validation_size(3, 0.99) == 2 and validation_size(10, 0.01) == 1


def test_a_run_logs_val_loss_chooses_its_best_on_it_and_reloads_it(tmp_path):
    cfg = compose_config(*SMALL, "dataset.val_fraction=0.25", "optim.lr=0.05")
    summary = train_job(cfg, RunFolder(tmp_path, *identify(cfg)))
    rows = pd.read_csv(tmp_path / "metrics.csv")
    assert list(rows.columns[6:8]) == ["test_loss", "val_loss"] and rows.val_loss.notna().all()
    (m,) = summary["members"]
    best = rows.loc[rows.val_loss.idxmin()]
    assert (m["best_val_epoch"], m["best_val_loss"], m["test_loss_at_best_val"]) == (
        best.epoch, pytest.approx(best.val_loss), pytest.approx(best.test_loss))
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert saved["best_epoch"] == [m["best_val_epoch"]]
    again = evaluate_run(load_run(tmp_path, "best"))  # the same split, rebuilt from the seed
    assert again[0]["val_loss"] == pytest.approx(best.val_loss, rel=1e-10)
    assert again[0]["test_loss"] == pytest.approx(best.test_loss, rel=1e-10)


def test_the_split_is_part_of_the_identity_and_checked():
    plain = compose_config(*SMALL)
    assert fingerprint(plain) == fingerprint(compose_config(*SMALL, "dataset.val_fraction=0"))
    assert fingerprint(plain) != fingerprint(compose_config(*SMALL, "dataset.val_fraction=0.2"))


def test_a_files_own_validation_split_is_used_and_not_split_twice(tmp_path):
    data = _sequences()
    data["val_input"], data["val_target"] = data["test_input"][:4] + 1, data["test_target"][:4]
    np.savez(tmp_path / "my.npz", **data)
    d = load_dataset("arrays", 0, path=str(tmp_path / "my.npz"))
    assert np.allclose(d.val_input.numpy(), data["val_input"])
    with pytest.raises(DataError, match="has its own validation split.*dataset.val_fraction=0"):
        hold_out(d, 0.2, 0, "arrays")
    del data["val_target"]
    np.savez(tmp_path / "half.npz", **data)
    with pytest.raises(DataError, match="'val_input' is given without 'val_target'"):
        load_dataset("arrays", 0, path=str(tmp_path / "half.npz"))


def _scale_sweep(root, with_val=True):
    """kglm and random over scales 0.5 and 2 and 6 seeds: validation prefers scale 2 for kglm
    and 0.5 for random, test the other way round (a planted disagreement)."""
    for init, val_pick in (("kglm", 2.0), ("random", 0.5)):
        for scale in (0.5, 2.0):
            for seed in range(6):
                rows = _rows(0, init, seed, 1.0 + 0.1 * seed + (0.0 if scale != val_pick else 0.5))
                for r in rows:
                    r["scale"] = scale
                    if with_val:
                        r["val_loss"] = r["test_loss"] - (1.0 if scale == val_pick else 0.0)
                cfg = _config(init, seed)
                cfg["init"]["scale"] = scale
                write_run(root / f"{init}-{scale}-{seed}", cfg, rows)
    return root


def test_select_chooses_each_arms_scale_on_validation_and_reports_test(tmp_path):
    root = _scale_sweep(tmp_path)
    on_val = run_compare([root], by=["init.name", "init.scale"], metrics=["final_test_loss"],
                         select_key="init.scale", select_on="val")
    assert on_val.arm_keys == ["init.name"] and len(on_val.units) == 12
    assert dict(zip(on_val.units.arm, on_val.units["init.scale"])) == {"kglm": 2.0, "random": 0.5}
    assert on_val.selected[0].startswith("kglm: init.scale=2.0")
    on_test = run_compare([root], by=["init.name", "init.scale"], metrics=["final_test_loss"],
                          select_key="init.scale", select_on="test")
    assert dict(zip(on_test.units.arm, on_test.units["init.scale"])) == {"kglm": 0.5, "random": 2.0}


def test_select_on_val_without_a_validation_split_is_refused(tmp_path):
    root = _scale_sweep(tmp_path, with_val=False)
    with pytest.raises(CompareError, match="--select-on val: these runs have no validation split"):
        run_compare([root], by=["init.name", "init.scale"], select_key="init.scale")


def test_the_best_parameters_and_the_summary_follow_validation_not_test():
    from omegaconf import OmegaConf

    from deqexp.run.checkpoints import LoopState
    from deqexp.run.train import summarise

    model = torch.nn.Linear(1, 1, bias=False)
    state = LoopState.start(model, torch.ones(1, dtype=torch.bool))
    test, val = [3.0, 1.0, 0.5], [2.0, 0.7, 0.9]  # test is best at the last epoch, val at epoch 1
    for epoch, (t, v) in enumerate(zip(test, val)):
        with torch.no_grad():
            model.weight.fill_(10.0 + epoch)
        state.evaluated_at(epoch, model, [t], [v])
    assert float(state.best["weight"]) == 11.0 and state.val_history == [[v] for v in val]

    class Member:
        index, seed = 0, 0
        spec = OmegaConf.create({"name": "kglm", "scale": None})

    (m,) = summarise([Member()], state.history, state.evaluated, state.alive, 0.0,
                     state.val_history)["members"]
    assert (m["best_val_epoch"], m["best_val_loss"], m["test_loss_at_best_val"]) == (1, 0.7, 1.0)
    assert (m["best_epoch"], m["best_test_loss"]) == (2, 0.5)


def test_runs_made_before_the_split_existed_keep_their_fingerprint():
    from omegaconf import OmegaConf

    now = compose_config(*SMALL)
    before = OmegaConf.to_container(now, resolve=True)
    del before["dataset"]["val_fraction"]
    assert fingerprint(before) == fingerprint(now)
