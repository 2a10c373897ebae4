"""The paper presets run the authors' exact algorithm (PAPER-PROTOCOL.md, E1 and E2).

The reference below re-implements the authors' loop line by line in plain torch, as the
protocol describes it (forward routine with one application before the loop, whole-batch
residual with ``1e-5 +``, one more application with gradients, a backward hook that runs the
same routine on ``u -> u J + g`` from ``u = g`` with J taken at that last application's
output; full-batch Adam for E1, batches of 10 with cosine-annealed Adam for E2; Q trained for
kglm and naive, fixed at 0 for random). For E2 it also builds the authors' initial filters from
their formulas (numpy length-scales after ``np.random.seed``, the truncated SE bank with
``k_max(i,j) / 2`` across channels, lambda from the DFT norm) and trains their one model
instance: the readout tied to the layer, cosine ``T_max = (epochs + 1) x batches``. deqexp's
presets must give the same train and test losses, epoch by epoch, to 1e-8 in float64.
"""
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from deqexp.data import seeds
from deqexp.deq.settings import SolverSettings
from deqexp.run.build import build_model, load_job_data, members_from_config
from deqexp.run.folder import RunFolder
from deqexp.run.runner import train_job
from deqexp.theory.filters import multichannel_filters
from tests.authors_loop import ConvRef, authors_e1, authors_solver
from tests.compose import compose_config

TOL = 1e-8


def _deqexp_run(tmp_path, overrides):
    """Train the preset with deqexp; return its config, initial parameters, data and metrics."""
    cfg = compose_config(*overrides, "logger=csv", "logger.progress=false", "trainer.dtype=float64",
                         "trainer.jac_samples=0")  # the norm diagnostics do not touch training
    members = members_from_config(cfg)
    job = load_job_data(cfg, members, torch.device("cpu"), torch.float64)
    model = build_model(cfg, job, members, torch.device("cpu"), torch.float64)
    init = {n: q.detach().clone() for n, q in model.named_parameters()}
    train_job(cfg, RunFolder(tmp_path, "x"))
    return cfg, members, init, job, pd.read_csv(tmp_path / "metrics.csv")


def _mse_in_batches(net, x, y, batch):
    with torch.no_grad():
        losses = [F.mse_loss(net(x[i : i + batch]), y[i : i + batch]) for i in range(0, len(x), batch)]
    return float(torch.stack(losses).mean())


def _compare(metrics, member, reference_rows):
    got = metrics[metrics.member == member].sort_values("epoch")
    for (epoch, train, test), (_, row) in zip(reference_rows, got.iterrows()):
        assert row.epoch == epoch
        assert abs(row.test_loss - test) <= TOL * max(1.0, test), (member, epoch, row.test_loss, test)
        assert abs(row.train_loss - train) <= TOL * max(1.0, train), (member, epoch, row.train_loss, train)
    assert len(got) == len(reference_rows)


def _e1_kernel(a, b):
    d = (a[:, None] - b[None, :]).abs()
    return torch.exp(-0.5 * d**2) * torch.exp(-torch.sin(d) ** 2)


def test_e1_preset_matches_the_authors_loop_for_every_init(tmp_path):
    epochs = 4
    cfg, members, init, job, metrics = _deqexp_run(tmp_path, [
        "experiment=paper/e1_quick", "dataset.n_train=160", "dataset.n_test=40",
        f"trainer.epochs={epochs}", "trainer.ensemble.seeds=1"])
    fwd = cfg.solver.forward
    x_in = torch.linspace(-2 * math.pi, 2 * math.pi, cfg.dataset.length, dtype=torch.float64)
    x_out = x_in - cfg.dataset.shift
    # the protocol's initialisations, computed here from the formulas
    k, ks = _e1_kernel(x_in, x_in), _e1_kernel(x_out, x_in)
    lam = torch.linalg.matrix_norm(k, 2)
    k_naive = torch.exp(-0.5 * (x_in[:, None] - x_in[None, :]) ** 2)
    lam_naive = torch.linalg.matrix_norm(k_naive, 2)
    xtr, ytr, xte, yte = job.train_x[0], job.train_y[0], job.test_x[0], job.test_y[0]
    for m in members:
        p = {n: init[n][m.index].clone() for n in "WUbVcQ"}
        if m.spec.name == "kglm":
            expect = {"W": -k / lam, "U": k / lam, "V": -ks / lam, "Q": ks / lam}
        elif m.spec.name == "naive":
            expect = {"W": -k_naive / lam_naive, "U": k_naive / lam_naive, "Q": 0 * ks}
        else:  # random: the framework's dense-layer default, U(+-1/sqrt(fan_in)); Q fixed at 0
            bound = 1 / math.sqrt(cfg.dataset.length)
            assert p["W"].abs().max() <= bound and p["W"].abs().max() > 0.9 * bound
            expect = {"Q": 0 * ks}
        for name, value in expect.items():
            assert torch.allclose(p[name], value, atol=1e-12), (m.spec.name, name)
        assert p["b"].abs().max() == 0 and p["c"].abs().max() == 0
        net, train = authors_e1(p, m.spec.name != "random", cfg.optim.lr, fwd.tol, fwd.max_iter)
        rows = [(0, _mse_in_batches(net, xtr, ytr, len(xtr)), _mse_in_batches(net, xte, yte, len(xte)))]
        for epoch in range(1, epochs + 1):
            train(xtr, ytr)
            rows.append((epoch, _mse_in_batches(net, xtr, ytr, len(xtr)),
                         _mse_in_batches(net, xte, yte, len(xte))))
        _compare(metrics, m.index, rows)


