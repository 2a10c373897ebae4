"""dataset=arrays: a user's own data from an .npz file or a folder of .npy files."""
import re

import numpy as np
import pandas as pd
import pytest
import torch

from deqexp.data import DataError, arrays
from deqexp.run.folder import RunFolder
from deqexp.run.runner import train_job
from tests.compose import compose_config


def _sequences(n=40, length=12, m=6):
    rng = np.random.default_rng(0)
    x = np.linspace(0, 3, length)
    sig = np.sin(x[None] + rng.uniform(0, 6, (n, 1)))
    return {"train_input": sig[:30], "train_target": sig[:30, :m] * 0.5,
            "test_input": sig[30:], "test_target": sig[30:, :m] * 0.5,
            "x_in": x[:, None], "x_out": x[:m, None] + 0.1}


def _images():
    rng = np.random.default_rng(1)
    clean = rng.uniform(0, 1, (14, 2, 8, 8))
    noisy = np.clip(clean + 0.1 * rng.normal(size=clean.shape), 0, 1)
    return {"train_input": noisy[:10], "train_target": clean[:10],
            "test_input": noisy[10:], "test_target": clean[10:]}


def _run(tmp_path, path, *overrides):
    cfg = compose_config("dataset=arrays", f"dataset.path={path}", "logger=csv", "logger.progress=false",
                         "trainer.epochs=2", *overrides)
    out = tmp_path / "run"
    out.mkdir()
    summary = train_job(cfg, RunFolder(out, "x"))
    return summary, pd.read_csv(out / "metrics.csv")


def test_sequences_from_an_npz_train_a_dense_deq_at_the_given_locations(tmp_path):
    data = _sequences()
    np.savez(tmp_path / "seq.npz", **data)
    loaded = arrays(0, str(tmp_path / "seq.npz"))
    assert loaded.x_out.shape == (6, 1) and float(loaded.x_out[0, 0]) == pytest.approx(0.1)
    summary, df = _run(tmp_path, tmp_path / "seq.npz", "family=gaussian", "kernel=se")
    assert summary["members"][0]["status"] == "completed" and df.epoch.max() == 2
    assert df.test_loss.iloc[-1] < df.test_loss.iloc[0]


def test_images_from_a_folder_of_npy_train_a_conv_deq(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for key, value in _images().items():
        np.save(folder / f"{key}.npy", value)
    summary, df = _run(tmp_path, folder, "model=conv", "family=relu", "trainer.batch_size=5",
                       "init.scale=0.5")
    assert summary["members"][0]["status"] == "completed" and np.isfinite(df.test_loss).all()


def _broken(name):
    d = _sequences()
    if name == "missing key":
        del d["test_target"]
    elif name == "1-D input":
        d["train_input"] = d["train_input"][:, 0]
    elif name == "sample counts":
        d["train_target"] = d["train_target"][:-1]
    elif name == "split lengths":
        d["test_input"] = d["test_input"][:, :-1]
    elif name == "nan":
        d["test_input"] = d["test_input"].copy()
        d["test_input"][0, 0] = np.nan
    elif name == "strings":
        d["train_target"] = d["train_target"].astype(str)
    elif name == "x_in length":
        d["x_in"] = d["x_in"][:-1]
    elif name == "x_out missing":
        del d["x_out"]
    elif name == "image target shape":
        d = _images()
        d["train_target"] = d["train_target"][:, :1]
    elif name == "1-D target":
        d["train_target"] = d["train_target"][:, 0]
    elif name == "complex":
        d["train_input"] = d["train_input"] * (1 + 1j)
    elif name == "no values":
        d["train_input"], d["test_input"] = d["train_input"][:, :0], d["test_input"][:, :0]
    return d


@pytest.mark.parametrize("name, says", [
    ("missing key", "'test_target' is missing"), ("1-D input", "'train_input' has shape"),
    ("sample counts", "'train_input' has 30 samples but 'train_target' has 29"),
    ("split lengths", "'test_input' samples are"), ("nan", "'test_input' contains NaN"),
    ("strings", "'train_target' has dtype"), ("x_in length", "'x_in' has shape"),
    ("x_out missing", "'x_out'"), ("image target shape", "image targets must have the inputs' shape"),
    ("1-D target", "'train_target' has shape (30,); sequence targets are (N, m)"),
    ("complex", "'train_input' is complex"), ("no values", "hold no values per sample"),
])
def test_malformed_files_name_the_key(tmp_path, name, says):
    np.savez(tmp_path / "bad.npz", **_broken(name))
    with pytest.raises(DataError, match=re.escape(says)):
        arrays(0, str(tmp_path / "bad.npz"))


def test_a_single_npy_file_is_refused_with_the_two_forms_that_work(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, 3)))
    with pytest.raises(DataError, match=r"single .npy file; give an .npz file .* or a folder"):
        arrays(0, str(tmp_path / "x.npy"))


