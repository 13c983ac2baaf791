"""`polynomial_decay`: linear warmup to --lr, then a polynomial decay to --end-learning-rate.

With n updates, W warmup and T total: n <= W: lr * n / W (the first update uses LR 0, as in
fairseq); n >= T: end; otherwise (lr - end) * (1 - (n - W) / (T - W))^power + end.
RoBERTa's GLUE and pretraining recipes use it with W = 6% of T.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from torch.optim import Optimizer

from roberta.errors import UserError
from roberta.flag_types import non_negative_float, non_negative_int, positive_int
from roberta.optim.lr_scheduler.base import LRScheduler, check_non_negative, single_lr
from roberta.registry import LR_SCHEDULERS


@LR_SCHEDULERS.register("polynomial_decay")
class PolynomialDecaySchedule(LRScheduler):
    @dataclass(frozen=True, kw_only=True, slots=True)
    class Settings:
        lr: tuple[float, ...]
        warmup_updates: int = 0
        end_learning_rate: float = 0.0
        power: float = 1.0
        total_num_update: int | None = None
        force_anneal: int | None = None
        max_update: int = 0

        def __post_init__(self) -> None:
            if self.end_update <= 0:
                raise UserError("polynomial_decay needs the length of its decay: give --total-num-update "
                                "or --max-update (both are unset or 0)")
            single_lr(self.lr, "polynomial_decay")

        @property
        def end_update(self) -> int:
            """The update count at which the decay ends: --total-num-update, else --max-update."""
            return self.total_num_update if self.total_num_update is not None else self.max_update

    def __init__(self, optimizer: Optimizer, lr: float, *, total_num_update: int, warmup_updates: int = 0,
                 end_learning_rate: float = 0.0, power: float = 1.0, force_anneal: int | None = None) -> None:
        super().__init__(optimizer)
        check_non_negative(warmup_updates=warmup_updates, end_learning_rate=end_learning_rate)
        if total_num_update <= 0:
            raise UserError(f"--total-num-update must be positive, got {total_num_update}")
        if warmup_updates >= total_num_update:
            raise UserError(f"--warmup-updates {warmup_updates} must be smaller than the decay length "
                            f"--total-num-update {total_num_update}")
        if force_anneal is not None and force_anneal < 1:
            raise UserError(f"--force-anneal must be an epoch number >= 1, got {force_anneal}")
        self.peak_lr = lr
        self.total_num_update = total_num_update
        self.warmup_updates = warmup_updates
        self.end_learning_rate = end_learning_rate
        self.power = power
        self.force_anneal = force_anneal
        self.step_update(0)

    @staticmethod
    def add_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--warmup-updates", type=non_negative_int("--warmup-updates"), default=0, metavar="N",
                            help="raise the LR linearly from 0 to --lr over the first N updates")
        parser.add_argument("--end-learning-rate", default=0.0, metavar="LR",
                            type=non_negative_float("--end-learning-rate"),
                            help="LR reached at --total-num-update and kept afterwards")
        parser.add_argument("--power", type=non_negative_float("--power"), default=1.0, metavar="P",
                            help="exponent of the decay (1: linear)")
        parser.add_argument("--total-num-update", default=None, metavar="N",
                            type=positive_int("--total-num-update"),
                            help="update count at which the decay ends (default: --max-update)")
        parser.add_argument("--force-anneal", "--fa", default=None, metavar="N",
                            type=positive_int("--force-anneal"),
                            help="from epoch N on, restart the decay each epoch from the LR reached "
                                 "(fairseq's behaviour; it compounds the decay)")

    @classmethod
    def build(cls, settings: PolynomialDecaySchedule.Settings, optimizer: Optimizer) -> PolynomialDecaySchedule:
        return cls(optimizer, settings.lr[0], total_num_update=settings.end_update,
                   warmup_updates=settings.warmup_updates, end_learning_rate=settings.end_learning_rate,
                   power=settings.power, force_anneal=settings.force_anneal)

    def step_epoch(self, epoch: int) -> float:
        if self.force_anneal is not None and epoch >= self.force_anneal:
            self.peak_lr = self.lr
        return super().step_epoch(epoch)

    def lr_at(self, num_updates: int) -> float:
        warmup, total = self.warmup_updates, self.total_num_update
        if warmup > 0 and num_updates <= warmup:
            return self.peak_lr * num_updates / warmup
        if num_updates >= total:
            return self.end_learning_rate
        remaining = 1 - (num_updates - warmup) / (total - warmup)
        return (self.peak_lr - self.end_learning_rate) * remaining ** self.power + self.end_learning_rate

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "peak_lr": self.peak_lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.peak_lr = float(state.get("peak_lr", self.peak_lr))
        super().load_state_dict(state)
