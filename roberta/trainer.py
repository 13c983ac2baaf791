"""One update at a time: micro-batches, gradient normalisation, clipping, the optimizer step."""
from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch

from roberta import checkpoint
from roberta.criterion import Criterion, sum_logging_outputs
from roberta.errors import UserError
from roberta.models.weights import load_model_weights
from roberta.optim.loss_scaler import DynamicLossScaler
from roberta.precision import FP32, Precision

logger = logging.getLogger(__name__)


class TrainingDiverged(UserError):
    """The loss or gradient became inf/NaN outside fp16 overflow handling."""


class Trainer:
    """Owns the model, criterion, optimizer and schedule, and runs `train_step` / `valid_step`.

    The gradient of an update is the sum of per-example losses over all micro-batches divided
    by the total sample size, as in fairseq, so `--update-freq N` equals an N times larger batch.
    With a `loss_scaler` (float16) an update whose gradient overflows is skipped, as in fairseq:
    it does not count in `num_updates` and leaves the weights and the LR as they were.
    """

    def __init__(self, model: torch.nn.Module, criterion: Criterion, optimizer: torch.optim.Optimizer,
                 lr_scheduler: Any, *, device: torch.device, clip_norm: float = 0.0, seed: int = 1,
                 precision: Precision = FP32, loss_scaler: DynamicLossScaler | None = None) -> None:
        self.device = device
        self.precision = precision
        self.loss_scaler = loss_scaler
        # In place, so the optimizer built on these parameters keeps them.
        self.model = model.to(device=device, dtype=precision.param_dtype)
        self.criterion = criterion.to(device)
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.clip_norm = clip_norm
        self.seed = seed
        self.num_updates = 0
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        self._optimizer_history: list[dict] = []

    def get_lr(self) -> float:
        return self.lr_scheduler.get_lr()

    def train_step(self, samples: list[dict]) -> dict | None:
        """One update over the micro-batches of `samples`; returns its summed statistics."""
        # Dropout depends only on (seed, update), so a resumed run draws the same masks.
        torch.manual_seed(self.seed + self.num_updates)
        self.model.train()
        self.criterion.train()
        self.optimizer.zero_grad(set_to_none=True)
        start = time.perf_counter()
        logging_outputs: list[dict] = []
        sample_size = 0
        loss_scale = self.loss_scaler.scale if self.loss_scaler is not None else 1.0
        for sample in samples:
            if not sample:
                continue
            with self.precision.autocast(self.device):
                loss, size, logging_output = self.criterion(self.model, self._to_device(sample))
            (loss * loss_scale).backward()
            sample_size += size
            logging_outputs.append(logging_output)
        if sample_size == 0:
            return None
        grad_norm = self._normalize_and_clip(1.0 / (sample_size * loss_scale))
        if not self._usable(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.optimizer.step()
        self.num_updates += 1
        lr = self.lr_scheduler.step_update(self.num_updates)
        return {
            "logging_output": sum_logging_outputs(logging_outputs),
            "gnorm": grad_norm,
            "clipped": self.clip_norm > 0 and grad_norm > self.clip_norm,
            "lr": lr,
            "train_wall": time.perf_counter() - start,
        }

    def _usable(self, grad_norm: float) -> bool:
        """Whether the gradients may be applied: an fp16 overflow skips the update, any other
        non-finite norm stops training."""
        if self.loss_scaler is None:
            if not math.isfinite(grad_norm):
                raise TrainingDiverged(f"the gradient norm became {grad_norm} at update {self.num_updates + 1}; "
                                       f"lower --lr, set --clip-norm, or check the data. Nothing was saved "
                                       f"after the last good checkpoint")
            return True
        if self.loss_scaler.update(grad_norm):
            return True
        logger.info("NOTE: gradient overflow detected, ignoring gradient, setting loss scale to: %g",
                    self.loss_scaler.scale)
        return False

    def _normalize_and_clip(self, scale: float) -> float:
        """Scale gradients by `scale` and clip them in one pass; returns the true (unclipped) norm.

        `scale` also undoes the loss scale, so 16-bit gradients are touched once.
        """
        grads = [p.grad for p in self._params if p.grad is not None]
        if not grads:
            return 0.0
        # Summed in fp32: a 16-bit norm of loss-scaled gradients overflows long before they do.
        norms = torch._foreach_norm(grads, 2.0, dtype=torch.float32)
        raw_norm = float(torch.linalg.vector_norm(torch.stack(norms)))
        grad_norm = raw_norm * scale
        if self.clip_norm > 0 and grad_norm > self.clip_norm:
            scale *= self.clip_norm / (grad_norm + 1e-6)
        if math.isfinite(grad_norm) and scale != 1.0:
            torch._foreach_mul_(grads, scale)
        return grad_norm

    @torch.no_grad()
    def valid_step(self, sample: dict) -> dict:
        self.model.eval()
        self.criterion.eval()
        with self.precision.autocast(self.device):
            _, _, logging_output = self.criterion(self.model, self._to_device(sample))
        return logging_output

    def _to_device(self, sample: dict) -> dict:
        if self.device.type == "cpu":
            return sample
        return _move(sample, self.device)

    def extra_stats(self) -> dict[str, float]:
        """Trainer-level fields for the logs beyond the criterion's (precision, OOM)."""
        return {} if self.loss_scaler is None else {"loss_scale": self.loss_scaler.scale}

    def checkpoint_state(self, args, extra_state: dict) -> dict:
        """Everything a resume needs, with fairseq's top-level checkpoint keys."""
        cfg = checkpoint.plain_config(args)
        cfg["model"] = self.model.config.to_dict()
        return checkpoint.build_checkpoint_state(
            cfg=cfg, model_state=self.model.state_dict(), criterion_name=type(self.criterion).__name__,
            optimizer_name=type(self.optimizer).__name__, optimizer_state=self._optimizer_state(),
            lr_scheduler_state=self.lr_scheduler.state_dict(), num_updates=self.num_updates,
            previous_history=self._optimizer_history, save_optimizer_state=not args.no_save_optimizer_state,
            **extra_state)

    def load_checkpoint(self, state: dict, resets: checkpoint.Resets, *, path, optimizer_overrides=None) -> dict:
        """Restore what `resets` allows; returns the parts the training loop restores itself."""
        plan = checkpoint.apply_resets(state, resets, optimizer_name=type(self.optimizer).__name__,
                                       criterion_name=type(self.criterion).__name__,
                                       optimizer_overrides=optimizer_overrides)
        load_model_weights(self.model, plan.model, path=path)
        if plan.optimizer_state is not None:
            self._load_optimizer_state(plan.optimizer_state)
            for group in self.optimizer.param_groups:
                group.update(plan.optimizer_overrides)
        if plan.lr_scheduler_state is not None:
            self.lr_scheduler.load_state_dict(plan.lr_scheduler_state)
        self.num_updates = plan.num_updates
        self.lr_scheduler.step_update(self.num_updates)
        self._optimizer_history = plan.optimizer_history
        return {"train_iterator": plan.train_iterator, "metrics": plan.metrics, "best": plan.best,
                "previous_training_time": plan.previous_training_time}

    def _optimizer_state(self) -> dict:
        """The optimizer's state plus the loss scaler's, which --reset-optimizer drops with it."""
        state = self.optimizer.state_dict()
        if self.loss_scaler is None:
            return state
        # `loss_scale` is where fairseq keeps the scale; the full state makes a resume exact.
        return {**state, "loss_scale": self.loss_scaler.scale, "loss_scaler": self.loss_scaler.state_dict()}

    def _load_optimizer_state(self, state: dict) -> None:
        """Inverse of `_optimizer_state`. Without a scaler on both sides the scale starts afresh
        (fp16 run from an fp32 checkpoint) or is dropped (fp32 run from an fp16 checkpoint)."""
        if self.loss_scaler is not None and "loss_scaler" in state:
            self.loss_scaler.load_state_dict(state["loss_scaler"])
        self.optimizer.load_state_dict({key: value for key, value in state.items()
                                        if key not in ("loss_scale", "loss_scaler")})


def _move(value: Any, device: torch.device) -> Any:
    if torch.is_tensor(value):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {key: _move(item, device) for key, item in value.items()}
    if isinstance(value, list):
        return [_move(item, device) for item in value]
    return value
