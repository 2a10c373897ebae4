"""Optimisers for parameters stacked over ensemble members (leading axis E).

``torch.optim.Adam`` keeps one step counter per tensor, so a member held still by zeroing its
gradient (a frozen naive W, a diverged member) would still have its moments decayed and its
step counted: after 20 held steps its first real update is about half a fresh optimiser's.
:class:`MemberAdam` counts steps per member and leaves a held member's parameters *and*
moments untouched, so a member frozen for k steps then released moves exactly as a parameter
with ``requires_grad=False`` for k steps in one ``torch.optim.Adam`` would (Adam skips
parameters without a gradient): this is how deqexp reads the paper's "W and U frozen for the
first 20 epochs". With nothing held, each member's update is ``torch.optim.Adam``'s, bit for bit.
"""
from __future__ import annotations

import torch

Tensor = torch.Tensor


def _per_member(v: Tensor, like: Tensor) -> Tensor:
    """``v`` of shape (E,) viewed to broadcast against ``like`` (E, ...)."""
    return v.view(-1, *[1] * (like.dim() - 1))


class MemberAdam(torch.optim.Optimizer):
    """Adam (L2 weight decay as in ``torch.optim.Adam``) with a step count per member, or plain
    SGD (``adam=False``); :meth:`step` takes, per parameter, the members to hold still."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, adam: bool = True):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, adam=adam))

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        for p, st in self.state.items():  # the step counts are per member, on the parameter's device
            if "step" in st:
                st["step"] = st["step"].to(device=p.device, dtype=torch.float64)

    @torch.no_grad()
    def step(self, hold: list[Tensor | None] | None = None):
        """One update. ``hold[i]`` (bool ``(E,)``, or None) marks the members of the i-th
        parameter (in the order given) that keep their values and optimiser state."""
        pairs = [(p, g) for g in self.param_groups for p in g["params"]]
        for (p, group), h in zip(pairs, hold or [None] * len(pairs)):
            if p.grad is not None:
                self._update(p, group, h)

    def _update(self, p: Tensor, group: dict, hold: Tensor | None) -> None:
        grad = p.grad
        if group["weight_decay"]:
            grad = grad.add(p, alpha=group["weight_decay"])
        if not group["adam"]:
            new = p.add(grad, alpha=-group["lr"])
            p.copy_(new if hold is None else torch.where(_per_member(hold, p), p, new))
            return
        beta1, beta2 = group["betas"]
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros(p.shape[0], dtype=torch.float64, device=p.device)
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        active = torch.ones(p.shape[0], dtype=torch.bool, device=p.device) if hold is None else ~hold
        move = _per_member(active, p)
        exp_avg = torch.where(move, state["exp_avg"].lerp(grad, 1 - beta1), state["exp_avg"])
        exp_avg_sq = torch.where(move, (state["exp_avg_sq"] * beta2).addcmul_(grad, grad, value=1 - beta2),
                                 state["exp_avg_sq"])
        step = state["step"] + active
        # as torch.optim.Adam: the corrections in float64, then the update in p's dtype
        bc1 = 1 - beta1 ** step
        bc2_sqrt = (1 - beta2 ** step).sqrt()
        step_size = torch.where(active, torch.full_like(bc1, group["lr"]) / bc1, 0.0).to(p.dtype)
        denom = (exp_avg_sq.sqrt() / _per_member(bc2_sqrt.to(p.dtype), p)).add_(group["eps"])
        new = p + (-_per_member(step_size, p) * exp_avg) / denom
        p.copy_(torch.where(move, new, p))
        state.update(step=step, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)


def make_optimizer(cfg, model, batches_per_epoch: int):
    """The optimiser and (optionally) the cosine schedule of ``cfg.optim``: annealed over
    ``(trainer.epochs + optim.anneal_extra_epochs) * batches_per_epoch`` steps (the authors'
    E2 code takes one epoch more than it trains, so it never reaches ``eta_min``)."""
    o = cfg.optim
    opt = MemberAdam(model.parameters(), lr=o.lr, weight_decay=o.weight_decay, adam=o.name == "adam")
    sched = None
    if o.schedule == "cosine":
        t_max = (cfg.trainer.epochs + o.anneal_extra_epochs) * batches_per_epoch
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, t_max), eta_min=o.eta_min)
    return opt, sched
