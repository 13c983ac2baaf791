"""`inverse_sqrt`: linear warmup from --warmup-init-lr to --lr, then decay as 1/sqrt(updates).

n < W: init + n * (lr - init) / W; afterwards lr * sqrt(W) / sqrt(n).
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from torch.optim import Optimizer

from roberta.errors import UserError
from roberta.flag_types import finite_float, positive_int
from roberta.optim.lr_scheduler.base import LRScheduler, single_lr
from roberta.registry import LR_SCHEDULERS


@LR_SCHEDULERS.register("inverse_sqrt")
class InverseSquareRootSchedule(LRScheduler):
    @dataclass(frozen=True, kw_only=True, slots=True)
    class Settings:
        lr: tuple[float, ...]
        warmup_updates: int = 4000
        warmup_init_lr: float = -1.0

        def __post_init__(self) -> None:
            single_lr(self.lr, "inverse_sqrt")

    def __init__(self, optimizer: Optimizer, lr: float, *, warmup_updates: int = 4000,
                 warmup_init_lr: float = -1.0) -> None:
        super().__init__(optimizer)
        if warmup_updates <= 0:
            # lr * sqrt(W) / sqrt(n) is 0 without a warmup; fairseq divides by zero here.
            raise UserError(f"--warmup-updates must be positive for inverse_sqrt, got {warmup_updates}")
        self.peak_lr = lr
        self.warmup_updates = warmup_updates
        self.warmup_init_lr = 0.0 if warmup_init_lr < 0 else warmup_init_lr
        self.step_update(0)

    @staticmethod
    def add_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--warmup-updates", type=positive_int("--warmup-updates"), default=4000, metavar="N",
                            help="raise the LR linearly to --lr over the first N updates")
        parser.add_argument("--warmup-init-lr", type=finite_float("--warmup-init-lr"), default=-1.0, metavar="LR",
                            help="LR at the start of the warmup (negative: 0)")

    @classmethod
    def build(cls, settings: InverseSquareRootSchedule.Settings, optimizer: Optimizer) -> InverseSquareRootSchedule:
        return cls(optimizer, settings.lr[0], warmup_updates=settings.warmup_updates,
                   warmup_init_lr=settings.warmup_init_lr)

    def lr_at(self, num_updates: int) -> float:
        if num_updates < self.warmup_updates:
            slope = (self.peak_lr - self.warmup_init_lr) / self.warmup_updates
            return self.warmup_init_lr + num_updates * slope
        return self.peak_lr * math.sqrt(self.warmup_updates) / math.sqrt(num_updates)
