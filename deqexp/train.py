"""Training and evaluation of one job: E ensemble members trained together.

A job's members are the product ``inits x scales x seeds`` of
``trainer.ensemble`` (one member by default). Each member's data come from its
own seed, its batches are shuffled by its own seed's generator, and its loss is
summed with the others', so every member trains exactly as it would alone.
A member whose loss turns NaN/inf is marked ``diverged`` and frozen; the others
go on.
"""
from __future__ import annotations

import hashlib
import math
import os
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from .config import ConfigError, validate
from .data import Data, load_dataset
from .families import get_family
from .inits import DEFAULT_SCALE, InitSpec, initialise
from .kernels import build_kernel, grid_locations
from .logging import CsvLog, Progress, RunFolder, WandbLog
from .models import ConvDEQ, DenseDEQ

Tensor = torch.Tensor
# keys that do not change a run's results: left out of its fingerprint (the folder name's
# counterpart is hydra.job.config.override_dirname.exclude_keys in conf/config.yaml)
NON_RESULT_KEYS = ("force", "logger", "trainer.device", "trainer.threads", "trainer.member_chunk",
                   "paths")


@dataclass
class Member:
    index: int
    seed: int
    spec: InitSpec


def members_from_config(cfg) -> list[Member]:
    """The ensemble's members: inits x scales x seeds."""
    base: InitSpec = OmegaConf.to_object(cfg.init)
    ens = cfg.trainer.ensemble
    inits = list(ens.inits) or [base.name]
    out = []
    for name in inits:
        scales = list(ens.scales) or [base.scale if name == base.name else DEFAULT_SCALE[name]]
        for scale in scales:
            for i in range(ens.seeds):
                out.append(Member(len(out), cfg.trainer.seed + i, replace(base, name=name, scale=scale)))
    return out


def fingerprint(cfg) -> str:
    """Hash of the resolved config without the keys that do not change results."""
    c = OmegaConf.to_container(cfg, resolve=True)
    for key in NON_RESULT_KEYS:
        parts = key.split(".")
        node = c
        for p in parts[:-1]:
            node = node.get(p, {})
        node.pop(parts[-1], None)
    return hashlib.sha256(repr(sorted(c.items())).encode()).hexdigest()[:16]


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when there is one; an unavailable ``cuda`` is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name} but no CUDA device is available; "
                          "use trainer.device=auto or cpu")
    return torch.device(name)


def reset_global_state(cfg) -> None:
    """Seeds and threads, per job (the joblib launcher reuses worker processes)."""
    if cfg.trainer.threads > 0:
        torch.set_num_threads(cfg.trainer.threads)
    random.seed(cfg.trainer.seed)
    np.random.seed(cfg.trainer.seed % 2**32)
    torch.manual_seed(cfg.trainer.seed)


# --------------------------------------------------------------------------- data
@dataclass
class JobData:
    """Per-seed data stacked on a leading axis, and which seed each member uses."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    seed_index: Tensor   # (E,) member -> row of the stacked data
    seeds: list[int]
    meta: Data           # the first seed's data set (loss, locations, classes)
    _whole: dict = field(default_factory=dict, repr=False)  # whole splits per member, built once

    def member_view(self, x: Tensor) -> Tensor:
        """``(S, B, ...)`` to ``(E or 1, B, ...)``: no copy when all members share one seed."""
        return x if x.shape[0] == 1 else x.index_select(0, self.seed_index)

    def batch(self, x: Tensor, idx: Tensor | None) -> Tensor:
        """Members' rows ``idx`` of split ``x``; a whole split (None) is gathered only once."""
        if idx is not None:
            return self.member_view(_take(x, idx))
        key = id(x)
        if key not in self._whole:
            self._whole[key] = self.member_view(x)
        return self._whole[key]


