"""Which members of which parameters an optimiser step leaves alone: the one rule for freezing
(``trainer.freeze_wu_epochs``, ``init.freeze_q``) and for diverged members. A mixin of the DEQ
layers; freezing ``W`` freezes every raw parameter W is made from (a stabiliser's)."""
from __future__ import annotations

import torch

Tensor = torch.Tensor


def q_frozen(specs) -> Tensor:
    """``init.freeze_q``: the members whose Q starts at 0 and never trains (random inits only)."""
    return torch.tensor([s.freeze_q and s.name == "random" for s in specs])


def wu_held(specs) -> Tensor:
    """``trainer.freeze_wu_epochs``: the members whose W and U are held (naive inits)."""
    return torch.tensor([s.name == "naive" for s in specs])


class MemberFreezing:
    """Uses the layer's ``recurrence``, ``ensemble``, ``frozen`` and its parameters."""

    def freeze(self, name: str, members: Tensor | None = None) -> None:
        """Stop training parameter ``name`` for the given members (all by default); W means
        the parameters that W is made from."""
        names = self.recurrence.raw if name == "W" else (name,)
        for key in names:
            self._freeze_one(key, members)

    def _freeze_one(self, name: str, members: Tensor | None) -> None:
        if name not in self._parameters:
            raise ValueError(f"{type(self).__name__} has no parameter {name} of its own to freeze "
                             f"(it has {list(self._parameters)})")
        mask = torch.ones(self.ensemble, dtype=torch.bool) if members is None else members
        self.frozen[name] = mask.clone()

    def unfreeze(self, name: str) -> None:
        for key in self.recurrence.raw if name == "W" else (name,):
            self.frozen.pop(key, None)

    def _member_mask(self, name: str, dead: Tensor | None) -> Tensor | None:
        mask = self.frozen.get(name)
        if mask is not None and mask.device != self.U.device:
            mask = self.frozen[name] = mask.to(self.U.device)  # once, not every step
        if dead is not None:
            mask = dead if mask is None else (mask | dead)
        return mask

    def hold_masks(self, dead: Tensor | None = None) -> list[Tensor | None]:
        """Per parameter (in ``parameters()`` order), the members that an optimiser step must
        leave as they are: frozen for that parameter, or ``dead`` (e.g. diverged); None: none."""
        return [self._member_mask(name, dead) for name, _ in self.named_parameters()]
