"""Optimization flags every training run has (`--lr`, `--update-freq`, `--clip-norm`, ...).

fairseq users type list-valued flags as comma lists (`--lr 0.1,0.01`) and tuples as Python
literals (`--adam-betas '(0.9, 0.98)'`); the parsers for those legacy formats live here. They
are argparse `type=` functions that raise `UserError`, so a bad value stops the run with one
line naming the flag, before any data is read. `OptimizationSettings` holds the parsed flags
and runs the same checks when it is built in code.
"""
from __future__ import annotations

import argparse
import ast
import math
from dataclasses import dataclass
from typing import Sequence

from roberta.errors import UserError
from roberta.flag_types import NumberFlag, finite_float, non_negative_float, non_negative_int, positive_int


def _list_items(values: str | float | Sequence[str | float]) -> list[str | float]:
    if isinstance(values, (int, float)):
        return [values]
    if isinstance(values, str):
        # fairseq evaluated these strings, so '[1e-5]' and '(0.1, 0.01)' are seen in the wild.
        items = values.strip().strip("[]()").split(",")
        if len(items) > 1 and not items[-1].strip():
            items = items[:-1]
        return [item.strip() for item in items]
    return list(values)


def parse_lr(values: str | float | Sequence[str | float]) -> list[float]:
    """`--lr 1e-5` or `--lr 0.1,0.01` (one LR per epoch, used by `fixed`) as positive floats."""
    try:
        lrs = [float(item) for item in _list_items(values)]
    except (TypeError, ValueError):
        raise UserError(f"--lr {values!r} is not a number or a comma-separated list of numbers; "
                        f"write e.g. --lr 1e-5 or --lr 0.1,0.01") from None
    if not lrs or not all(math.isfinite(lr) and lr > 0 for lr in lrs):
        raise UserError(f"--lr {values!r}: every learning rate must be a positive number")
    return lrs


def parse_update_freq(values: str | int | Sequence[str | int]) -> list[int]:
    """`--update-freq 4` or `--update-freq 4,2` (one value per epoch) as integers >= 1."""
    try:
        freqs = [_strict_int(item) for item in _list_items(values)]
    except (TypeError, ValueError):
        raise UserError(f"--update-freq {values!r} is not an integer or a comma-separated list "
                        f"of integers; write e.g. --update-freq 4") from None
    if not freqs or min(freqs) < 1:
        raise UserError(f"--update-freq {values!r}: every value must be >= 1 (1 means no accumulation)")
    return freqs


def _strict_int(item: str | float) -> int:
    if isinstance(item, float) and not item.is_integer():
        raise ValueError(item)
    return int(item)


def parse_float_tuple(text: str | Sequence[float], flag: str, length: int) -> tuple[float, ...]:
    """A Python tuple literal of `length` numbers such as '(0.9, 0.98)', evaluated safely."""
    value: object = text
    if isinstance(text, str):
        try:
            value = ast.literal_eval(text)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            value = None
    example = "(" + ", ".join(["0.5"] * length) + ")"
    if (not isinstance(value, (tuple, list)) or len(value) != length
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise UserError(f"{flag} {text!r} must be a tuple of {length} numbers, written like '{example}'")
    return tuple(float(v) for v in value)


def parse_lr_decay(text: str | float) -> float:
    """`--lr-decay 0.75`: the per-layer LR factor, in (0, 1]; 1 turns layer-wise decay off."""
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"--lr-decay {text!r} is not a number; write e.g. --lr-decay 0.75") from None
    if not 0.0 < value <= 1.0:  # also rejects NaN
        raise UserError(f"--lr-decay must be in (0, 1] (1 turns layer-wise LR decay off), got {text}")
    return value


# The number flags' parsers by dest, shared by the flag parser and `OptimizationSettings`.
_NUMBER_FLAGS: dict[str, NumberFlag] = {
    "clip_norm": non_negative_float("--clip-norm"),
    "max_update": non_negative_int("--max-update"),
    "max_epoch": non_negative_int("--max-epoch"),
    "stop_min_lr": finite_float("--stop-min-lr"),
    "lr_decay_layers": positive_int("--lr-decay-layers"),
}


@dataclass(frozen=True, kw_only=True, slots=True)
class OptimizationSettings:
    """The flags `add_optimization_args` declares, by dest, with the same defaults and checks."""

    lr: tuple[float, ...] = (0.25,)
    clip_norm: float = 0.0
    update_freq: tuple[int, ...] = (1,)
    oom_backoff: bool = False
    max_update: int = 0
    max_epoch: int = 0
    stop_min_lr: float = -1.0
    lr_decay: float = 1.0
    lr_decay_layers: int | None = None

    def __post_init__(self) -> None:
        parse_lr(self.lr)
        parse_update_freq(self.update_freq)
        parse_lr_decay(self.lr_decay)
        for name, check in _NUMBER_FLAGS.items():
            value = getattr(self, name)
            if value is not None:
                check(value)


def add_optimization_args(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The flags of fairseq's `optimization` group (a parser or an argument group)."""
    parser.add_argument("--lr", type=parse_lr, default="0.25", metavar="LR_1,LR_2,...",
                        help="learning rate (peak LR for schedules with warmup); the `fixed` "
                             "scheduler takes a comma list, one LR per epoch")
    parser.add_argument("--clip-norm", type=_NUMBER_FLAGS["clip_norm"], default=0.0,
                        metavar="NORM", help="clip the gradient norm to this value (0 disables)")
    parser.add_argument("--update-freq", type=parse_update_freq, default="1", metavar="N1,N2,...",
                        help="accumulate gradients over N mini-batches per update; a comma list "
                             "gives one value per epoch, the last one holding afterwards")
    parser.add_argument("--oom-backoff", action="store_true",
                        help="after two out-of-memory errors at one micro-batch size, split every mini-batch "
                             "in two and accumulate twice as many (repeatedly if needed), keeping the "
                             "examples per update; without it an OOM only skips its update")
    parser.add_argument("--max-update", type=_NUMBER_FLAGS["max_update"], default=0, metavar="N",
                        help="stop after N updates (0: no limit); also the default decay length "
                             "of polynomial_decay and cosine")
    parser.add_argument("--max-epoch", type=_NUMBER_FLAGS["max_epoch"], default=0, metavar="N",
                        help="stop after N epochs (0: no limit)")
    parser.add_argument("--stop-min-lr", type=_NUMBER_FLAGS["stop_min_lr"], default=-1.0, metavar="LR",
                        help="stop training when the learning rate falls to or below this value")
    parser.add_argument("--lr-decay", "--lr_decay", type=parse_lr_decay, default=1.0, metavar="D",
                        help="layer-wise LR decay: heads and the top encoder layer train at the full LR, "
                             "each layer below at D times the one above, the embeddings at D times "
                             "the bottom layer (1: off; the SQuAD recipe uses 0.75)")
    parser.add_argument("--lr-decay-layers", "--lr_decay_layers", type=_NUMBER_FLAGS["lr_decay_layers"],
                        default=None, metavar="L",
                        help="number of encoder layers for --lr-decay (default: the model's); accepted "
                             "for fairseq-fork commands and must equal the model's layer count")