def _flatten_images(d: Data) -> Data:
    c, h, w = d.train_input.shape[1:]
    if c != 1:
        raise ConfigError(f"model=dense takes single-channel images (flattened to pixels); this data "
                          f"set has {c} channels: use model=conv")
    flat = lambda t: t.reshape(len(t), -1)  # noqa: E731
    loc = grid_locations(h, w)
    return Data(flat(d.train_input), flat(d.train_target), flat(d.test_input), flat(d.test_target),
                d.loss, d.support, loc, loc, 0)


def load_job_data(cfg, members: list[Member], device, dtype) -> JobData:
    """Load each distinct seed's data set once and stack them."""
    opts = {k: v for k, v in OmegaConf.to_container(cfg.dataset, resolve=True).items() if k != "name"}
    seeds = sorted({m.seed for m in members})
    sets = [load_dataset(cfg.dataset.name, s, **opts) for s in seeds]
    if cfg.model.kind == "dense" and sets[0].is_image:
        sets = [_flatten_images(d) for d in sets]
    if cfg.model.kind == "conv" and not sets[0].is_image:
        raise ConfigError(f"model=conv needs image data; dataset={cfg.dataset.name} is a sequence "
                          "data set: use model=dense")
    family = get_family(cfg.family.name, cfg.family.trials, cfg.family.classes)
    family.validate(sets[0].train_input)
    stack = lambda key: torch.stack([getattr(d, key) for d in sets]).to(device, dtype)  # noqa: E731
    index = torch.tensor([seeds.index(m.seed) for m in members], device=device)
    return JobData(stack("train_input"), stack("train_target"), stack("test_input"),
                   stack("test_target"), index, seeds, sets[0].to(device, dtype))


# --------------------------------------------------------------------------- model
def build_model(cfg, job: JobData, members: list[Member], device, dtype):
    """The DEQ with one member per :class:`Member`, initialised from its spec and seed."""
    family = get_family(cfg.family.name, cfg.family.trials, cfg.family.classes)
    solver = OmegaConf.to_object(cfg.solver.forward)
    gradient = OmegaConf.to_object(cfg.solver.backward)
    e, meta = len(members), job.meta
    specs, seeds = [m.spec for m in members], [m.seed for m in members]
    if cfg.model.kind == "conv":
        c, h, w = meta.train_input.shape[1:]
        model = ConvDEQ(c, cfg.model.kernel_size, family, e, padding=cfg.model.padding,
                        solver=solver, gradient=gradient, readout=cfg.model.readout,
                        norm_method=cfg.model.norm_method, dtype=torch.float64)
        initialise(model, specs, seeds, image_size=(h, w))
    else:
        n_in, n_out = meta.x_in.shape[0], meta.x_out.shape[0]
        kernel = build_kernel(**{k: v for k, v in OmegaConf.to_container(cfg.kernel).items()})
        model = DenseDEQ(n_in, cfg.model.width or n_in, n_out, family, e, solver=solver,
                         gradient=gradient, readout=cfg.model.readout, classes=meta.classes or None,
                         dtype=torch.float64)
        initialise(model, specs, seeds, kernel=kernel, x_in=meta.x_in.double().cpu(),
                   x_out=meta.x_out.double().cpu())
    model.member_chunk = member_chunk(cfg, job, device)
    return model.to(device=device, dtype=dtype)


CPU_GROUP_VALUES = 2**20  # about 4 MB of float32 per group tensor: stays in a CPU's caches


