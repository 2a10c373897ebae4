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

from ..data.seeds import JAC_PROBES
from ..deq import jacreg
from ..deq.freezing import wu_held
from ..deq.interrupt import Interrupted
from .batching import OrderStreams, order_streams
from .build import JobData, Member
from .checkpoints import CHECKPOINT, LoopState, atomic_save, checkpoint, restore, save_checkpoint, save_model
from .metrics import (
    FailureWatch,
    Totals,
    all_norms,
    evaluate,
    member_loss,
    note_contraction,
    rows,
    solve_stats,
)
from .optimizers import make_optimizer
from .signals import StopRequested, StopSignals
from .sinks import Progress

Tensor = torch.Tensor


# --------------------------------------------------------------------------- the loop
class JacobianPenalty:
    """``trainer.jac_reg``: the Hutchinson penalty on every ``every``-th training step, with
    probes from per-seed generators (saved in checkpoints with the batch-order ones)."""

    def __init__(self, cfg, seeds: list[int]):
        self.weight, self.every, self.step = cfg.trainer.jac_reg.weight, cfg.trainer.jac_reg.every, 0
        self.gens = [torch.Generator().manual_seed(s + JAC_PROBES) for s in seeds] if self.weight else []

    def __call__(self, model, job: JobData, x: Tensor, run) -> Tensor | None:
        """Per member, ``weight x`` the penalty for this step (None: not this step)."""
        self.step += 1
        if not self.weight or (self.step - 1) % self.every:
            return None
        probes = jacreg.probes(self.gens, run.forward.z, job.seed_index)
        return self.weight * model.jacobian_penalty(x, run.forward.z, probes)


def train_epoch(model, job: JobData, opt, sched, streams: OrderStreams, loss_kind: str, bs: int,
                alive: Tensor, penalty: JacobianPenalty | None = None):
    """One pass over the training split; returns the updated alive mask and backward stats."""
    model.train()
    bwd = Totals()
    paired = job.train_noise is not None
    for k, idx in enumerate(streams.epoch(job.train_x.shape[1], bs, paired)):
        x, y = streams.inputs(job, k, idx, bs), streams.gather(job, job.train_y, idx)
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
    authors = cfg.trainer.rng == "authors" and cfg.model.kind == "conv"  # E1 is full batch: no order
    streams = order_streams("authors" if authors else "deqexp", job, members,
                            tuple(model.W.shape[1:]) if authors else None)
    all_gens = streams.gens + penalty.gens
    state = LoopState.start(model, torch.ones(len(members), dtype=torch.bool, device=device))
    if resume is None:
        streams.start(n_train)
    else:
        state = restore(resume, model, opt, sched, all_gens, device)
    penalty.step = state.epoch * math.ceil(n_train / (bs or n_train))  # its phase, on resume too
    naive = wu_held([m.spec for m in members])
    if state.epoch < cfg.trainer.freeze_wu_epochs and naive.any():
        model.freeze("W", naive)
        model.freeze("U", naive)
    progress = Progress(epochs, cfg.logger.progress, label, start=state.epoch)
    watch = FailureWatch(cfg, label, resume.get("warned", ()) if resume else ())

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

    def _run_epoch(epoch) -> bool:
        """Train and (when due) evaluate and checkpoint epoch ``epoch``; True when the run is done."""
        if epoch == cfg.trainer.freeze_wu_epochs + 1:
            model.unfreeze("W")
            model.unfreeze("U")
        t0 = time.perf_counter()
        state.alive, bwd = train_epoch(model, job, opt, sched, streams, loss_kind, bs, state.alive, penalty)
        if device.type == "cuda":
            torch.cuda.synchronize()
        state.epoch = epoch
        done = epoch == epochs or not bool(state.alive.any())
        if done or epoch % cfg.trainer.eval_every == 0:
            record(epoch, bwd, time.perf_counter() - t0, last=done)
        if saving and (epoch % every == 0 or done):
            save()
        return done

    every = cfg.trainer.checkpoint_every
    saving = folder is not None and every > 0
    stop = stop or StopSignals()
    warned = lambda: sorted(watch.warned)  # noqa: E731  (checkpointed: said once per run, resumes too)
    save = lambda: save_checkpoint(folder, fingerprint, state, model, opt, sched, all_gens, warned=warned())  # noqa: E731
    try:
        if resume is None:
            record(0, Totals(), 0.0)
            note_contraction(model, job, members, label)
        stop.check(state.epoch)  # asked during set-up: the checkpoint on disk (if any) is this epoch
        for epoch in range(state.epoch + 1, epochs + 1):
            # the checkpoint of the last finished epoch, kept in memory while stop signals are
            # handled: a stop inside this epoch (a signal, Ctrl-C) writes it
            before = checkpoint(fingerprint, state, model, opt, sched, all_gens, warned=warned()) \
                if saving and stop.installed else None
            try:
                if _run_epoch(epoch):
                    break
            except (Interrupted, KeyboardInterrupt) as err:
                if before is not None:
                    atomic_save(before, folder / CHECKPOINT)
                if isinstance(err, KeyboardInterrupt):
                    raise
                raise StopRequested(stop.signum, epoch - 1) from None
            stop.check(epoch, save if saving and epoch % every else None)
    except Interrupted:  # during the first evaluation: nothing trained, nothing to save
        raise StopRequested(stop.signum, state.epoch) from None
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
        best = _best(col)
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