def authors_lengthscales(seed, channels, low=0.0, high=4.0):
    """Their per-channel length-scales: numpy's first draws after ``np.random.seed(seed)``."""
    np.random.seed(seed)
    return np.random.uniform(low, high, channels)


def authors_filter_bank(lengthscales, kernel_size=5):
    """Their filters: a squared exponential per channel cut off at the window edge; the lower
    triangle (j <= i) gets channel i's, then the bank is averaged with its transpose."""
    r = kernel_size // 2
    x = np.arange(kernel_size) - r
    d2 = x[:, None] ** 2 + x[None, :] ** 2
    c = len(lengthscales)
    k = np.zeros((c, c, kernel_size, kernel_size))
    for i, ell in enumerate(lengthscales):
        for j in range(i + 1):
            k[i, j] = np.exp(-d2 / (2 * max(ell, 1e-3) ** 2))
    return (k + k.transpose(1, 0, 2, 3)) / 2


def authors_dft_norm(k, size):
    """Their lambda's numerator: the largest singular value of the filters' DFT over the image."""
    t = np.fft.fft2(k.transpose(2, 3, 0, 1), size, axes=[0, 1])
    return float(np.linalg.svd(t, compute_uv=False).max())


def authors_kglm_filters(seed, channels, scale, size):
    k = authors_filter_bank(authors_lengthscales(seed, channels))
    lam = authors_dft_norm(k, size) / scale
    return torch.from_numpy(-k / lam), torch.from_numpy(k / lam)


def test_paper_filter_bank_is_the_authors_formula_on_three_channels():
    ls = [2.0, 3.0, 0.7]
    got = multichannel_filters(ls, 2, construction="paper")
    assert torch.allclose(got, torch.from_numpy(authors_filter_bank(ls)), atol=1e-15)
    centre = got[:, :, 2, 2]
    assert torch.equal(centre, torch.tensor([[1, .5, .5], [.5, 1, .5], [.5, .5, 1]], dtype=got.dtype))


def _authors_e2_members(cfg, members, init, image_size):
    """Each member's initial filters as the authors' code makes them, with the readout tied."""
    out = {}
    for m in members:
        if m.spec.name == "kglm":
            w, u = authors_kglm_filters(m.seed, init["W"].shape[2], m.spec.scale, image_size)
            assert torch.allclose(init["W"][m.index], w, atol=1e-12), (m.spec.scale, "W")
            assert torch.allclose(init["U"][m.index], u, atol=1e-12), (m.spec.scale, "U")
        p = {n: init[n][m.index].clone().requires_grad_() for n in "WU"}
        out[m.index] = {**p, "V": p["W"], "Q": p["U"]}  # one model instance: V is W, Q is U
    return out