def member_chunk(cfg, job: JobData, device) -> int | None:
    """Members solved together: as configured, else all on a GPU and ~1M values on a CPU."""
    if cfg.trainer.member_chunk is not None or device.type != "cpu":
        return cfg.trainer.member_chunk
    batch = cfg.trainer.batch_size or job.train_x.shape[1]
    per_sample = job.train_x[0, 0].numel()
    return max(1, CPU_GROUP_VALUES // max(1, batch * per_sample))


# --------------------------------------------------------------------------- losses and metrics
def member_loss(kind: str, out: Tensor, target: Tensor) -> Tensor:
    """Per-member mean loss ``(E,)``; targets may carry E or 1 on the leading axis."""
    if kind == "mse":
        return (out - target).pow(2).flatten(1).mean(1)
    if kind == "cross_entropy":
        e, b, m, c = out.shape
        tgt = target.expand(e, b, m).long()
        return F.cross_entropy(out.reshape(-1, c), tgt.reshape(-1), reduction="none").view(e, -1).mean(1)
    if kind == "bce":
        tgt = target.expand_as(out)
        return F.binary_cross_entropy_with_logits(out, tgt, reduction="none").flatten(1).mean(1)
    raise ConfigError(f"unknown loss '{kind}'")


class Totals:
    """Per-member sums over batches, kept on the device until the epoch ends."""

    def __init__(self):
        self.sums: dict[str, Tensor] = {}
        self.maxes: dict[str, Tensor] = {}
        self.count = 0

    def add(self, **values: Tensor) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0) + v.detach()
        self.count += 1

    def max(self, **values: Tensor) -> None:
        for k, v in values.items():
            self.maxes[k] = torch.maximum(self.maxes[k], v) if k in self.maxes else v.detach()

    def mean(self, key: str) -> Tensor | None:
        return self.sums[key] / self.count if key in self.sums else None


def _batches(n: int, batch_size: int, gens: list[torch.Generator] | None):
    """Index tensors ``(S, B)``: one permutation per seed (None: in order, for evaluation).

    A single full batch is yielded as None (the whole split, no gather): the loss is a mean,
    so the order of its samples does not matter.
    """
    bs = batch_size or n
    if bs >= n:
        yield None
        return
    if gens is None:
        order = torch.arange(n)[None]
    else:
        order = torch.stack([torch.randperm(n, generator=g) for g in gens])
    for start in range(0, n, bs):
        yield order[:, start : start + bs]


def _take(x: Tensor, idx: Tensor | None) -> Tensor:
    """Rows ``idx[s]`` of ``x[s]`` for each seed s (all of ``x`` for None)."""
    if idx is None:
        return x
    if idx.shape[0] == 1 and x.shape[0] > 1:
        idx = idx.expand(x.shape[0], -1)
    return torch.stack([x[s, idx[s].to(x.device)] for s in range(x.shape[0])])


def evaluate(model, job: JobData, x: Tensor, y: Tensor, loss_kind: str, batch_size: int) -> dict:
    """Loss and forward-solver statistics per member over a whole split (no gradients)."""
    tot = Totals()
    with torch.no_grad():
        for idx in _batches(x.shape[1], batch_size, None):
            run = model.run(job.batch(x, idx))
            out, res = run.out, run.forward
            tot.add(loss=member_loss(loss_kind, out, job.batch(y, idx)),
                    iters=res.iterations.double().mean(1), residual=res.residual.double().mean(1),
                    converged=res.converged.double().mean(1))
            tot.max(iters_max=res.iterations.double().amax(1))
    return {"loss": tot.mean("loss"), "iters": tot.mean("iters"), "iters_max": tot.maxes["iters_max"],
            "residual": tot.mean("residual"), "converged": tot.mean("converged")}


def _operator_norms(model, job: JobData) -> dict[str, Tensor]:
    if isinstance(model, ConvDEQ):
        return model.operator_norms(*job.meta.train_input.shape[-2:])
    return model.operator_norms()


def _rows(members, epoch, train, test, bwd_iters, norms, epoch_time, alive) -> list[dict]:
    cols = {
        "train_loss": train["loss"] if train else None, "test_loss": test["loss"],
        "fwd_iters_mean": test["iters"], "fwd_iters_max": test["iters_max"],
        "fwd_residual": test["residual"], "converged_frac": test["converged"],
        "bwd_iters_mean": bwd_iters, "op_norm_W": norms["W"], "op_norm_U": norms["U"],
    }
    host = {k: (v.double().cpu().tolist() if v is not None else [math.nan] * len(members))
            for k, v in cols.items()}
    alive = alive.cpu().tolist()
    rows = []
    for m in members:
        row = {"member": m.index, "seed": m.seed, "init": m.spec.name,
               "scale": "" if m.spec.scale is None else m.spec.scale, "epoch": epoch,
               "epoch_time_s": round(epoch_time, 4), "status": "ok" if alive[m.index] else "diverged"}
        row.update({k: v[m.index] for k, v in host.items()})
        rows.append(row)
    return rows


