"""``trainer.rng=authors`` with ``dataset.noise_pairing=batch`` gives the authors' E2 numbers.

The reference re-implements the authors' denoising loop line by line (PAPER-PROTOCOL.md E2;
issue 30), with torch's global generator as theirs: ``torch.manual_seed(seed)`` before each
(init, scale); for the random init four ``normal_(0, s/19)`` float32 fills of which their tied
model keeps the third as W and the fourth as U; real ``DataLoader``s, shuffled for training
and in order for testing, iterated at epoch 0 (evaluation) and at every epoch after; the noise
array indexed by batch position. deqexp must give its test loss at every epoch (to 1e-8 with
both in float64; to float32 rounding in their float32); and planting any one of the three
wrong (which fills, the loaders' draws, the pairing) must break the agreement.
"""
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from deqexp.data import streams
from deqexp.run import batching
from deqexp.run.folder import RunFolder
from deqexp.run.runner import train_job
from tests.authors_loop import ConvRef
from tests.compose import compose_config
from tests.test_fidelity import authors_kglm_filters

SEED, EPOCHS, BATCH, SIZE = 3, 2, 10, 8
SCALES = [0.5, 1.5]  # 1.5: the kglm solve meets the iteration cap


def _patches(tmp_path):
    """Clean patches and their noise as the authors keep them (float32), saved as one file."""
    gen = np.random.default_rng(7)
    arrays = {"train_target": gen.uniform(0, 1, (23, 3, SIZE, SIZE)),  # 23: a partial last batch
              "test_target": gen.uniform(0, 1, (10, 3, SIZE, SIZE))}
    arrays["train_noise"] = 0.2 * gen.standard_normal(arrays["train_target"].shape)
    arrays["test_noise"] = 0.2 * gen.standard_normal(arrays["test_target"].shape)
    arrays = {k: v.astype(np.float32) for k, v in arrays.items()}
    np.savez(tmp_path / "patches.npz", **arrays)
    return {k: torch.from_numpy(v).double() for k, v in arrays.items()}


def _deqexp(tmp_path, path, dtype="float64") -> pd.DataFrame:
    cfg = compose_config(
        "experiment=paper/e2_quick", "dataset=arrays", f"dataset.path={path}", "dataset.corruption=noise",
        "dataset.noise_pairing=batch", "dataset.n_train=0", "dataset.n_test=0", "trainer.rng=authors",
        "dataset.val_fraction=0",  # their digits: every training patch trains, as in their loop
        f"trainer.seed={SEED}", f"trainer.epochs={EPOCHS}", f"trainer.ensemble.scales={SCALES}",
        "logger=csv", "logger.progress=false", f"trainer.dtype={dtype}", "trainer.jac_samples=0")
    train_job(cfg, RunFolder(tmp_path / "run", "x"))
    return pd.read_csv(tmp_path / "run" / "metrics.csv"), cfg


def authors_member(init, scale, data, cfg, dtype=torch.float64) -> list[float]:
    """Their loop for one (init, scale): the test MSE at epochs 0..EPOCHS (``dtype``: their
    float32, or float64 for agreement to 1e-8)."""
    torch.manual_seed(SEED)  # their init_params(seed=SEED)
    if init == "random":  # conv_features' two fills, then conv_output's two into the same tensors
        # their parameters are float32 (torch's default dtype; this suite's is float64)
        fills = [torch.empty(3, 3, 5, 5, dtype=torch.float32).normal_(0, scale / (10 * 1.9))
                 for _ in range(4)]
        w, u = fills[2].to(dtype), fills[3].to(dtype)
    else:
        w, u = (f.to(dtype) for f in authors_kglm_filters(SEED, 3, scale, (SIZE, SIZE)))
    w, u = w.clone().requires_grad_(), u.clone().requires_grad_()
    net = ConvRef({"W": w, "U": u, "V": w, "Q": u}, cfg.solver.forward.tol, cfg.solver.forward.max_iter)
    data = {k: v.to(dtype) for k, v in data.items()}
    train = DataLoader(TensorDataset(data["train_target"]), batch_size=BATCH, shuffle=True)
    test = DataLoader(TensorDataset(data["test_target"]), batch_size=BATCH, shuffle=False)
    opt = torch.optim.Adam([w, u], lr=cfg.optim.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, (EPOCHS + 1) * len(train),
                                                       eta_min=cfg.optim.eta_min)

    def epoch(loader, noise, train_it=False):
        total = 0.0
        for k, (x,) in enumerate(loader):
            noisy = torch.clip(x + noise[k * BATCH : (k + 1) * BATCH][: len(x)], 0, 1)
            loss = F.mse_loss(net(noisy), x)
            if train_it:
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
            total += loss.item() * len(x)
        return total / len(loader.dataset)

    out = []
    for i in range(EPOCHS + 1):
        epoch(train, data["train_noise"], train_it=i > 0)
        out.append(epoch(test, data["test_noise"]))
    return out


