"""Checkpoints (an interrupted run resumes where it stopped) and saved models (a finished run
can be reloaded and evaluated again).

A checkpoint holds everything the next epoch depends on: the parameters, the optimiser's and
scheduler's state, every batch-order generator's state, the alive mask, the test-loss
history and each member's best parameters so far. Files are written atomically (a temporary
file, then a rename), so a kill never leaves half a checkpoint.
"""
from __future__ import annotations

import copy
import errno
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .folder import CHECKPOINT, MODEL, atomic_replace  # noqa: F401  (re-exported)

Tensor = torch.Tensor


# torch.save reports a failed write (a full disk, a quota) as a RuntimeError from its zip writer
# ("unexpected pos 576 vs 534"), never as the OSError it was; below this much free space, that
# is what it was
FULL_DISK_BYTES = 64 * 2**20


def _torch_save(obj, tmp: Path) -> None:
    try:
        torch.save(obj, tmp)
    except RuntimeError as err:
        full = shutil.disk_usage(tmp.parent).free < FULL_DISK_BYTES
        raise OSError(errno.ENOSPC if full else errno.EIO,
                      "No space left on device" if full else f"write failed ({err})", str(tmp)) from err


def atomic_save(obj, path: Path) -> None:
    """``torch.save`` to ``path`` atomically; a failed write is an OSError (ENOSPC on a full disk)."""
    atomic_replace(path, lambda tmp: _torch_save(obj, tmp))


@dataclass
class LoopState:
    """What the training loop carries from one epoch to the next, besides the model."""

    epoch: int                 # the last finished epoch (0: before training)
    alive: Tensor              # (E,) members not diverged
    history: list              # test loss per evaluated epoch, (evaluations, E)
    evaluated: list            # the epochs of history's rows
    best_loss: Tensor          # (E,) each member's best test loss so far
    best: dict                 # parameter name -> (E, ...) values at each member's best
    val_history: list | None = None  # validation loss per evaluated epoch (with a validation
                                     # split: the best parameters are chosen on it)

    @classmethod
    def start(cls, model, alive: Tensor) -> "LoopState":
        best = {n: p.detach().clone() for n, p in model.named_parameters()}
        inf = torch.full((len(alive),), float("inf"), dtype=torch.float64)
        return cls(0, alive, [], [], inf, best)

    def evaluated_at(self, epoch: int, model, losses: list[float],
                     val_losses: list[float] | None = None) -> None:
        """Record an evaluation (test losses, and validation losses when there is a validation
        split); keep the parameters of every member that improved on validation, else on test."""
        self.history.append(losses)
        self.evaluated.append(epoch)
        if val_losses is not None:
            self.val_history = (self.val_history or []) + [val_losses]
        chosen_on = val_losses if val_losses is not None else losses
        loss = torch.tensor(chosen_on, dtype=torch.float64).nan_to_num(nan=float("inf"))
        better = loss < self.best_loss
        self.best_loss = torch.where(better, loss, self.best_loss)
        for name, p in model.named_parameters():
            mask = better.to(p.device).view(-1, *[1] * (p.dim() - 1))
            self.best[name] = torch.where(mask, p.detach(), self.best[name])


def _contents(fingerprint: str, state: LoopState, model, opt, sched, gens, **extra) -> dict:
    """What a checkpoint holds (the live objects); ``extra``: plain values the run carries too
    (``warned``, the solver warnings already given). The norms' warm starts go with the model,
    so that a resumed run's norms equal an uninterrupted run's exactly."""
    return {"fingerprint": fingerprint, "state": state, "model": model.state_dict(),
            "norm_starts": model.norm_starts, "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict() if sched else None,
            "generators": [g.get_state() for g in gens], **extra}


def checkpoint(*args, **extra) -> dict:
    """A checkpoint's contents as of now, copied (later training does not change them): what a
    stop inside the next epoch writes. Arguments as :func:`save_checkpoint`'s, without the folder."""
    return copy.deepcopy(_contents(*args, **extra))


def save_checkpoint(folder: Path, fingerprint: str, state: LoopState, model, opt, sched, gens,
                    **extra) -> None:
    atomic_save(_contents(fingerprint, state, model, opt, sched, gens, **extra), folder / CHECKPOINT)


def read_checkpoint(path: Path) -> dict | None:
    """A checkpoint file's contents (tensors and the loop state only: nothing executable is
    unpickled), or None if it is missing or unreadable."""
    if not path.exists():
        return None
    try:
        with torch.serialization.safe_globals([LoopState]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # an unreadable checkpoint is as good as none: start afresh
        return None


def load_checkpoint(folder: Path, fingerprint: str, say: bool = False) -> dict | None:
    """The folder's checkpoint if it belongs to this configuration, else None; with ``say``,
    a checkpoint that is there but unusable is reported (the run then starts afresh)."""
    path = folder / CHECKPOINT
    ckpt = read_checkpoint(path)
    if ckpt is not None and ckpt.get("fingerprint") == fingerprint:
        return ckpt
    if say and path.exists():
        why = "is unreadable (damaged or cut short)" if ckpt is None else "belongs to another configuration"
        print(f"deqexp: {path} {why}; starting this run afresh", file=sys.stderr, flush=True)
    return None


def restore(ckpt: dict, model, opt, sched, gens, device) -> LoopState:
    """Put a checkpoint's states back; return the loop state to continue from."""
    model.load_state_dict(ckpt["model"])
    model.norm_starts = ckpt.get("norm_starts", model.norm_starts)  # absent in older checkpoints
    opt.load_state_dict(ckpt["optimizer"])
    if sched is not None and ckpt["scheduler"] is not None:
        sched.load_state_dict(ckpt["scheduler"])
    for g, s in zip(gens, ckpt["generators"]):
        g.set_state(s)
    state = ckpt["state"]
    state.alive = state.alive.to(device)
    state.best = {k: v.to(device) for k, v in state.best.items()}
    return state


def save_model(folder: Path, model, state: LoopState) -> None:
    """The final and the best (per member, by validation loss where there is a validation
    split, else by test loss) parameters of a finished run."""
    best_epoch = [state.evaluated[i] if torch.isfinite(state.best_loss[e]) else None
                  for e, i in enumerate(_argmin(state.val_history or state.history))]
    atomic_save({"final": model.state_dict(), "best": {k: v.cpu() for k, v in state.best.items()},
                 "best_epoch": best_epoch}, folder / MODEL)


def _argmin(history: list) -> list[int]:
    h = torch.tensor(history, dtype=torch.float64).nan_to_num(nan=float("inf"))
    return h.argmin(0).tolist()
