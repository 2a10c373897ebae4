"""``trainer.rng=authors`` with ``dataset.noise_pairing=batch`` gives the authors' E2 numbers.

The reference re-implements the authors' denoising loop line by line (PAPER-PROTOCOL.md E2;
issue 30), with torch's global generator as theirs: ``torch.manual_seed(seed)`` before each
(init, scale); for the random init four ``normal_(0, s/19)`` float32 fills of which their tied
model keeps the third as W and the fourth as U; real ``DataLoader``s, shuffled for training
and in order for testing, iterated at epoch 0 (evaluation) and at every epoch after; the noise
array indexed by batch position. deqexp must give its test loss at every epoch (float64
arithmetic in both, so to 1e-8); and planting any one of the three wrong (which fills, the
loaders' draws, the pairing) must break the agreement.
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
from tests.compose import compose_config
from tests.test_fidelity import ConvRef, authors_kglm_filters

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


def _deqexp(tmp_path, path) -> pd.DataFrame:
    cfg = compose_config(
        "experiment=paper/e2_quick", "dataset=arrays", f"dataset.path={path}", "dataset.corruption=noise",
        "dataset.noise_pairing=batch", "dataset.n_train=0", "dataset.n_test=0", "trainer.rng=authors",
        f"trainer.seed={SEED}", f"trainer.epochs={EPOCHS}", f"trainer.ensemble.scales={SCALES}",
        "logger=csv", "logger.progress=false", "trainer.dtype=float64", "trainer.jac_samples=0")
    train_job(cfg, RunFolder(tmp_path / "run", "x"))
    return pd.read_csv(tmp_path / "run" / "metrics.csv"), cfg


def authors_member(init, scale, data, cfg) -> list[float]:
    """Their loop for one (init, scale): the test MSE at epochs 0..EPOCHS."""
    torch.manual_seed(SEED)  # their init_params(seed=SEED)
    if init == "random":  # conv_features' two fills, then conv_output's two into the same tensors
        # their parameters are float32 (torch's default dtype; this suite's is float64)
        fills = [torch.empty(3, 3, 5, 5, dtype=torch.float32).normal_(0, scale / (10 * 1.9))
                 for _ in range(4)]
        w, u = fills[2].double(), fills[3].double()
    else:
        w, u = authors_kglm_filters(SEED, 3, scale, (SIZE, SIZE))
    w, u = w.clone().requires_grad_(), u.clone().requires_grad_()
    net = ConvRef({"W": w, "U": u, "V": w, "Q": u}, cfg.solver.forward.tol, cfg.solver.forward.max_iter)
    train = DataLoader(TensorDataset(data["train_target"]), batch_size=BATCH, shuffle=True)
    test = DataLoader(TensorDataset(data["test_target"]), batch_size=BATCH, shuffle=False)
    opt = torch.optim.Adam([w, u], lr=cfg.optim.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, (EPOCHS + 1) * len(train), eta_min=cfg.optim.eta_min)

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


def _mismatches(metrics, cfg, data) -> list:
    bad = []
    with torch.random.fork_rng():
        for init in ("kglm", "random"):
            for scale in SCALES:
                expect = authors_member(init, scale, data, cfg)
                got = metrics[(metrics.init == init) & np.isclose(metrics.scale, scale)].sort_values("epoch")
                assert list(got.epoch) == list(range(EPOCHS + 1))
                for epoch, (g, e) in enumerate(zip(got.test_loss, expect)):
                    if not (math.isfinite(e) and abs(g - e) <= 1e-8 * max(1.0, e)):
                        bad.append((init, scale, epoch, g, e))
    return bad


def test_authors_rng_and_batch_pairing_give_their_loop_at_every_epoch(tmp_path):
    data = _patches(tmp_path)
    metrics, cfg = _deqexp(tmp_path, tmp_path / "patches.npz")
    assert _mismatches(metrics, cfg, data) == []


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