@pytest.mark.parametrize("overrides, says", [
    (["dataset.n_train=31"], r"dataset.n_train=31, but the data have 30 train samples; use at most 30"),
    (["dataset.n_test=11"], r"dataset.n_test=11, but the data have 10 test samples"),
    (["dataset.loss=bce"], r"dataset.loss=bce needs targets in \[0, 1\].*spans \[-0.5"),
])
def test_data_the_run_cannot_use_is_refused_before_training(tmp_path, overrides, says):
    np.savez(tmp_path / "d.npz", **_sequences())
    with pytest.raises(DataError, match=says):
        _run(tmp_path, tmp_path / "d.npz", "family=gaussian", *overrides)
    assert not (tmp_path / "run" / "metrics.csv").exists()


def test_values_beyond_float32_are_a_data_error_not_a_divergence(tmp_path):
    d = _sequences()
    d["train_input"] = d["train_input"] * 1e200
    np.savez(tmp_path / "big.npz", **d)
    with pytest.raises(DataError, match=r"train_input has values up to .*e\+200, beyond float32's range"
                                        r".*trainer.dtype=float64"):
        _run(tmp_path, tmp_path / "big.npz", "family=gaussian")


def test_unreadable_or_missing_files(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="not a readable"):
        arrays(0, str(tmp_path / "junk.npz"))
    with pytest.raises(DataError, match="dataset.path"):
        arrays(0, None)


def _clean_images(n_train=6, n_test=4, size=12):
    rng = np.random.default_rng(3)
    return {"train_target": rng.uniform(0, 1, (n_train, 3, size, size)),
            "test_target": rng.uniform(0, 1, (n_test, 3, size, size))}


def test_a_paper_preset_runs_on_your_clean_images_with_its_corruption(tmp_path):
    clean = _clean_images()
    np.savez(tmp_path / "clean.npz", **clean)
    path = f"dataset.path={tmp_path / 'clean.npz'}"
    cfg = compose_config("experiment=paper/e2_smoke", "dataset=arrays", path)
    assert cfg.dataset.corruption == "noise" and cfg.dataset.noise_std == 0.2  # the preset's
    d = arrays(0, str(tmp_path / "clean.npz"), corruption="noise", noise_std=0.2)
    # additive N(0, 0.2^2) noise drawn from the seed's generator, clipped to [0, 1]
    gen = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        y = torch.as_tensor(clean[f"{split}_target"])
        want = (y + 0.2 * torch.randn(y.shape, generator=gen, dtype=y.dtype)).clamp(0, 1)
        assert torch.allclose(getattr(d, f"{split}_input"), want, atol=1e-12)
        assert torch.equal(getattr(d, f"{split}_target"), y)
    again = arrays(0, str(tmp_path / "clean.npz"), corruption="noise", noise_std=0.2)
    assert torch.equal(again.train_input, d.train_input)  # by seed
    assert not torch.equal(arrays(1, str(tmp_path / "clean.npz"), corruption="noise").train_input,
                           d.train_input)
    out = tmp_path / "run"
    out.mkdir()
    summary = train_job(compose_config("experiment=paper/e2_smoke", "dataset=arrays", "logger=csv",
                                       "logger.progress=false", path), RunFolder(out, "x"))
    assert {m["status"] for m in summary["members"]} <= {"completed", "diverged"}


