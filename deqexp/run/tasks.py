"""Jobs that are not training runs: the paper's E4 (agreement) and E5 (cost of the init).

They run through the same runner (``task=kglm_agreement`` / ``task=init_timing``),
so they get the same output folders, completion markers and sweeps.
"""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch
from omegaconf import OmegaConf

from ..deq.inits import InitSpec, conv_member, dense_member, initialise, kglm_lambda
from ..deq.models import DenseDEQ
from ..theory.filters import grid_locations
from ..theory.kglm import fit_kglm
from .build import family_of, kernel_of, load_sets, solvers_of
from .schemas import ConfigError
from .sinks import CsvLog


def kglm_agreement(cfg, folder) -> dict:
    """E4: per image, the DEQ forward pass (kglm and random init) against the exact kGLM fit."""
    data = load_sets(cfg, [cfg.trainer.seed])[0]
    noisy, clean = data.test_input.double(), data.test_target.double()
    if noisy.dim() != 4 or noisy.shape[1] != 1:
        raise ConfigError("task=kglm_agreement needs single-channel images: use "
                          "dataset=binary_digits or dataset=mnist")
    n_img, _, h, w = noisy.shape
    t = noisy.reshape(n_img, -1)
    x = grid_locations(h, w)
    kernel = kernel_of(cfg)
    k = kernel(x)
    family = family_of(cfg)
    spec: InitSpec = OmegaConf.to_object(cfg.init)
    lam = kglm_lambda(k, spec)
    solver, _ = solvers_of(cfg)
    exact = torch.stack([fit_kglm(k, t[i], family, lam).mean for i in range(n_img)])
    preds, rows = {}, []
    for init in ("kglm", "random"):
        model = DenseDEQ(h * w, h * w, h * w, family, readout="mean", dtype=torch.float64,
                         solver=solver)
        member_spec = replace(spec, name=init, lam=lam if init == "kglm" else None,
                              scale=None if init == "random" else spec.scale)
        initialise(model, [member_spec], [cfg.trainer.seed], kernel=kernel, x_in=x, x_out=x)
        with torch.no_grad():
            run = model.run(t[None])
        p, res = run.out[0], run.forward
        preds[init] = p
        msd = (p - exact).pow(2).mean(1)
        differ = ((p > 0.5) != (exact > 0.5)).sum(1)
        for i in range(n_img):
            rows.append({"image": i, "init": init, "msd": float(msd[i]), "pixels_differ": int(differ[i]),
                         "iterations": int(res.iterations[0, i]), "converged": bool(res.converged[0, i]),
                         "lambda": lam})
    log = CsvLog(folder.path / "agreement.csv", columns=list(rows[0]))
    log.log(rows)
    log.close()
    np.savez_compressed(folder.path / "panel.npz", noisy=noisy[:4, 0].numpy(), clean=clean[:4, 0].numpy(),
                        exact=exact[:4].reshape(-1, h, w).numpy(),
                        kglm=preds["kglm"][:4].reshape(-1, h, w).numpy(),
                        random=preds["random"][:4].reshape(-1, h, w).numpy())
    per_init = {}
    for init in ("kglm", "random"):
        sel = [r for r in rows if r["init"] == init]
        per_init[init] = {"msd_mean": float(np.mean([r["msd"] for r in sel])),
                          "pixels_differ_mean": float(np.mean([r["pixels_differ"] for r in sel])),
                          "iterations_max": int(max(r["iterations"] for r in sel))}
    return {"task": "kglm_agreement", "images": n_img, "pixels": h * w, "lambda": lam,
            "per_init": per_init}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def init_timing(cfg, folder) -> dict:
    """E5: seconds to build a kglm-initialised layer against a random one, as the size grows."""
    tc = cfg.timing
    spec: InitSpec = OmegaConf.to_object(cfg.init)
    kernel = kernel_of(cfg)
    gen = torch.Generator().manual_seed(cfg.trainer.seed)
    rows = []
    for width in tc.widths:
        x = torch.linspace(-2 * np.pi, 2 * np.pi, width, dtype=torch.float64)[:, None]
        for init in ("kglm", "random"):
            s = replace(spec, name=init, scale=None if init == "random" else spec.scale)
            for trial in range(tc.trials):
                sec = _timed(lambda s=s: dense_member(s, kernel, x, x, width, gen))
                rows.append({"layer": "dense", "size": width, "init": init, "trial": trial, "seconds": sec})
    for channels in tc.channels:
        for init in ("kglm", "random"):
            s = replace(spec, name=init, scale=None if init == "random" else spec.scale)
            for trial in range(tc.trials):
                sec = _timed(lambda s=s: conv_member(s, channels, tc.kernel_size,
                                                     (tc.image_size, tc.image_size), "zeros", gen,
                                                     norm_method=cfg.model.norm_method))
                rows.append({"layer": "conv", "size": channels, "init": init, "trial": trial,
                             "seconds": sec})
    log = CsvLog(folder.path / "timing.csv", columns=list(rows[0]))
    log.log(rows)
    log.close()
    med = {}
    for r in rows:
        med.setdefault((r["layer"], r["size"], r["init"]), []).append(r["seconds"])
    return {"task": "init_timing", "median_seconds": [
        {"layer": k[0], "size": k[1], "init": k[2], "seconds": float(np.median(v))}
        for k, v in med.items()]}
