"""Training and evaluation of one job: E ensemble members trained together.

A job's members are the product ``inits x scales x seeds`` of ``trainer.ensemble`` (one
member by default). Each member's data come from its own seed, its batches are shuffled by
its own seed's generator, and its loss is summed with the others', so every member trains
exactly as it would alone. A member whose loss turns NaN/inf is marked ``diverged`` and
held still, parameters and optimiser state (:mod:`deqexp.run.optimizers`); the others go on
(divergence is a result, not a crash).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..deq import jacreg
from ..deq.models import ConvDEQ
from ..deq.solvers import OUTCOMES
from ..theory.kglm import contraction_factor
from .build import JobData, Member, batches
from .checkpoints import LoopState, restore, save_checkpoint, save_model
from .optimizers import make_optimizer
from .schemas import ConfigError
from .signals import StopSignals
from .sinks import OUTCOME_COLUMNS, Progress

Tensor = torch.Tensor


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
        self.counts: dict[str, Tensor] = {}  # summed, not averaged: samples per solver outcome
        self.count = 0

    def add(self, **values: Tensor) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0) + v.detach()
        self.count += 1

    def tally(self, res, prefix: str) -> None:
        """Add a solve's per-member outcome counts (``PREFIX_n_OUTCOME``)."""
        for name, n in res.counts().items():
            key = f"{prefix}_n_{name}"
            self.counts[key] = self.counts.get(key, 0) + n

    def max(self, **values: Tensor) -> None:
        for k, v in values.items():
            self.maxes[k] = torch.maximum(self.maxes[k], v) if k in self.maxes else v.detach()

    def mean(self, key: str) -> Tensor | None:
        return self.sums[key] / self.count if key in self.sums else None


def solve_stats(res, prefix: str) -> dict[str, Tensor]:
    """Per-member means of a solve's iterations, final residual and converged fraction."""
    return {f"{prefix}_iters": res.iterations.double().mean(1),
            f"{prefix}_residual": res.residual.double().mean(1),
            f"{prefix}_converged": res.converged.double().mean(1)}


def evaluate(model, job: JobData, x: Tensor, y: Tensor, loss_kind: str, batch_size: int) -> dict:
    """Loss and forward-solver statistics per member over a whole split (no gradients)."""
    tot = Totals()
    with torch.no_grad():
        for idx in batches(x.shape[1], batch_size, None):
            run = model.run(job.batch(x, idx))
            loss = member_loss(loss_kind, run.out, job.batch(y, idx))
            tot.add(loss=loss, **solve_stats(run.forward, "fwd"))
            tot.tally(run.forward, "fwd")
            tot.max(iters_max=run.forward.iterations.double().amax(1))
    out = {k: tot.mean(k) for k in tot.sums}
    out["iters_max"] = tot.maxes["iters_max"]
    return {**out, **tot.counts}


def operator_norms(model, job: JobData) -> dict[str, Tensor]:
    if isinstance(model, ConvDEQ):
        return model.operator_norms(*job.meta.train_input.shape[-2:])
    return model.operator_norms()


def jacobian_norm(model, job: JobData, samples: int) -> Tensor | None:
    """Per member, the largest ``||J||_2`` of the fixed-point map at the solution over the
    first ``samples`` test samples (= the norm of the map on that subset; None when 0)."""
    if samples <= 0:
        return None
    return model.jacobian_norms(job.member_view(job.test_x[:, :samples])).amax(1)


def all_norms(model, job: JobData, jac_samples: int) -> dict[str, Tensor | None]:
    """The norms that :func:`rows` logs: W's and U's operator norms and the Jacobian's."""
    return {**operator_norms(model, job), "J": jacobian_norm(model, job, jac_samples)}


