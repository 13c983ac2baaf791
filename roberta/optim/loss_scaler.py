"""Dynamic loss scaling for float16 training, with fairseq's flags and state machine.

float16 keeps 5 exponent bits, so gradients below about 6e-8 flush to zero. Multiplying the
loss by a large scale before backward lifts them into range; the trainer divides the scale
out again. The right scale is found by trial, counting every attempted update (skipped ones
included) as an iteration:

- an overflow (the gradient norm is inf or NaN) skips the update; once the overflows since
  the last rescale make up at least `tolerance` of the iterations since then, the scale is
  divided by `scale_factor`, never below `threshold`; reaching `min_loss_scale` stops training;
- after `scale_window` iterations without an overflow the scale is multiplied by
  `scale_factor`, and again after every further `scale_window` clean iterations.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Protocol

from roberta.errors import UserError

logger = logging.getLogger(__name__)


class MinimumLossScaleReached(UserError):
    """Lowering the loss scale would reach --min-loss-scale: the loss overflows at any scale."""


class TrainingDiverged(UserError):
    """The loss or gradient became inf/NaN outside fp16 overflow handling."""


class LossScaler(Protocol):
    scale: float

    def check_loss(self, loss: float | None, update: int) -> None:
        """Called with the summed loss of update number `update` before its gradients are used."""

    def update(self, grad_norm: float, update: int) -> bool:
        """Count one attempted update with this (unscaled) gradient norm; False: skip it."""

    def stats(self) -> dict[str, float]:
        """Fields for the training log."""

    def state_dict(self) -> dict[str, Any] | None:
        """What a resume needs, stored beside the optimizer's state (None: nothing)."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class NoLossScaling:
    """fp32 and bf16: the loss is not scaled, so an inf/NaN loss or gradient means training diverged."""
    scale = 1.0

    def check_loss(self, loss: float | None, update: int) -> None:
        if loss is not None and not math.isfinite(loss):
            raise TrainingDiverged(f"the training loss became {loss} at update {update}; lower --lr, set "
                                   f"--clip-norm, or check the data. Nothing was saved after the last good "
                                   f"checkpoint")

    def update(self, grad_norm: float, update: int) -> bool:
        if not math.isfinite(grad_norm):
            raise TrainingDiverged(f"the gradient norm became {grad_norm} at update {update}; lower --lr, set "
                                   f"--clip-norm, or check the data. Nothing was saved after the last good "
                                   f"checkpoint")
        return True

    def stats(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any] | None:
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


NO_LOSS_SCALING = NoLossScaling()


@dataclass(frozen=True)
class LossScalerSettings:
    """fairseq's loss-scaling flags; the command layer fills `fp16_scale_window` when the flag is
    absent (fairseq's default: 2**14 micro-batches over all processes, in updates)."""
    fp16_scale_window: int
    fp16_init_scale: float = 2.0 ** 7
    fp16_scale_tolerance: float = 0.0
    threshold_loss_scale: float | None = None
    min_loss_scale: float = 1e-4


def default_scale_window(world_size: int, update_freq: int) -> int:
    return max(int(2 ** 14 / world_size / update_freq), 1)


class DynamicLossScaler:
    """The loss scale of a float16 run and the bookkeeping that moves it (module docstring)."""

    def __init__(self, init_scale: float = 2.0 ** 7, *, scale_factor: float = 2.0, scale_window: int = 2000,
                 tolerance: float = 0.0, threshold: float | None = None, min_loss_scale: float = 1e-4) -> None:
        self.scale = float(init_scale)
        self.scale_factor = scale_factor
        self.scale_window = scale_window
        self.tolerance = tolerance
        self.threshold = threshold
        self.min_loss_scale = min_loss_scale
        self._iter = 0
        self._last_overflow_iter = -1
        self._last_rescale_iter = -1
        self._overflows_since_rescale = 0

    @classmethod
    def build(cls, settings: LossScalerSettings) -> DynamicLossScaler:
        logger.info("dynamic loss scaling: initial scale %g, window %d updates, tolerance %g, threshold %s, "
                    "minimum %g", settings.fp16_init_scale, settings.fp16_scale_window,
                    settings.fp16_scale_tolerance, settings.threshold_loss_scale, settings.min_loss_scale)
        return cls(settings.fp16_init_scale, scale_window=settings.fp16_scale_window,
                   tolerance=settings.fp16_scale_tolerance, threshold=settings.threshold_loss_scale,
                   min_loss_scale=settings.min_loss_scale)

    def check_loss(self, loss: float | None, update: int) -> None:
        """An inf/NaN loss is left to the gradient overflow check."""

    def stats(self) -> dict[str, float]:
        return {"loss_scale": self.scale}

    def update(self, grad_norm: float, update: int = 0) -> bool:
        """Count one iteration with this (unscaled) gradient norm; False means it overflowed
        and the update must be skipped."""
        overflow = not math.isfinite(grad_norm)
        if overflow:
            self._lower_after_overflow()
        elif (self._iter - self._last_overflow_iter) % self.scale_window == 0:
            self.scale *= self.scale_factor
            self._last_rescale_iter = self._iter
        self._iter += 1
        return not overflow

    def _lower_after_overflow(self) -> None:
        self._last_overflow_iter = self._iter
        self._overflows_since_rescale += 1
        overflow_share = self._overflows_since_rescale / (self._iter - self._last_rescale_iter)
        if overflow_share < self.tolerance:
            return
        lowered = self.scale / self.scale_factor
        if self.threshold is not None:
            lowered = max(lowered, self.threshold)
        if lowered <= self.min_loss_scale:
            # fairseq's wording, which users search for.
            raise MinimumLossScaleReached(
                f"Minimum loss scale reached ({self.min_loss_scale:g}, --min-loss-scale). Your loss is "
                f"probably exploding. Try lowering the learning rate, using gradient clipping or "
                f"increasing the batch size.")
        self.scale = lowered
        self._last_rescale_iter = self._iter
        self._overflows_since_rescale = 0

    def state_dict(self) -> dict[str, Any]:
        """The moving parts only; the window, tolerance and bounds come from the flags."""
        return {"loss_scale": self.scale, "iter": self._iter, "last_overflow_iter": self._last_overflow_iter,
                "last_rescale_iter": self._last_rescale_iter,
                "overflows_since_rescale": self._overflows_since_rescale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale = float(state["loss_scale"])
        self._iter = int(state["iter"])
        self._last_overflow_iter = int(state["last_overflow_iter"])
        self._last_rescale_iter = int(state["last_rescale_iter"])
        self._overflows_since_rescale = int(state["overflows_since_rescale"])
