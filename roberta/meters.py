"""Meters: running averages, sums, rates and stopwatches, grouped in fairseq's display order.

Meters only accumulate numbers. Derived values (ppl = 2**loss, accuracy in percent) are
computed by the criterion's `reduce_metrics`, and rounding belongs to `roberta.logging`.
Every `state_dict` holds plain floats, ints, strings and dicts, so it survives
`torch.load(..., weights_only=True)`.
"""
from __future__ import annotations

import time
from typing import Callable, Iterator, Union, cast

Clock = Callable[[], float]

# fairseq's meter priorities, flattened into one list; keys not listed follow `wall`,
# in the order they were first updated.
STAT_ORDER: tuple[str, ...] = (
    "loss", "nll_loss", "ppl", "accuracy",
    "wps", "ups", "wpb", "bsz", "num_updates", "lr", "gnorm", "clip", "oom", "loss_scale",
    "gb_free", "train_wall", "wall",
)
_PRIORITY = {name: rank for rank, name in enumerate(STAT_ORDER)}


class AverageMeter:
    """Weighted mean: sum(value * weight) / sum(weight); the last value while no weight is seen."""

    kind = "avg"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sum = 0.0
        self.weight = 0.0
        self.count = 0
        self.last = 0.0

    def update(self, value: float, weight: float = 1.0) -> None:
        self.last = float(value)
        self.sum += float(value) * float(weight)
        self.weight += float(weight)
        self.count += 1

    @property
    def is_empty(self) -> bool:
        return self.count == 0

    @property
    def smoothed_value(self) -> float:
        return self.sum / self.weight if self.weight else self.last

    def state_dict(self) -> dict:
        return {"kind": self.kind, "sum": self.sum, "weight": self.weight,
                "count": self.count, "last": self.last}

    def load_state_dict(self, state: dict) -> None:
        self.sum, self.weight = float(state["sum"]), float(state["weight"])
        self.count, self.last = int(state["count"]), float(state["last"])