def rows(members: list[Member], epoch: int, train, test, bwd: Totals, norms, epoch_time, alive,
         val=None) -> list[dict]:
    """metrics.csv rows (one per member) of an evaluated epoch; ``norms`` holds the operator
    norms of W and U and the Jacobian norm (``J``, None when not computed); ``val_loss`` only
    when there is a validation split (``val``)."""
    cols = {**({"val_loss": val["loss"]} if val is not None else {}),
        "train_loss": train["loss"] if train else None, "test_loss": test["loss"],
        "fwd_iters_mean": test["fwd_iters"], "fwd_iters_max": test["iters_max"],
        "fwd_residual": test["fwd_residual"], "converged_frac": test["fwd_converged"],
        "bwd_iters_mean": bwd.mean("bwd_iters"), "bwd_residual": bwd.mean("bwd_residual"),
        "bwd_converged_frac": bwd.mean("bwd_converged"), "op_norm_W": norms["W"],
        "op_norm_U": norms["U"], "jac_norm": norms.get("J"),
        **{k: test.get(k) for k in OUTCOME_COLUMNS if k.startswith("fwd")},
        **{k: bwd.counts.get(k) for k in OUTCOME_COLUMNS if k.startswith("bwd")},
    }
    host = {k: (v.double().cpu().tolist() if v is not None else [math.nan] * len(members))
            for k, v in cols.items()}
    alive = alive.cpu().tolist()
    out = []
    for m in members:
        row = {"member": m.index, "seed": m.seed, "init": m.spec.name,
               "scale": "" if m.spec.scale is None else m.spec.scale, "epoch": epoch,
               "epoch_time_s": round(epoch_time, 4), "status": "ok" if alive[m.index] else "diverged"}
        row.update({k: v[m.index] for k, v in host.items()})
        out.append(row)
    return out


class SolverFailure(RuntimeError):
    """``solver.*.on_failure=raise`` and some solve did not converge: the run stops."""


class FailureWatch:
    """``solver.forward.on_failure`` / ``solver.backward.on_failure`` over the outcome counts of
    the metrics rows (living members only: a diverged member is already recorded as such):
    ``warn`` says it once per run and solve, with the share of samples; ``raise`` stops the run."""

    WHAT = {"fwd": ("forward", "the test split's forward solves"),
            "bwd": ("backward", "the epoch's adjoint (backward) solves")}

    def __init__(self, cfg):
        self.settings = {"fwd": cfg.solver.forward, "bwd": cfg.solver.backward}
        self.warned: set[str] = set()

    def check(self, epoch: int, rows: list[dict]) -> None:
        for solve, s in self.settings.items():
            mode = s.on_failure
            if mode == "ignore" or (mode == "warn" and solve in self.warned):
                continue
            n = {o: sum(r[f"{solve}_n_{o}"] for r in rows if r["status"] == "ok"
                        and math.isfinite(r[f"{solve}_n_{o}"])) for o in OUTCOMES}
            total = sum(n.values())
            if total == 0 or n["converged"] == total:
                continue
            key, what = self.WHAT[solve]
            shares = ", ".join(f"{o} {n[o] / total:.0%}" for o in OUTCOMES[1:])
            text = (f"{1 - n['converged'] / total:.0%} of {what} ({total - n['converged']:.0f} of "
                    f"{total:.0f} samples) did not reach solver.{key}.tol={s.tol} at epoch {epoch}: "
                    f"{shares} (solver.{key}.name={s.name}, max_iter={s.max_iter})")
            if mode == "raise":
                raise SolverFailure(f"{text}; solver.{key}.on_failure=raise stops the run. Raise "
                                    f"solver.{key}.max_iter, use solver=anderson, or set "
                                    f"solver.{key}.on_failure=warn to record it and go on")
            self.warned.add(solve)
            print(f"warning: {text}. Recorded per epoch in metrics.csv ({solve}_n_*); "
                  f"solver.{key}.on_failure=ignore silences this, =raise stops the run", flush=True)


def note_contraction(model, job: JobData, members: list[Member]) -> None:
    """Say once, at the start, which members begin outside THEORY.md section 4's contraction
    region (it may be deliberate: the paper's E1 sits on its border, E2 sweeps across it)."""
    norms = operator_norms(model, job)["W"].double().cpu().tolist()
    factors = [contraction_factor(model.family, n) for n in norms]
    outside = [f for f in factors if not f < 1]
    if outside:
        print(f"note: {len(outside)} of {len(members)} member(s) start outside the contraction region "
              f"(sup a'' ||W||_2 up to {max(outside):.3g} >= 1, THEORY.md section 4): forward iteration "
              "may not reach its tolerance there (solver=anderson or broyden usually does)", flush=True)


