"""argparse `type=` parsers for number flags: a value out of its range stops the command with one
line naming the flag, before any data is read.

Each factory takes the flag's name and returns the parser of its values. A float flag refuses
NaN and +-inf always: no setting means them, and they would surface only mid-training (a NaN
weight decay fails at the second update, with advice about the learning rate). The parsers raise
`UserError`, as the list-valued parsers of roberta/optim/options.py do, so a bad value is the
same one line (exit status 1) whichever parser the flag is declared on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from roberta.errors import UserError

# numpy's RandomState, which seeds the data order and masking, takes 0 .. 2**32 - 1.
MAX_SEED = 2 ** 32 - 1


@dataclass(frozen=True)
class NumberFlag:
    """The parser of one flag's values: a `kind` (int, or a finite float) that `accept`s, as
    `requirement` says in words. Tests find every number flag of a parser through this class."""

    flag: str
    kind: type[int] | type[float]
    requirement: str
    accept: Callable[[float], bool]

    def __call__(self, text: str) -> int | float:
        try:
            value = self.kind(text)
        except ValueError:
            noun = "an integer" if self.kind is int else "a number"
            raise UserError(f"{self.flag} {text!r} is not {noun}; it must be {self.requirement}") from None
        if self.kind is float and not math.isfinite(value):
            raise UserError(f"{self.flag} must be a finite number, got {text}")
        if not self.accept(value):
            raise UserError(f"{self.flag} must be {self.requirement}, got {text}")
        return value


def finite_float(flag: str) -> NumberFlag:
    """Any finite number (the negative values of some flags mean "derive it")."""
    return NumberFlag(flag, float, "a finite number", lambda value: True)


def non_negative_float(flag: str) -> NumberFlag:
    return NumberFlag(flag, float, ">= 0", lambda value: value >= 0)


def positive_float(flag: str) -> NumberFlag:
    return NumberFlag(flag, float, "> 0", lambda value: value > 0)


def float_at_least(flag: str, minimum: float) -> NumberFlag:
    return NumberFlag(flag, float, f">= {minimum:g}", lambda value: value >= minimum)


def probability(flag: str) -> NumberFlag:
    return NumberFlag(flag, float, "in [0, 1]", lambda value: 0 <= value <= 1)


def int_at_least(flag: str, minimum: int) -> NumberFlag:
    return NumberFlag(flag, int, f">= {minimum}", lambda value: value >= minimum)


def non_negative_int(flag: str) -> NumberFlag:
    return int_at_least(flag, 0)


def positive_int(flag: str) -> NumberFlag:
    return int_at_least(flag, 1)


def seed_int(flag: str) -> NumberFlag:
    return NumberFlag(flag, int, f"in [0, {MAX_SEED}] (numpy's seed range)",
                      lambda value: 0 <= value <= MAX_SEED)