# E3 is E2's loop on blurred images: the fast suite checks E2, the slow one both
@pytest.mark.parametrize("preset", ["e2_quick", pytest.param("e3_quick", marks=pytest.mark.slow)])
def test_e2_preset_matches_the_authors_loop(tmp_path, preset):
    epochs, batch = 2, 10
    cfg, members, init, job, metrics = _deqexp_run(tmp_path, [
        f"experiment=paper/{preset}", "dataset.n_train=20", "dataset.n_test=10", "trainer.seed=3",
        "trainer.rng=deqexp", "dataset.noise_pairing=sample",  # deqexp's streams (test_authors_rng: theirs)
        f"trainer.epochs={epochs}", "trainer.ensemble.scales=[0.5,1.5]"])  # 1.5: the iteration cap binds
    assert sorted(init) == ["U", "W"]  # 450 trainable values per member at 3 channels, as theirs
    fwd = cfg.solver.forward
    xtr, ytr, xte, yte = job.train_x[0], job.train_y[0], job.test_x[0], job.test_y[0]
    batches = math.ceil(len(xtr) / batch)
    params = _authors_e2_members(cfg, members, init, tuple(xtr.shape[-2:]))
    for m in members:
        p = params[m.index]
        net = ConvRef(p, fwd.tol, fwd.max_iter)
        opt = torch.optim.Adam([p["W"], p["U"]], lr=cfg.optim.lr)
        # their T_max: (epochs + 1) x batches per epoch, one epoch more than they train
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=(epochs + 1) * batches,
                                                           eta_min=cfg.optim.eta_min)
        order = torch.Generator().manual_seed(cfg.trainer.seed + seeds.BATCH_ORDER)  # deqexp's batch order
        rows = [(0, _mse_in_batches(net, xtr, ytr, batch), _mse_in_batches(net, xte, yte, batch))]
        for epoch in range(1, epochs + 1):
            perm = torch.randperm(len(xtr), generator=order)
            for i in range(0, len(xtr), batch):
                idx = perm[i : i + batch]
                opt.zero_grad()
                F.mse_loss(net(xtr[idx]), ytr[idx]).backward()
                opt.step()
                sched.step()
            rows.append((epoch, _mse_in_batches(net, xtr, ytr, batch), _mse_in_batches(net, xte, yte, batch)))
        _compare(metrics, m.index, rows)


def test_e2_epoch0_test_loss_on_your_patches_is_the_authors(tmp_path):
    # patches and noise as the authors saved them: clean targets and noisy inputs, taken as they are
    gen = np.random.default_rng(5)
    clean = {k: gen.uniform(0, 1, (n, 3, 8, 8)) for k, n in (("train", 10), ("test", 10))}
    noisy = {k: np.clip(v + 0.2 * gen.standard_normal(v.shape), 0, 1) for k, v in clean.items()}
    path = tmp_path / "patches.npz"
    np.savez(path, train_input=noisy["train"], train_target=clean["train"],
             test_input=noisy["test"], test_target=clean["test"])
    scales = [0.1, 1.0, 1.04, 4.0]
    seed = 11
    metrics = _deqexp_run(tmp_path, [
        "experiment=paper/e2_quick", "dataset=arrays", f"dataset.path={path}", "dataset.corruption=none",
        "dataset.noise_pairing=sample",
        "dataset.n_train=0", "dataset.n_test=0", "trainer.epochs=1", "trainer.ensemble.inits=[kglm]",
        f"trainer.ensemble.scales=[{','.join(map(str, scales))}]", f"trainer.seed={seed}"])[-1]
    x, y = torch.from_numpy(noisy["test"]), torch.from_numpy(clean["test"])
    for i, scale in enumerate(scales):
        w, u = authors_kglm_filters(seed, 3, scale, (8, 8))
        net = ConvRef({"W": w, "U": u, "V": w, "Q": u}, 1e-2, 50)
        expect = _mse_in_batches(net, x, y, 10)
        row = metrics[(metrics.member == i) & (metrics.epoch == 0)].iloc[0]
        assert abs(row.test_loss - expect) <= TOL * expect, (scale, row.test_loss, expect)


@pytest.mark.parametrize("scale", [1e-7, 1e-5, 1.0])
@pytest.mark.parametrize("max_iter", [3, 25])
def test_authors_counting_and_residual_match_their_routine(scale, max_iter):
    # a contraction towards a small fixed point: where ||f(z)|| is near 1e-5 the `1e-5 +`
    # decides when the loop stops, and the count decides which iterate comes back
    gen = torch.Generator().manual_seed(0)
    a = 0.9 * torch.linalg.qr(torch.randn(6, 6, generator=gen))[0]
    c = scale * torch.randn(4, 6, generator=gen)
    f = lambda z: z @ a.T + c  # noqa: E731
    z0 = torch.zeros(4, 6)
    settings = SolverSettings("forward", tol=1e-2, max_iter=max_iter, stop="member",
                              residual_eps=1e-5, counting="authors")
    got = settings.solve(f, z0[None])
    assert torch.equal(got.z[0], authors_solver(f, z0, 1e-2, max_iter))