# --------------------------------------------------------------------------- the loop
class JacobianPenalty:
    """``trainer.jac_reg``: the Hutchinson penalty on every ``every``-th training step, with
    probes from per-seed generators (saved in checkpoints with the batch-order ones)."""

    def __init__(self, cfg, seeds: list[int]):
        self.weight, self.every, self.step = cfg.trainer.jac_reg.weight, cfg.trainer.jac_reg.every, 0
        self.gens = [torch.Generator().manual_seed(s + 2_000_003) for s in seeds] if self.weight else []

    def __call__(self, model, job: JobData, x: Tensor, run) -> Tensor | None:
        """Per member, ``weight x`` the penalty for this step (None: not this step)."""
        self.step += 1
        if not self.weight or (self.step - 1) % self.every:
            return None
        probes = jacreg.probes(self.gens, run.forward.z, job.seed_index)
        return self.weight * model.jacobian_penalty(x, run.forward.z, probes)


def train_epoch(model, job: JobData, opt, sched, gens, loss_kind: str, bs: int, alive: Tensor,
                penalty: JacobianPenalty | None = None):
    """One pass over the training split; returns the updated alive mask and backward stats."""
    model.train()
    bwd = Totals()
    for idx in batches(job.train_x.shape[1], bs, gens):
        x, y = job.batch(job.train_x, idx), job.batch(job.train_y, idx)
        run = model.run(x)
        losses = member_loss(loss_kind, run.out, y)
        extra = penalty(model, job, x, run) if penalty is not None else None
        if extra is not None:
            losses = losses + extra
        alive = alive & torch.isfinite(losses)
        opt.zero_grad(set_to_none=True)
        torch.where(alive, losses, 0.0).sum().backward()
        adjoint = run.backward.result  # filled in by backward()
        if adjoint is not None:
            bwd.add(**solve_stats(adjoint, "bwd"))
            bwd.tally(adjoint, "bwd")
        opt.step(model.hold_masks(~alive))  # frozen and dead members: values and moments kept
        if sched is not None:
            sched.step()
    return alive, bwd


