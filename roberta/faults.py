"""Test-only fault injection: `ROBERTA_INJECT_FAULTS` makes chosen training steps fail on purpose.

The variable holds `;`-separated faults, each `KIND[:rank=R,..][:steps=S,..][:micro_batches=M,..]`:
KIND is `oom-forward`, `oom-backward` (raise a CUDA-style out-of-memory error there) or `nan-loss`
(make the loss NaN). `steps` counts `train_step` calls from 1 (skipped updates count too, so a
fault never repeats forever); `micro_batches` counts from 0 within a step. An omitted filter
matches everything. The environment reaches every process a run starts, so a test can make one
rank of a multi-process run fail.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from roberta.errors import UserError

ENVIRONMENT_VARIABLE = "ROBERTA_INJECT_FAULTS"
KINDS = ("oom-forward", "oom-backward", "nan-loss")


@dataclass(frozen=True)
class Fault:
    kind: str
    ranks: frozenset[int] | None = None
    steps: frozenset[int] | None = None
    micro_batches: frozenset[int] | None = None

    def matches(self, kind: str, rank: int, step: int, micro_batch: int) -> bool:
        return (self.kind == kind and (self.ranks is None or rank in self.ranks)
                and (self.steps is None or step in self.steps)
                and (self.micro_batches is None or micro_batch in self.micro_batches))


def parse_faults(text: str) -> list[Fault]:
    faults = []
    for spec in filter(None, (part.strip() for part in text.split(";"))):
        kind, *filters = spec.split(":")
        if kind not in KINDS:
            raise UserError(f"{ENVIRONMENT_VARIABLE}: unknown fault '{kind}' in '{spec}'; use one of {', '.join(KINDS)}")
        sets: dict[str, frozenset[int]] = {}
        for item in filters:
            name, _, values = item.partition("=")
            if name not in ("rank", "steps", "micro_batches"):
                raise UserError(f"{ENVIRONMENT_VARIABLE}: unknown filter '{name}' in '{spec}'")
            try:
                sets["ranks" if name == "rank" else name] = frozenset(int(value) for value in values.split(","))
            except ValueError:
                raise UserError(f"{ENVIRONMENT_VARIABLE}: '{item}' in '{spec}' is not a list of integers") from None
        faults.append(Fault(kind, **sets))
    return faults


class FaultInjector:
    """Answers, at each point of a training step, whether a configured fault fires there."""

    def __init__(self, faults: list[Fault], rank: int) -> None:
        self.faults = faults
        self.rank = rank

    @classmethod
    def from_environment(cls, rank: int) -> FaultInjector:
        return cls(parse_faults(os.environ.get(ENVIRONMENT_VARIABLE, "")), rank)

    def fires(self, kind: str, step: int, micro_batch: int) -> bool:
        return any(fault.matches(kind, self.rank, step, micro_batch) for fault in self.faults)
