"""`cosine`: linear warmup, then cosine cycles (SGDR) between --lr and --min-lr.

After W warmup updates, with c = n - W: cycle i (0-based) lasts period * t_mult^i updates;
at t updates into it the LR is min_i + 0.5 * (max_i - min_i) * (1 + cos(pi * t / T_i)), where
max_i = lr * lr_shrink^i and min_i = min_lr * lr_shrink^i. The period defaults to
--max-update minus the warmup, i.e. a single half cosine over the run.
"""
from __future__ import annotations

import argparse
import logging
import math
from dataclasses import dataclass

from torch.optim import Optimizer

from roberta.errors import UserError
from roberta.flag_types import finite_float, float_at_least, non_negative_float, non_negative_int, positive_float
from roberta.optim.lr_scheduler.base import LRScheduler, check_non_negative, single_lr
from roberta.registry import LR_SCHEDULERS

logger = logging.getLogger(__name__)


@LR_SCHEDULERS.register("cosine")
class CosineSchedule(LRScheduler):
    @dataclass(frozen=True, kw_only=True, slots=True)
    class Settings:
        lr: tuple[float, ...]
        warmup_updates: int = 0
        warmup_init_lr: float = -1.0
        min_lr: float = 0.0
        max_lr: float | None = None
        t_mult: float = 1.0
        lr_period_updates: float = -1.0
        lr_shrink: float = 0.1
        max_update: int = 0

        def __post_init__(self) -> None:
            single_lr(self.lr, "cosine")
            if self.period <= 0:
                if self.max_update <= 0:
                    raise UserError("cosine needs a cycle length: give --lr-period-updates or --max-update")
                raise UserError(f"--warmup-updates {self.warmup_updates} leaves no updates for the cosine "
                                f"within --max-update {self.max_update}")

        @property
        def peak_lr(self) -> float:
            """The top of the first cycle: --lr, or --max-lr (fairseq <= 0.9, where --lr is the bottom)."""
            return self.lr[0] if self.max_lr is None else self.max_lr

        @property
        def floor_lr(self) -> float:
            """The bottom of the first cycle: --min-lr, or --lr when --max-lr is given."""
            return self.min_lr if self.max_lr is None else self.lr[0]

        @property
        def period(self) -> int:
            """The first cycle's length: --lr-period-updates, else what the warmup leaves of --max-update."""
            period = int(self.lr_period_updates)
            return period if period > 0 else self.max_update - self.warmup_updates

    def __init__(self, optimizer: Optimizer, max_lr: float, *, period: int, min_lr: float = 0.0,
                 warmup_updates: int = 0, warmup_init_lr: float = -1.0, t_mult: float = 1.0,
                 lr_shrink: float = 0.1) -> None:
        super().__init__(optimizer)
        check_non_negative(min_lr=min_lr, warmup_updates=warmup_updates, lr_shrink=lr_shrink)
        if min_lr > max_lr:
            raise UserError(f"--min-lr {min_lr:g} is above the peak LR {max_lr:g}; lower --min-lr")
        if period <= 0:
            raise UserError(f"--lr-period-updates must be positive, got {period}")
        if t_mult < 1:
            raise UserError(f"--t-mult must be >= 1 (cycles that shrink run out), got {t_mult:g}")
        self.max_lr = max_lr
        self.min_lr = min_lr
        self.period = period
        self.warmup_updates = warmup_updates
        self.warmup_init_lr = min_lr if warmup_init_lr < 0 else warmup_init_lr
        self.t_mult = t_mult
        self.lr_shrink = lr_shrink
        self.step_update(0)

    @staticmethod
    def add_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--warmup-updates", type=non_negative_int("--warmup-updates"), default=0, metavar="N",
                            help="raise the LR linearly to the peak over the first N updates")
        parser.add_argument("--warmup-init-lr", type=finite_float("--warmup-init-lr"), default=-1.0, metavar="LR",
                            help="LR at the start of the warmup (negative: --min-lr)")
        parser.add_argument("--min-lr", type=non_negative_float("--min-lr"), default=0.0, metavar="LR",
                            help="LR at the bottom of the first cosine cycle")
        parser.add_argument("--max-lr", type=positive_float("--max-lr"), default=None, metavar="LR",
                            help="fairseq <= 0.9 style: the peak LR, with --lr as the bottom of the cycle")
        parser.add_argument("--t-mult", type=float_at_least("--t-mult", 1.0), default=1.0, metavar="M",
                            help="each cycle is M times longer than the previous one")
        parser.add_argument("--lr-period-updates", default=-1, metavar="N",
                            type=finite_float("--lr-period-updates"),
                            help="length of the first cycle (negative: --max-update minus the warmup)")
        parser.add_argument("--lr-shrink", type=non_negative_float("--lr-shrink"), default=0.1, metavar="LS",
                            help="each cycle's peak and bottom are LS times the previous cycle's")

    @classmethod
    def build(cls, settings: CosineSchedule.Settings, optimizer: Optimizer) -> CosineSchedule:
        if settings.max_lr is not None and settings.min_lr != 0:
            logger.warning("cosine: --max-lr given, so --lr %g is the bottom of the cycle and "
                           "--min-lr %g is ignored (use --stop-min-lr to stop on a small LR)",
                           settings.lr[0], settings.min_lr)
        return cls(optimizer, settings.peak_lr, period=settings.period, min_lr=settings.floor_lr,
                   warmup_updates=settings.warmup_updates, warmup_init_lr=settings.warmup_init_lr,
                   t_mult=settings.t_mult, lr_shrink=settings.lr_shrink)

    def lr_at(self, num_updates: int) -> float:
        if num_updates < self.warmup_updates:
            slope = (self.max_lr - self.warmup_init_lr) / self.warmup_updates
            return self.warmup_init_lr + num_updates * slope
        cycle, t_in_cycle, cycle_length = self._position(num_updates - self.warmup_updates)
        shrink = self.lr_shrink ** cycle
        low, high = self.min_lr * shrink, self.max_lr * shrink
        return low + 0.5 * (high - low) * (1 + math.cos(math.pi * t_in_cycle / cycle_length))

    def _position(self, updates: int) -> tuple[int, float, float]:
        """(cycle index, updates into that cycle, its length) after `updates` post-warmup updates."""
        if self.t_mult == 1:
            cycle = updates // self.period
            return cycle, updates - cycle * self.period, self.period
        cycle = math.floor(math.log(1 + updates / self.period * (self.t_mult - 1), self.t_mult))
        # The logarithm can land a hair off an integer at a cycle boundary.
        while cycle > 0 and updates < self._cycle_start(cycle):
            cycle -= 1
        while updates >= self._cycle_start(cycle + 1):
            cycle += 1
        return cycle, updates - self._cycle_start(cycle), self.period * self.t_mult ** cycle

    def _cycle_start(self, cycle: int) -> float:
        # Cycles 0 .. i-1 last period * (1 + t_mult + ... + t_mult^(i-1)) updates together.
        return self.period * (self.t_mult ** cycle - 1) / (self.t_mult - 1)