@pytest.mark.parametrize("change, says", [
    (lambda y: (y * 255).astype(np.uint8), "'train_target' holds uint8 values, but dataset.corruption="
                                           "noise needs clean images as floats in [0, 1]; store x / 255"),
    (lambda y: y * 255, "'train_target' ranges over ["),  # 0..255 floats
    (lambda y: y - 0.5, "'train_target' ranges over [-0.4998, 0.4998], but dataset.corruption=noise "
                        "needs clean images in [0, 1]"),  # centred
])
def test_clean_images_outside_the_unit_range_are_refused_under_a_corruption(tmp_path, change, says):
    d = _clean_images()
    d = {k: change(v) for k, v in d.items()}
    np.savez(tmp_path / "c.npz", **d)
    with pytest.raises(DataError, match=re.escape(says)):
        arrays(0, str(tmp_path / "c.npz"), corruption="noise")


def test_channels_last_images_are_refused_with_the_transpose(tmp_path):
    d = {k: np.transpose(v, (0, 2, 3, 1)) for k, v in _images().items()}  # (N, 8, 8, 2)
    np.savez(tmp_path / "hwc.npz", **d)
    with pytest.raises(DataError, match=re.escape("looks like channels-last images (N, H, W, C); deqexp "
                                                  "takes (N, C, H, W): store np.transpose(x, (0, 3, 1, 2))")):
        arrays(0, str(tmp_path / "hwc.npz"))
    np.savez(tmp_path / "chw.npz", **_images())
    assert arrays(0, str(tmp_path / "chw.npz")).train_input.shape[1] == 2


def test_arrays_taken_as_already_corrupted_or_refused_when_both_are_given(tmp_path):
    d = {**_clean_images(), "train_input": np.zeros((6, 3, 12, 12)),
         "test_input": np.zeros((4, 3, 12, 12))}
    np.savez(tmp_path / "both.npz", **d)
    given = arrays(0, str(tmp_path / "both.npz"), corruption="none")
    assert float(given.train_input.abs().max()) == 0  # the file's own inputs
    with pytest.raises(DataError, match="makes the inputs from the clean targets, but the file has "
                                        "test_input, train_input; leave them out, or set "
                                        "dataset.corruption=none"):
        arrays(0, str(tmp_path / "both.npz"), corruption="noise")
    np.savez(tmp_path / "seq.npz", **_sequences())
    with pytest.raises(DataError, match="makes the inputs from the clean targets"):
        arrays(0, str(tmp_path / "seq.npz"), corruption="blur")


def test_a_relative_data_path_is_stored_resolved_and_the_run_evaluates_from_anywhere(tmp_path, monkeypatch,
                                                                                      capsys):
    import json

    from omegaconf import OmegaConf

    from deqexp import cli

    (tmp_path / "here").mkdir()
    np.savez(tmp_path / "here" / "seq.npz", **_sequences())
    monkeypatch.chdir(tmp_path / "here")
    run = tmp_path / "run"
    cli.main(["train", "dataset=arrays", "dataset.path=seq.npz", "family=gaussian", "kernel=se",
              "logger=csv", "logger.progress=false", "trainer.epochs=1", f"hydra.run.dir={run}"])
    absolute = str(tmp_path / "here" / "seq.npz")
    assert OmegaConf.load(run / "config.yaml").dataset.path == absolute
    summary = json.loads((run / "summary.json").read_text())
    assert summary["given_paths"] == {"dataset.path": "seq.npz"}
    assert summary["config"]["dataset"]["path"] == absolute
    monkeypatch.chdir(tmp_path)  # where seq.npz is not
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        cli.main(["eval", str(run)])
    assert done.value.code in (0, None), capsys.readouterr()
    assert (run / "eval.csv").exists()