class SumMeter:
    """Running total of the values."""

    kind = "sum"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sum = 0.0
        self.count = 0

    def update(self, value: float) -> None:
        self.sum += float(value)
        self.count += 1

    @property
    def is_empty(self) -> bool:
        return self.count == 0

    @property
    def smoothed_value(self) -> float:
        return self.sum

    def state_dict(self) -> dict:
        return {"kind": self.kind, "sum": self.sum, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.sum, self.count = float(state["sum"]), int(state["count"])


class LastValueMeter:
    """The most recent value (num_updates, lr, loss_scale)."""

    kind = "last"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.value: float | None = None

    def update(self, value: float) -> None:
        self.value = float(value)

    @property
    def is_empty(self) -> bool:
        return self.value is None

    @property
    def smoothed_value(self) -> float:
        return 0.0 if self.value is None else self.value

    def state_dict(self) -> dict:
        return {"kind": self.kind, "value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = None if state["value"] is None else float(state["value"])


class TimeMeter:
    """Rate: counted items per second of wall clock since the last reset.

    `offset` seconds and an initial count let a resumed run continue its rate instead of
    restarting it; `load_state_dict` uses them.
    """

    kind = "rate"

    def __init__(self, clock: Clock = time.perf_counter) -> None:
        self._clock = clock
        self.reset()

    def reset(self, n: float = 0.0, offset: float = 0.0) -> None:
        self.n = float(n)
        self.offset = float(offset)
        self.start = self._clock()

    def update(self, n: float = 1.0) -> None:
        self.n += float(n)

    @property
    def elapsed_time(self) -> float:
        return self.offset + (self._clock() - self.start)

    @property
    def is_empty(self) -> bool:
        return self.n == 0

    @property
    def smoothed_value(self) -> float:
        elapsed = self.elapsed_time
        return self.n / elapsed if elapsed > 0 else 0.0

    def state_dict(self) -> dict:
        return {"kind": self.kind, "n": self.n, "elapsed": self.elapsed_time}

    def load_state_dict(self, state: dict) -> None:
        self.reset(n=state["n"], offset=state["elapsed"])


class StopwatchMeter:
    """Seconds accumulated between `start()` and `stop()` calls (a running lap included)."""

    kind = "stopwatch"

    def __init__(self, clock: Clock = time.perf_counter) -> None:
        self._clock = clock
        self.reset()

    def reset(self) -> None:
        self.sum = 0.0
        self.laps = 0
        self.started_at: float | None = None

    def start(self) -> None:
        self.started_at = self._clock()

    def stop(self) -> None:
        if self.started_at is not None:
            self.sum += self._clock() - self.started_at
            self.laps += 1
            self.started_at = None

    @property
    def running(self) -> bool:
        return self.started_at is not None

    @property
    def is_empty(self) -> bool:
        return self.laps == 0 and not self.running

    @property
    def smoothed_value(self) -> float:
        lap = self._clock() - self.started_at if self.started_at is not None else 0.0
        return self.sum + lap

    def state_dict(self) -> dict:
        return {"kind": self.kind, "sum": self.smoothed_value, "laps": self.laps,
                "running": self.running}

    def load_state_dict(self, state: dict) -> None:
        self.sum, self.laps = float(state["sum"]), int(state["laps"])
        # A lap that was running when the checkpoint was written resumes now.
        self.started_at = self._clock() if state["running"] else None


Meter = Union[AverageMeter, SumMeter, LastValueMeter, TimeMeter, StopwatchMeter]
_KINDS: dict[str, type] = {cls.kind: cls for cls in
                           (AverageMeter, SumMeter, LastValueMeter, TimeMeter, StopwatchMeter)}
_TIMED = (TimeMeter, StopwatchMeter)


def ordered_names(names: list[str]) -> list[str]:
    """`names` in fairseq's display order; unknown names keep their relative order at the end."""
    return sorted(names, key=lambda name: _PRIORITY.get(name, len(STAT_ORDER)))


class MeterGroup:
    """Named meters, created on first update and reported in a stable, fairseq-like order."""

    def __init__(self, clock: Clock = time.perf_counter) -> None:
        self._clock = clock
        self._meters: dict[str, Meter] = {}

    def _get(self, name: str, kind: str) -> Meter:
        if kind not in _KINDS:
            raise ValueError(f"unknown meter kind {kind!r}; choose from {sorted(_KINDS)}")
        meter = self._meters.get(name)
        if meter is None:
            cls = _KINDS[kind]
            meter = cls(self._clock) if cls in _TIMED else cls()
            self._meters[name] = meter
        elif meter.kind != kind:
            raise ValueError(f"meter {name!r} is a {meter.kind!r} meter, not {kind!r}")
        return meter

    def update(self, name: str, value: float, weight: float = 1.0, kind: str = "avg") -> None:
        """Add `value` to meter `name`: avg (weighted), sum, last, or rate (value = items counted)."""
        if kind == "stopwatch":
            raise ValueError(f"meter {name!r}: use stopwatch({name!r}).start()/stop() for timers")
        meter = self._get(name, kind)
        if isinstance(meter, AverageMeter):
            meter.update(value, weight)
        else:
            assert not isinstance(meter, StopwatchMeter)  # refused above; narrows the union
            meter.update(value)

    def stopwatch(self, name: str) -> StopwatchMeter:
        """The stopwatch called `name`, created (stopped) on first use."""
        return cast(StopwatchMeter, self._get(name, "stopwatch"))

    def __getitem__(self, name: str) -> Meter:
        return self._meters[name]

    def __contains__(self, name: object) -> bool:
        return name in self._meters

    def __iter__(self) -> Iterator[str]:
        return iter(ordered_names(list(self._meters)))

    def smoothed_values(self) -> dict[str, float]:
        """Current value of every meter that saw data since the last reset, in display order."""
        return {name: self._meters[name].smoothed_value for name in self
                if not self._meters[name].is_empty}

    def reset(self) -> None:
        for meter in self._meters.values():
            meter.reset()

    def state_dict(self) -> dict[str, dict]:
        return {name: meter.state_dict() for name, meter in self._meters.items()}

    def load_state_dict(self, state: dict[str, dict]) -> None:
        """Restore the meters in `state`; existing meters of the same kind keep their clocks."""
        previous, self._meters = self._meters, {}
        for name, meter_state in state.items():
            if name in previous and previous[name].kind == meter_state["kind"]:
                self._meters[name] = previous[name]
            self._get(name, meter_state["kind"]).load_state_dict(meter_state)
