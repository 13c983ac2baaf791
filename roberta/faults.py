"""Test-only fault injection: `ROBERTA_INJECT_FAULTS` makes chosen training steps fail on purpose.

The variable holds `;`-separated faults, each `KIND[:rank=R,..][:steps=S,..][:micro_batches=M,..]
[:updates=U,..]`. KIND is one of
- `oom-forward`, `oom-backward`: raise a CUDA-style out-of-memory error there;
- `nan-loss`: make the loss NaN;
- `kill-step`: SIGKILL this process in the forward pass of a training step;
- `kill-save`: SIGKILL it once a checkpoint is serialized to its temporary file, before any name
  is replaced; `kill-save-names`: after the first name is replaced, before the others;
- `kill-validate`: SIGKILL it during a validation pass (at its first batch);
- `sigterm-validate`: send it SIGTERM during a validation pass (at each batch: a stop request);
- `slow-validate`: make each validation batch take SLOW_VALIDATE_SECONDS longer.
`steps` counts `train_step` calls of this process from 1 (skipped updates count too, so a fault
never repeats forever); `micro_batches` counts from 0 within a step; `updates` is the update being
computed (in a step) or just finished (at a save or validation), so a kill can be aimed at one
moment of a run that was resumed. An omitted filter matches everything. The environment reaches
every process a run starts, so a test can make one rank of a multi-process run fail.
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from roberta.errors import UserError

ENVIRONMENT_VARIABLE = "ROBERTA_INJECT_FAULTS"
KINDS = ("oom-forward", "oom-backward", "nan-loss", "kill-step", "kill-save", "kill-save-names", "kill-validate",
         "sigterm-validate", "slow-validate")
SLOW_VALIDATE_SECONDS = 1.0
FILTERS = ("rank", "steps", "micro_batches", "updates")


@dataclass(frozen=True)
class Fault:
    kind: str
    ranks: frozenset[int] | None = None
    steps: frozenset[int] | None = None
    micro_batches: frozenset[int] | None = None
    updates: frozenset[int] | None = None

    def matches(self, kind: str, rank: int, step: int, micro_batch: int, update: int | None) -> bool:
        return (self.kind == kind and _within(rank, self.ranks) and _within(step, self.steps)
                and _within(micro_batch, self.micro_batches) and _within(update, self.updates))


def _within(value: int | None, allowed: frozenset[int] | None) -> bool:
    return allowed is None or value in allowed


def parse_faults(text: str) -> list[Fault]:
    faults = []
    for spec in filter(None, (part.strip() for part in text.split(";"))):
        kind, *filters = spec.split(":")
        if kind not in KINDS:
            raise UserError(f"{ENVIRONMENT_VARIABLE}: unknown fault '{kind}' in '{spec}'; use one of {', '.join(KINDS)}")
        sets: dict[str, frozenset[int]] = {}
        for item in filters:
            name, _, values = item.partition("=")
            if name not in FILTERS:
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

    def fires(self, kind: str, step: int = 0, micro_batch: int = 0, update: int | None = None) -> bool:
        return any(fault.matches(kind, self.rank, step, micro_batch, update) for fault in self.faults)

    def kill_if(self, kind: str, *, step: int = 0, micro_batch: int = 0, update: int | None = None,
                signum: int = signal.SIGKILL) -> None:
        """Send this process `signum` when the fault matches. SIGKILL (the `kill-*` faults): no
        handler, cleanup or flush runs, exactly as when the machine loses power or the OOM killer
        strikes."""
        if self.fires(kind, step, micro_batch, update):
            os.kill(os.getpid(), signum)


NO_FAULTS = FaultInjector([], rank=0)
