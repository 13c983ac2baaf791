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

logger = logging.getLogger(__name__)


class TrainingDiverged(UserError):
    """The loss or gradient became inf/NaN outside fp16 overflow handling."""


class Trainer:
    """Owns the model, criterion, optimizer and schedule, and runs `train_step` / `valid_step`.

    The gradient of an update is the sum of per-example losses over all micro-batches divided
    by the total sample size, as in fairseq, so `--update-freq N` equals an N times larger batch.
    """

    def __init__(self, model: torch.nn.Module, criterion: Criterion, optimizer: torch.optim.Optimizer,
                 lr_scheduler: Any, *, device: torch.device, clip_norm: float = 0.0, seed: int = 1) -> None:
        self.device = device
        self.model = model.to(device)
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
        for sample in samples:
            if not sample:
                continue
            loss, size, logging_output = self.criterion(self.model, self._to_device(sample))
            loss.backward()
            sample_size += size
            logging_outputs.append(logging_output)
        if sample_size == 0:
            return None
        grad_norm = self._normalize_and_clip(1.0 / sample_size)
        if not math.isfinite(grad_norm):
            raise TrainingDiverged(f"the gradient norm became {grad_norm} at update {self.num_updates + 1}; "
                                   f"lower --lr, set --clip-norm, or check the data. Nothing was saved "
                                   f"after the last good checkpoint")
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

    def _normalize_and_clip(self, scale: float) -> float:
        """Scale gradients by `scale` and clip them in one pass; returns the true (unclipped) norm."""
        grads = [p.grad for p in self._params if p.grad is not None]
        if not grads:
            return 0.0
        raw_norm = float(torch.nn.utils.get_total_norm(grads, norm_type=2.0, foreach=True))
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
        _, _, logging_output = self.criterion(self.model, self._to_device(sample))
        return logging_output

    def _to_device(self, sample: dict) -> dict:
        if self.device.type == "cpu":
            return sample
        return _move(sample, self.device)

    def extra_stats(self) -> dict[str, float]:
        """Trainer-level fields for the logs beyond the criterion's (precision, OOM)."""
        return {}

    def checkpoint_state(self, args, extra_state: dict) -> dict:
        """Everything a resume needs, with fairseq's top-level checkpoint keys."""
        cfg = checkpoint.plain_config(args)
        cfg["model"] = self.model.config.to_dict()
        return checkpoint.build_checkpoint_state(
            cfg=cfg, model_state=self.model.state_dict(), criterion_name=type(self.criterion).__name__,
            optimizer_name=type(self.optimizer).__name__, optimizer_state=self.optimizer.state_dict(),
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
            self.optimizer.load_state_dict(plan.optimizer_state)
            for group in self.optimizer.param_groups:
                group.update(plan.optimizer_overrides)
        if plan.lr_scheduler_state is not None:
            self.lr_scheduler.load_state_dict(plan.lr_scheduler_state)
        self.num_updates = plan.num_updates
        self.lr_scheduler.step_update(self.num_updates)
        self._optimizer_history = plan.optimizer_history
        return {"train_iterator": plan.train_iterator, "metrics": plan.metrics, "best": plan.best,
                "previous_training_time": plan.previous_training_time}


def _move(value: Any, device: torch.device) -> Any:
    if torch.is_tensor(value):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {key: _move(item, device) for key, item in value.items()}
    if isinstance(value, list):
        return [_move(item, device) for item in value]
    return value