def _optimizer(cfg, model, steps: int):
    o = cfg.optim
    cls = torch.optim.Adam if o.name == "adam" else torch.optim.SGD
    opt = cls(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    sched = None
    if o.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps), eta_min=o.eta_min)
    return opt, sched


# --------------------------------------------------------------------------- the job
def run_analysis(cfg, folder: RunFolder) -> dict:
    """A non-training task (E4 agreement, E5 timing): its CSV, summary.json and the marker."""
    from . import analyses

    validate(cfg)
    reset_global_state(cfg)
    folder.start()
    t0 = time.perf_counter()
    summary = getattr(analyses, cfg.task)(cfg, folder)
    summary.update(config=OmegaConf.to_container(cfg, resolve=True), run_dir=str(folder.path),
                   total_time_s=round(time.perf_counter() - t0, 3), torch=torch.__version__)
    folder.finish(summary)
    return summary


def train_job(cfg, folder: RunFolder, run_name: str = "default") -> dict:
    """Train and evaluate one job; write metrics.csv, W&B, summary.json and the marker."""
    if cfg.task != "train":
        return run_analysis(cfg, folder)
    validate(cfg)
    reset_global_state(cfg)
    device = resolve_device(cfg.trainer.device)
    dtype = torch.float64 if cfg.trainer.dtype == "float64" else torch.float32
    members = members_from_config(cfg)
    job = load_job_data(cfg, members, device, dtype)
    model = build_model(cfg, job, members, device, dtype)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    folder.start()
    csv_log = CsvLog(folder.path / "metrics.csv") if cfg.logger.csv else None
    wb = None
    failed = True
    try:
        if cfg.logger.wandb.enabled:
            wb = WandbLog(folder.path, cfg.logger.wandb, resolved, run_name, len(members))
        summary = _fit(cfg, model, job, members, device, [csv_log, wb])
        summary.update(config=resolved, device=str(device), torch=torch.__version__,
                       run_dir=str(folder.path))
        if wb is not None:
            wb.summarise(summary)
        failed = False
    finally:
        if csv_log is not None:
            csv_log.close()
        if wb is not None:
            wb.close(failed)
    folder.finish(summary)
    return summary


def _fit(cfg, model, job: JobData, members, device, logs) -> dict:
    t_start = time.perf_counter()
    loss_kind, bs, epochs = job.meta.loss, cfg.trainer.batch_size, cfg.trainer.epochs
    n_train = job.train_x.shape[1]
    steps_per_epoch = math.ceil(n_train / (bs or n_train))
    opt, sched = _optimizer(cfg, model, epochs * steps_per_epoch)
    gens = [torch.Generator().manual_seed(s + 1_000_003) for s in job.seeds]
    alive = torch.ones(len(members), dtype=torch.bool, device=device)
    naive = torch.tensor([m.spec.name == "naive" for m in members])
    if cfg.trainer.freeze_wu_epochs > 0 and naive.any():
        model.freeze("W", naive)
        model.freeze("U", naive)
    progress = Progress(epochs, cfg.logger.progress, cfg.name)
    history: list[list[float]] = []

    def record(epoch, bwd_iters, epoch_time):
        nonlocal alive
        test = evaluate(model, job, job.test_x, job.test_y, loss_kind, bs)
        train = evaluate(model, job, job.train_x, job.train_y, loss_kind, bs) \
            if (cfg.trainer.eval_train or epoch == 0) else None
        alive = alive & torch.isfinite(test["loss"])
        rows = _rows(members, epoch, train, test, bwd_iters, _operator_norms(model, job),
                     epoch_time, alive)
        for log in logs:
            if log is not None:
                log.log(rows)
        history.append([r["test_loss"] if r["status"] == "ok" else math.nan for r in rows])
        progress.update(epoch, float(np.nanmean(history[-1])) if any(
            math.isfinite(v) for v in history[-1]) else math.nan, float(test["iters"].mean()))

    record(0, None, 0.0)
    for epoch in range(1, epochs + 1):
        if epoch == cfg.trainer.freeze_wu_epochs + 1:
            model.unfreeze("W")
            model.unfreeze("U")
        t0 = time.perf_counter()
        model.train()
        bwd = Totals()
        for idx in _batches(n_train, bs, gens):
            x, y = job.batch(job.train_x, idx), job.batch(job.train_y, idx)
            run = model.run(x)
            losses = member_loss(loss_kind, run.out, y)
            alive = alive & torch.isfinite(losses)
            opt.zero_grad(set_to_none=True)
            torch.where(alive, losses, 0.0).sum().backward()
            adjoint = run.backward.result
            if adjoint is not None:
                bwd.add(iters=adjoint.iterations.double().mean(1))
            model.mask_gradients(~alive)
            snap = model.snapshot()
            opt.step()
            model.restore(snap, ~alive)
            if sched is not None:
                sched.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        record(epoch, bwd.mean("iters"), time.perf_counter() - t0)
        if not bool(alive.any()):
            break
    progress.close()
    return _summary(members, history, alive, time.perf_counter() - t_start)


