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

import argparse
import logging
import math
from typing import Any

from roberta.errors import UserError

logger = logging.getLogger(__name__)


class MinimumLossScaleReached(UserError):
    """Lowering the loss scale would reach --min-loss-scale: the loss overflows at any scale."""


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
    def from_args(cls, args: argparse.Namespace) -> DynamicLossScaler:
        """fairseq's default window: 2**14 micro-batches over all processes, in updates."""
        window = args.fp16_scale_window
        if window is None:
            window = max(int(2 ** 14 / (args.distributed_world_size or 1) / args.update_freq[0]), 1)
        logger.info("dynamic loss scaling: initial scale %g, window %d updates, tolerance %g, threshold %s, "
                    "minimum %g", args.fp16_init_scale, window, args.fp16_scale_tolerance,
                    args.threshold_loss_scale, args.min_loss_scale)
        return cls(args.fp16_init_scale, scale_window=window, tolerance=args.fp16_scale_tolerance,
                   threshold=args.threshold_loss_scale, min_loss_scale=args.min_loss_scale)

    def update(self, grad_norm: float) -> bool:
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