def _mismatches(metrics, cfg, data, dtype=torch.float64, tol=1e-8) -> list:
    bad = []
    with torch.random.fork_rng():
        for init in ("kglm", "random"):
            for scale in SCALES:
                expect = authors_member(init, scale, data, cfg, dtype)
                got = metrics[(metrics.init == init) & np.isclose(metrics.scale, scale)].sort_values("epoch")
                assert list(got.epoch) == list(range(EPOCHS + 1))
                for epoch, (g, e) in enumerate(zip(got.test_loss, expect)):
                    if not (math.isfinite(e) and abs(g - e) <= tol * max(1.0, e)):
                        bad.append((init, scale, epoch, g, e))
    return bad


# float64: the same arithmetic, to 1e-8; float32 (theirs, the preset's): to float32 rounding
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-8), (torch.float32, 1e-5)], ids=["f64", "f32"])
def test_authors_rng_and_batch_pairing_give_their_loop_at_every_epoch(tmp_path, dtype, tol):
    data = _patches(tmp_path)
    metrics, cfg = _deqexp(tmp_path, tmp_path / "patches.npz", str(dtype).split(".")[-1])
    assert _mismatches(metrics, cfg, data, dtype, tol) == []


def _fills_one_and_two(gen, shape, std):  # keeps the first two fills
    fills = [torch.empty(shape, dtype=torch.float32).normal_(0, std, generator=gen) for _ in range(4)]
    return {"W": fills[0].double(), "U": fills[1].double()}


def _order_without_test_draw(self, n):  # forgets the test loader's base seed
    streams._int64(self.gen)
    return torch.randperm(n, generator=torch.Generator().manual_seed(streams._int64(self.gen)))


def _noise_by_sample(self, job, k, idx, batch_size):  # pairs the noise with the image
    if job.train_noise is None:
        return self.gather(job, job.train_x, idx)
    return (self.gather(job, job.train_y, idx) + self.gather(job, job.train_noise, idx)).clamp(0, 1)


@pytest.mark.parametrize("target, name, plant", [
    (streams, "conv_random_filters", _fills_one_and_two),
    (streams.AuthorsOrder, "epoch", _order_without_test_draw),
    (batching.OrderStreams, "inputs", _noise_by_sample)], ids=["fills", "loader-draws", "pairing"])
def test_each_planted_difference_breaks_the_agreement(tmp_path, monkeypatch, target, name, plant):
    data = _patches(tmp_path)
    monkeypatch.setattr(target, name, plant)
    if target is streams:  # imported by name where it is used
        monkeypatch.setattr("deqexp.deq.inits.conv_random_filters", plant)
        monkeypatch.setattr("deqexp.run.batching.conv_random_filters", plant)
    metrics, cfg = _deqexp(tmp_path, tmp_path / "patches.npz")
    assert _mismatches(metrics, cfg, data)


def test_e1_authors_draws_are_their_default_layers_built_in_their_order():
    from deqexp.run.build import build_model, load_job_data, members_from_config

    cfg = compose_config("experiment=paper/e1_quick", "trainer.rng=authors", "trainer.ensemble.seeds=1",
                         f"trainer.seed={SEED}", "dataset.n_train=8", "dataset.n_test=4")
    members = members_from_config(cfg)
    job = load_job_data(cfg, members, torch.device("cpu"), torch.float64)
    model = build_model(cfg, job, members, torch.device("cpu"), torch.float64)
    n = cfg.dataset.length
    with torch.random.fork_rng():
        torch.manual_seed(SEED)  # their script: one layer per init, kglm, naive, random
        built = [[torch.nn.Linear(n, n, bias=b, dtype=torch.float32) for b in (False, True, True, False)]
                 for _ in range(3)]
    expect = {"naive": {"V": built[1][2]}, "random": dict(zip("WUV", built[2][:3]))}
    for m in members:
        for name, layer in expect.get(m.spec.name, {}).items():
            got = getattr(model, name)[m.index].detach()
            assert torch.equal(got, layer.weight.detach().double()), (m.spec.name, name)
    assert [m.spec.name for m in members] == ["kglm", "naive", "random"]


def test_a_grid_that_lists_a_scale_twice_trains_it_once_and_the_report_shows_both_places():
    from deqexp.paper.claims import sweep_convergence
    from deqexp.run.build import members_from_config

    grid = [0.5, 1.0, 2.0, 1.0]
    cfg = compose_config("experiment=paper/e2_quick", f"trainer.ensemble.scales={grid}")
    members = members_from_config(cfg)
    assert [(m.spec.name, m.spec.scale) for m in members] == [
        (i, s) for i in ("kglm", "random") for s in (0.5, 1.0, 2.0)]
    df = pd.DataFrame([{"init": m.spec.name, "scale": m.spec.scale, "seed": 0, "epoch": 1, "status": "ok",
                        "converged_frac": 1.0, "fwd_residual": 0.0, "fwd_iters_mean": 3.0} for m in members])
    table = sweep_convergence(df, grid)
    assert list(table[table.init == "kglm"].grid_index) == ["0", "1, 3", "2"]