def _summary(members, history, alive, total_time) -> dict:
    hist = np.array(history, dtype=float)  # (epochs+1, E)
    out = []
    for m in members:
        col = hist[:, m.index]
        finite = np.isfinite(col)
        best = int(np.nanargmin(np.where(finite, col, np.nan))) if finite.any() else -1
        out.append({
            "member": m.index, "seed": m.seed, "init": m.spec.name, "scale": m.spec.scale,
            "status": "completed" if bool(alive[m.index]) else "diverged",
            "initial_test_loss": float(col[0]), "final_test_loss": float(col[-1]),
            "best_test_loss": float(col[best]) if best >= 0 else math.nan, "best_epoch": best,
            "epochs_run": len(col) - 1,
        })
    return {"members": out, "total_time_s": round(total_time, 3)}


def describe_summary(summary: dict, run_dir: Path | str) -> str:
    """The lines printed at the end of a run."""
    lines = []
    for m in summary["members"][:10]:
        first, last = m["initial_test_loss"], m["final_test_loss"]
        ratio = f"{first / last:.2f}x lower than" if (last and math.isfinite(last) and last > 0
                                                        and math.isfinite(first)) else "vs"
        label = f"member {m['member']} ({m['init']}, seed {m['seed']})" if len(summary["members"]) > 1 \
            else f"{m['init']} init, seed {m['seed']}"
        lines.append(f"{label}: final test loss {last:.5g} ({ratio} epoch 0: {first:.5g}), "
                     f"status {m['status']}")
    if len(summary["members"]) > 10:
        lines.append(f"... and {len(summary['members']) - 10} more members (see summary.json)")
    shown = Path(run_dir).resolve()
    if shown.is_relative_to(Path.cwd()):
        shown = shown.relative_to(Path.cwd())
    lines.append(f"files: {shown}{os.sep}metrics.csv, summary.json")
    return "\n".join(lines)


def run_from_hydra(cfg) -> dict | None:
    """The Hydra task: skip a completed run, else train; bad input exits 2 with a message."""
    import sys

    from hydra.core.hydra_config import HydraConfig

    from .data import DataError
    from .families import FamilyDataError

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    run_name = hc.job.override_dirname or "defaults"
    folder = RunFolder(run_dir, fingerprint(cfg))
    if folder.is_complete() and not cfg.force:
        summary = folder.summary()
        print(f"deqexp: already complete, skipped (force=true reruns it): {run_dir}")
        if "members" in summary:
            print(describe_summary(summary, run_dir))
        return summary
    try:
        summary = train_job(cfg, folder, run_name)
    except (ConfigError, DataError, FamilyDataError) as err:
        print(f"deqexp train: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(describe_summary(summary, run_dir) if "members" in summary
          else f"{cfg.task} complete; files: {run_dir}")
    return summary
