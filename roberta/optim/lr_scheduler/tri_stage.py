"""`tri_stage`: linear warmup, hold, exponential decay, then constant (fairseq's, from wav2vec).

Starting at lr * init_lr_scale, the LR rises linearly to --lr over the warmup steps, holds,
decays as lr * exp(-k * t) to lr * final_lr_scale over the decay steps, and stays there.
The three lengths are given directly or as --phase-ratio fractions of --max-update.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from torch.optim import Optimizer

from roberta.errors import UserError
from roberta.flag_types import non_negative_float, non_negative_int, positive_float
from roberta.optim.lr_scheduler.base import LRScheduler, check_non_negative, single_lr
from roberta.optim.options import parse_float_tuple
from roberta.registry import LR_SCHEDULERS


def parse_phase_ratio(text: str) -> tuple[float, ...]:
    """`--phase-ratio '(0.1, 0.4, 0.5)'`: three fractions >= 0 that sum to 1."""
    ratios = parse_float_tuple(text, "--phase-ratio", 3)
    if not math.isclose(sum(ratios), 1.0, abs_tol=1e-6) or min(ratios) < 0:
        raise UserError(f"--phase-ratio {text!r}: the fractions must be >= 0 and sum to 1")
    return ratios


def phase_ratio_flag(text: str) -> str:
    """`--phase-ratio` checked when the flags are parsed, and kept as typed, as fairseq keeps it."""
    parse_phase_ratio(text)
    return text


@LR_SCHEDULERS.register("tri_stage")
class TriStageSchedule(LRScheduler):
    @dataclass(frozen=True, kw_only=True, slots=True)
    class Settings:
        lr: tuple[float, ...]
        warmup_steps: int = 0
        hold_steps: int = 0
        decay_steps: int = 0
        phase_ratio: str | None = None  # as typed, as fairseq keeps it
        init_lr_scale: float = 0.01
        final_lr_scale: float = 0.01
        max_update: int = 0

        def __post_init__(self) -> None:
            if self.phase_ratio is not None:
                parse_phase_ratio(self.phase_ratio)
                if self.max_update <= 0:
                    raise UserError("--phase-ratio needs --max-update to turn fractions into update counts")
            single_lr(self.lr, "tri_stage")

        @property
        def stage_steps(self) -> tuple[int, int, int]:
            """(warmup, hold, decay) update counts: --phase-ratio of --max-update, else the step flags."""
            if self.phase_ratio is None:
                return self.warmup_steps, self.hold_steps, self.decay_steps
            warmup, hold, decay = (int(self.max_update * ratio) for ratio in parse_phase_ratio(self.phase_ratio))
            return warmup, hold, decay

    def __init__(self, optimizer: Optimizer, lr: float, *, warmup_steps: int = 0, hold_steps: int = 0,
                 decay_steps: int = 0, init_lr_scale: float = 0.01, final_lr_scale: float = 0.01) -> None:
        super().__init__(optimizer)
        check_non_negative(warmup_steps=warmup_steps, hold_steps=hold_steps, decay_steps=decay_steps,
                           init_lr_scale=init_lr_scale)
        if warmup_steps + hold_steps + decay_steps <= 0:
            raise UserError("tri_stage needs stage lengths: give --warmup-steps/--hold-steps/--decay-steps "
                            "or --phase-ratio with --max-update")
        if final_lr_scale <= 0:
            raise UserError(f"--final-lr-scale must be positive, got {final_lr_scale:g}")
        self.peak_lr = lr
        self.init_lr = lr * init_lr_scale
        self.final_lr = lr * final_lr_scale
        self.warmup_steps, self.hold_steps, self.decay_steps = warmup_steps, hold_steps, decay_steps
        self.decay_rate = -math.log(final_lr_scale) / decay_steps if decay_steps else 0.0
        self.step_update(0)

    @staticmethod
    def add_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--warmup-steps", type=non_negative_int("--warmup-steps"), default=0, metavar="N",
                            help="updates of linear warmup from lr*init-lr-scale to --lr")
        parser.add_argument("--hold-steps", type=non_negative_int("--hold-steps"), default=0, metavar="N",
                            help="updates at --lr")
        parser.add_argument("--decay-steps", type=non_negative_int("--decay-steps"), default=0, metavar="N",
                            help="updates of exponential decay down to lr*final-lr-scale")
        parser.add_argument("--phase-ratio", type=phase_ratio_flag, default=None, metavar="(W, H, D)",
                            help="tuple literal of the three stage fractions of --max-update, summing to 1; "
                                 "replaces the three step counts")
        parser.add_argument("--init-lr-scale", default=0.01, metavar="S",
                            type=non_negative_float("--init-lr-scale"),
                            help="the warmup starts at --lr times S")
        parser.add_argument("--final-lr-scale", default=0.01, metavar="S",
                            type=positive_float("--final-lr-scale"),
                            help="the decay ends at --lr times S")

    @classmethod
    def build(cls, settings: TriStageSchedule.Settings, optimizer: Optimizer) -> TriStageSchedule:
        warmup_steps, hold_steps, decay_steps = settings.stage_steps
        return cls(optimizer, settings.lr[0], warmup_steps=warmup_steps, hold_steps=hold_steps,
                   decay_steps=decay_steps, init_lr_scale=settings.init_lr_scale,
                   final_lr_scale=settings.final_lr_scale)

    def lr_at(self, num_updates: int) -> float:
        if num_updates < self.warmup_steps:
            return self.init_lr + (self.peak_lr - self.init_lr) * num_updates / self.warmup_steps
        t = num_updates - self.warmup_steps
        if t < self.hold_steps:
            return self.peak_lr
        t -= self.hold_steps
        if t <= self.decay_steps:
            return self.peak_lr * math.exp(-self.decay_rate * t)
        return self.final_lr