@pytest.mark.parametrize("overrides, says", [
    (["experiment=paper/e2_quick", "model.tie_readout=false"], "model.tie_readout=true"),
    (["experiment=paper/e2_quick", "trainer.ensemble.inits=[kglm,naive]"], "no naive init"),
    (["experiment=paper/e2_quick", "init.lengthscale_rng=torch"], "init.lengthscale_rng=numpy"),
    (["experiment=paper/e2_quick", "trainer.ensemble.scales=[]", "trainer.ensemble.inits=[random]"],
     "set trainer.ensemble.scales"),
    (["experiment=paper/e1_quick", "trainer.rng=authors", "trainer.batch_size=10"], "full batch"),
    (["experiment=paper/e1_quick", "trainer.rng=authors", "trainer.ensemble.inits=[kglm]"],
     "would change nothing"),
    (["experiment=paper/e6_quick", "trainer.rng=authors"], "not dataset=copy_memory"),
    (["trainer.rng=numpy"], "choose one of"),
])
def test_authors_rng_is_refused_where_their_scripts_never_ran(overrides, says):
    from deqexp.run.schemas import ConfigError
    from deqexp.run.validation import validate

    with pytest.raises(ConfigError, match="trainer.rng") as err:
        validate(compose_config(*overrides))
    assert says in str(err.value)


def test_batch_pairing_draws_the_same_noise_and_is_refused_without_additive_noise(tmp_path):
    from deqexp.data import DataError, load_dataset

    opts = {"n_train": 6, "n_test": 3, "patch": 16}
    sample = load_dataset("images", 4, **opts)
    batch = load_dataset("images", 4, noise_pairing="batch", **opts)
    for split in ("train_input", "train_target", "test_input", "test_target"):
        assert torch.equal(getattr(sample, split), getattr(batch, split)), split
    assert torch.equal((batch.train_target + batch.train_noise).clamp(0, 1), batch.train_input)
    with pytest.raises(DataError, match="dataset.corruption=noise"):
        load_dataset("images", 4, noise_pairing="batch", corruption="blur", **opts)
    clean = np.zeros((4, 1, 3, 3))
    cases = [({"train_noise": clean, "test_noise": clean}, "none", "set dataset.corruption=noise"),
             ({"train_noise": clean}, "noise", "not both"),
             ({"train_noise": clean[:, :, :2], "test_noise": clean}, "noise", "shapes must agree")]
    for extra, corruption, says in cases:
        np.savez(tmp_path / "f.npz", train_target=clean, test_target=clean, **extra)
        with pytest.raises(DataError, match=says):
            load_dataset("arrays", 0, path=str(tmp_path / "f.npz"), corruption=corruption)
    # the file's own noise is added as it is: a noise level asked for would change nothing
    np.savez(tmp_path / "f.npz", train_target=clean, test_target=clean, train_noise=clean, test_noise=clean)
    with pytest.raises(DataError, match=r"dataset.noise_std=0.3 has no effect: the file's own train_noise"):
        load_dataset("arrays", 0, path=str(tmp_path / "f.npz"), corruption="noise", noise_std=0.3)
    load_dataset("arrays", 0, path=str(tmp_path / "f.npz"), corruption="noise", noise_std=0.2)


def test_the_report_says_which_stream_the_runs_drew_from():
    from deqexp.paper.report import streams_note

    authors = streams_note({"trainer": {"rng": "authors"}, "dataset": {"noise_pairing": "batch"}})
    assert "the authors'" in authors and "batch position" in authors
    own = streams_note({"trainer": {"rng": "deqexp"}, "dataset": {"noise_pairing": "sample"}})
    assert "deqexp's own" in own and "batch position" not in own


def test_a_resumed_replay_draws_what_an_uninterrupted_one_draws(tmp_path, monkeypatch):
    # the authors' streams live in the checkpoint: a run stopped after epoch 1 and rerun ends
    # exactly where one uninterrupted run does (a resume that re-drew epoch 0's or lost the
    # streams' state would shift every later batch order)
    from deqexp.run.identity import identify
    from tests.helpers import train_until_interrupted

    _patches(tmp_path)
    cfg = compose_config(
        "experiment=paper/e2_quick", "dataset=arrays", f"dataset.path={tmp_path / 'patches.npz'}",
        "dataset.corruption=noise", "dataset.n_train=0", "dataset.n_test=0", "trainer.epochs=3",
        "trainer.checkpoint_every=1", f"trainer.ensemble.scales={SCALES}", "logger=csv",
        "logger.progress=false", "trainer.dtype=float64", "trainer.jac_samples=0")
    whole = RunFolder(tmp_path / "whole", *identify(cfg))
    train_job(cfg, whole)
    broken = RunFolder(tmp_path / "broken", *identify(cfg))
    train_until_interrupted(monkeypatch, cfg, broken, 2)
    monkeypatch.undo()
    train_job(cfg, broken)
    a, b = (pd.read_csv(f.path / "metrics.csv") for f in (whole, broken))
    assert len(a) == len(b) == 4 * 2 * len(SCALES)  # epochs 0..3 x inits x scales
    assert np.array_equal(a.test_loss.to_numpy(), b.test_loss.to_numpy())