def fit(cfg, model, job: JobData, members: list[Member], device, logs, label: str,
        folder: Path | None = None, fingerprint: str = "", resume: dict | None = None,
        stop: StopSignals | None = None, on_evaluate=None) -> dict:
    """Train for ``trainer.epochs``; evaluate (and log) at epoch 0, every ``eval_every``
    epochs and at the last; with a ``folder``, checkpoint every ``checkpoint_every`` epochs
    and save the final and best parameters; continue from ``resume`` (a checkpoint) if given.
    A signal that ``stop`` recorded ends the loop at the next epoch boundary, after a
    checkpoint of that epoch (:class:`~deqexp.run.signals.StopRequested`). ``on_evaluate(epoch,
    rows)`` sees each evaluation's rows (a study trial's reporter, which may stop the run).
    Return the summary."""
    t_start = time.perf_counter()
    loss_kind, bs, epochs = job.meta.loss, cfg.trainer.batch_size, cfg.trainer.epochs
    n_train = job.train_x.shape[1]
    opt, sched = make_optimizer(cfg, model, math.ceil(n_train / (bs or n_train)))
    penalty = JacobianPenalty(cfg, job.seeds)
    # the batch orders' generators, then the penalty's probes' (checkpointed together)
    gens = [torch.Generator().manual_seed(s + 1_000_003) for s in job.seeds]
    all_gens = gens + penalty.gens
    state = LoopState.start(model, torch.ones(len(members), dtype=torch.bool, device=device))
    if resume is not None:
        state = restore(resume, model, opt, sched, all_gens, device)
    penalty.step = state.epoch * math.ceil(n_train / (bs or n_train))  # its phase, on resume too
    naive = torch.tensor([m.spec.name == "naive" for m in members])
    if state.epoch < cfg.trainer.freeze_wu_epochs and naive.any():
        model.freeze("W", naive)
        model.freeze("U", naive)
    progress = Progress(epochs, cfg.logger.progress, label, start=state.epoch)
    watch = FailureWatch(cfg)

    def record(epoch, bwd, epoch_time, last=False):
        test = evaluate(model, job, job.test_x, job.test_y, loss_kind, bs)
        val = evaluate(model, job, job.val_x, job.val_y, loss_kind, bs) if job.val_x is not None else None
        # the training split costs about as much as a training pass: first, last, or when asked
        train = evaluate(model, job, job.train_x, job.train_y, loss_kind, bs) \
            if (cfg.trainer.eval_train or epoch == 0 or last) else None
        state.alive = state.alive & torch.isfinite(test["loss"])
        norms = all_norms(model, job, cfg.trainer.jac_samples)
        new = rows(members, epoch, train, test, bwd, norms, epoch_time, state.alive, val)
        for log in logs:
            log.log(new)
        watch.check(epoch, new)
        if on_evaluate is not None:
            on_evaluate(epoch, new)
        alive_only = lambda key: [r[key] if r["status"] == "ok" else math.nan for r in new]  # noqa: E731
        state.evaluated_at(epoch, model, alive_only("test_loss"), alive_only("val_loss") if val else None)
        finite = [v for v in state.history[-1] if math.isfinite(v)]
        mean = float(np.mean(finite)) if finite else math.nan
        progress.update(epoch, mean, float(test["fwd_iters"].mean()))

    if resume is None:
        record(0, Totals(), 0.0)
        note_contraction(model, job, members)
    every = cfg.trainer.checkpoint_every
    stop = stop or StopSignals()
    save = lambda: save_checkpoint(folder, fingerprint, state, model, opt, sched, all_gens)  # noqa: E731
    stop.check(state.epoch)  # asked during set-up: the checkpoint on disk (if any) is this epoch
    try:
        for epoch in range(state.epoch + 1, epochs + 1):
            if epoch == cfg.trainer.freeze_wu_epochs + 1:
                model.unfreeze("W")
                model.unfreeze("U")
            t0 = time.perf_counter()
            state.alive, bwd = train_epoch(model, job, opt, sched, gens, loss_kind, bs, state.alive,
                                           penalty)
            if device.type == "cuda":
                torch.cuda.synchronize()
            state.epoch = epoch
            done = epoch == epochs or not bool(state.alive.any())
            if done or epoch % cfg.trainer.eval_every == 0:
                record(epoch, bwd, time.perf_counter() - t0, last=done)
            saving = folder is not None and every > 0
            if saving and (epoch % every == 0 or done):
                save()
            if done:
                break
            stop.check(epoch, save if saving and epoch % every else None)
    finally:
        progress.close()
    if folder is not None:
        save_model(folder, model, state)
    return summarise(members, state.history, state.evaluated, state.alive, time.perf_counter() - t_start,
                     state.val_history)


def _best(col) -> int:
    """The index of the lowest finite value (-1: none)."""
    finite = np.isfinite(col)
    return int(np.nanargmin(np.where(finite, col, np.nan))) if finite.any() else -1


def summarise(members: list[Member], history, epochs: list[int], alive, total_time,
              val_history=None) -> dict:
    """summary.json's per-member results from the test-loss history (one row per evaluated
    epoch in ``epochs``); with a validation history, also the best validation loss, its epoch
    and the test loss there (the number to report when choices are made on validation)."""
    hist = np.array(history, dtype=float)  # (evaluations, E)
    val = np.array(val_history, dtype=float) if val_history else None
    out = []
    for m in members:
        col = hist[:, m.index]
        finite = np.isfinite(col)
        best = int(np.nanargmin(np.where(finite, col, np.nan))) if finite.any() else -1
        out.append({
            "member": m.index, "seed": m.seed, "init": m.spec.name, "scale": m.spec.scale,
            "status": "completed" if bool(alive[m.index]) else "diverged",
            "initial_test_loss": float(col[0]), "final_test_loss": float(col[-1]),
            "best_test_loss": float(col[best]) if best >= 0 else math.nan,
            "best_epoch": epochs[best] if best >= 0 else None, "epochs_run": epochs[-1],
        })
        if val is not None:
            b = _best(val[:, m.index])
            out[-1].update(best_val_loss=float(val[b, m.index]) if b >= 0 else math.nan,
                           best_val_epoch=epochs[b] if b >= 0 else None,
                           test_loss_at_best_val=float(col[b]) if b >= 0 else math.nan)
    return {"members": out, "total_time_s": round(total_time, 3)}
