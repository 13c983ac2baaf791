"""`fixed`: one LR per epoch from `--lr a,b,c`, optional annealing and linear warmup (fairseq's).

LR for epoch e (1-based) is lr[min(e-1, last)]; from epoch `--force-anneal` F on it is
lr[last] * lr_shrink^(e+1-F). During the first W updates it is multiplied by (n+1)/W.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Sequence

from torch.optim import Optimizer

from roberta.errors import UserError
from roberta.flag_types import non_negative_float, non_negative_int, positive_int
from roberta.optim.lr_scheduler.base import LRScheduler, check_non_negative
from roberta.registry import LR_SCHEDULERS


@LR_SCHEDULERS.register("fixed")
class FixedSchedule(LRScheduler):
    @dataclass(frozen=True, kw_only=True, slots=True)
    class Settings:
        """`lr` is --lr: one LR per epoch, the last one holding afterwards."""

        lr: tuple[float, ...]
        warmup_updates: int = 0
        force_anneal: int | None = None
        lr_shrink: float = 0.1

    def __init__(self, optimizer: Optimizer, lrs: Sequence[float], *, warmup_updates: int = 0,
                 force_anneal: int | None = None, lr_shrink: float = 0.1) -> None:
        super().__init__(optimizer)
        check_non_negative(warmup_updates=warmup_updates, lr_shrink=lr_shrink)
        if force_anneal is not None and force_anneal < 1:
            raise UserError(f"--force-anneal must be an epoch number >= 1, got {force_anneal}")
        self.lrs = list(lrs)
        self.warmup_updates = warmup_updates
        self.force_anneal = force_anneal
        self.lr_shrink = lr_shrink
        self.epoch_lr = self.lrs[0]
        self.step_update(0)

    @staticmethod
    def add_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--force-anneal", "--fa", default=None, metavar="N",
                            type=positive_int("--force-anneal"),
                            help="from epoch N on, shrink the last --lr by --lr-shrink every epoch")
        parser.add_argument("--lr-shrink", type=non_negative_float("--lr-shrink"), default=0.1, metavar="LS",
                            help="factor applied to the LR per epoch once annealing has started")
        parser.add_argument("--warmup-updates", type=non_negative_int("--warmup-updates"), default=0, metavar="N",
                            help="scale the LR linearly up to its epoch value over the first N updates")

    @classmethod
    def build(cls, settings: FixedSchedule.Settings, optimizer: Optimizer) -> FixedSchedule:
        return cls(optimizer, settings.lr, warmup_updates=settings.warmup_updates,
                   force_anneal=settings.force_anneal, lr_shrink=settings.lr_shrink)

    def epoch_lr_for(self, epoch: int) -> float:
        if self.force_anneal is None or epoch < self.force_anneal:
            return self.lrs[min(epoch - 1, len(self.lrs) - 1)]
        return self.lrs[-1] * self.lr_shrink ** (epoch + 1 - self.force_anneal)

    def step_epoch(self, epoch: int) -> float:
        self.epoch_lr = self.epoch_lr_for(epoch)
        return super().step_epoch(epoch)

    def lr_at(self, num_updates: int) -> float:
        if num_updates < self.warmup_updates:
            return self.epoch_lr * (num_updates + 1) / self.warmup_updates
        return self.epoch_lr

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "epoch_lr": self.epoch_lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch_lr = float(state.get("epoch_lr", self.epoch_lr))
        super().load_state_dict(state)
