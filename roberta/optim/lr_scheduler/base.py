"""What every LR scheduler shares: writing `lr * lr_scale` into each param group, and its state.

A scheduler is a function of the update count (and, for some, of the epoch). The trainer calls
`step_update(num_updates)` after every update and `step_epoch(epoch)` at the start of every
epoch (1-based); both return the LR now in force. `get_lr()` is that LR before per-group scaling.
"""
from __future__ import annotations

import abc
from typing import Any, Sequence

from torch.optim import Optimizer

from roberta.errors import UserError


class LRScheduler(abc.ABC):
    """Base class: subclasses implement `lr_at(num_updates)` and may override `step_epoch`."""

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = optimizer
        self.num_updates = 0
        self.lr = 0.0

    @abc.abstractmethod
    def lr_at(self, num_updates: int) -> float:
        """The LR (before per-group scaling) after `num_updates` updates."""

    def step_update(self, num_updates: int) -> float:
        self.num_updates = num_updates
        return self.set_lr(self.lr_at(num_updates))

    def step_epoch(self, epoch: int) -> float:
        # Like fairseq's trainer, the LR at an epoch start is the per-update LR at the current count.
        return self.step_update(self.num_updates)

    def get_lr(self) -> float:
        return self.lr

    def set_lr(self, lr: float) -> float:
        """Set every group's LR to `lr` times its `lr_scale` (layer-wise LR decay factors)."""
        self.lr = lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def state_dict(self) -> dict[str, Any]:
        # fairseq's reader expects "best" (its best validation loss); this toolkit tracks that elsewhere.
        return {"best": None, "lr": self.lr, "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore; a fairseq checkpoint's state (only "best") leaves the schedule as built."""
        self.num_updates = int(state.get("num_updates", self.num_updates))
        self.set_lr(float(state.get("lr", self.lr)))


def single_lr(lrs: Sequence[float], scheduler: str) -> float:
    """The one LR of a schedule that does not take per-epoch LRs."""
    if len(lrs) != 1:
        raise UserError(f"--lr {','.join(f'{lr:g}' for lr in lrs)}: the {scheduler} scheduler takes a "
                        f"single learning rate; per-epoch LRs need --lr-scheduler fixed")
    return lrs[0]


def check_non_negative(**flags: float) -> None:
    """Raise a UserError for the first negative value, naming its flag (`warmup_updates` -> --warmup-updates)."""
    for name, value in flags.items():
        if value < 0:
            raise UserError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
