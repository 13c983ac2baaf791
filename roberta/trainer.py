"""One update at a time: micro-batches, gradient normalisation, clipping, the optimizer step."""
from __future__ import annotations

import logging
import math
import signal
import time
from dataclasses import dataclass
from typing import Any

import torch

from roberta import fairseq_resume
from roberta.checkpoint.files import build_checkpoint_state
from roberta.checkpoint.restore import TrainerState
from roberta.criterion import Criterion, sum_logging_outputs
from roberta.distributed import SINGLE_PROCESS, DistributedContext, all_reduce_sum
from roberta.errors import UserError
from roberta.faults import ENVIRONMENT_VARIABLE as FAULTS_VARIABLE, SLOW_VALIDATE_SECONDS, FaultInjector
from roberta.gradient_sync import GradientSync, choose_gradient_sync
from roberta.models.roberta import RobertaModel
from roberta.oom import OomBackoff, is_out_of_memory, release_memory, report_oom
from roberta.optim.layer_decay import align_saved_groups
from roberta.optim.loss_scaler import NO_LOSS_SCALING, LossScaler
from roberta.precision import FP32, Precision

logger = logging.getLogger(__name__)


@dataclass
class _LocalPart:
    """One rank's share of an update before the ranks agree on it."""
    logging_outputs: list[dict]
    sample_size: int
    out_of_memory: bool
    # torch DDP: the backward that all-reduces waits until every rank agrees the update goes ahead.
    deferred_loss: torch.Tensor | None


class Trainer:
    """Owns the model, criterion, optimizer and schedule, and runs `train_step` / `valid_step`.

    The gradient of an update is the sum of per-example losses over all micro-batches and all
    ranks divided by the total sample size, as in fairseq, so `--update-freq N` equals an N
    times larger batch and world size W with `--update-freq 1` equals one process with W.
    With a dynamic `loss_scaler` (float16) an update whose gradient overflows is skipped, as in
    fairseq: it does not count in `num_updates` and leaves the weights and the LR as they were.
    An out-of-memory error in any micro-batch of any rank skips the update on every rank alike.
    How gradients are summed over processes is the `gradient_sync` strategy (one process by
    default).
    """

    def __init__(self, model: RobertaModel, criterion: Criterion, optimizer: torch.optim.Optimizer | None,
                 lr_scheduler: Any, *, device: torch.device, clip_norm: float = 0.0, seed: int = 1,
                 precision: Precision = FP32, loss_scaler: LossScaler = NO_LOSS_SCALING,
                 context: DistributedContext = SINGLE_PROCESS, gradient_sync: GradientSync | None = None,
                 oom_backoff: bool = False) -> None:
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
        self.context = context
        self.gradient_sync = gradient_sync or choose_gradient_sync(context, device=device)
        self.oom_updates = 0
        self.overflow_updates = 0  # skipped for an fp16 gradient overflow
        self.oom_backoff = OomBackoff(oom_backoff)
        self.faults = FaultInjector.from_environment(context.rank)
        self._steps = 0
        self._micro_batch = 0
        if self.faults.faults:
            self.model.register_forward_pre_hook(self._inject_forward_fault)
        # Set by every train_step: whether any rank asked to stop (SIGTERM/SIGINT) before it.
        self.stop_agreed = False
        self._dummy_sample: dict | None = None
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        self._optimizer_history: list[dict] = []

    @property
    def _optimizer(self) -> torch.optim.Optimizer:
        """The optimizer, for training; a trainer that only validates (roberta-validate) has none."""
        if self.optimizer is None:
            raise ValueError("this Trainer was built without an optimizer: it can only validate")
        return self.optimizer

    def get_lr(self) -> float:
        return self.lr_scheduler.get_lr()

    def train_step(self, samples: list[dict], *, stop_requested: bool = False) -> dict | None:
        """One update over the micro-batches of `samples` (all ranks together); returns its summed
        statistics, or None when the update was skipped (fp16 overflow, OOM, no data).

        `stop_requested` (this rank got SIGTERM/SIGINT) travels in the update's one small
        all-reduce, so every rank sets `stop_agreed` alike and they all stop after this update."""
        # Dropout depends only on (seed, update), so a resumed run draws the same masks.
        torch.manual_seed(self.seed + self.num_updates)
        self.model.train()
        self.criterion.train()
        self._optimizer.zero_grad(set_to_none=True)
        self._steps += 1
        start = time.perf_counter()
        part = self._micro_batches(samples)
        failed_ranks, sample_size, stopping_ranks = all_reduce_sum(
            [float(part.out_of_memory), float(part.sample_size), float(stop_requested)])
        self.stop_agreed = stopping_ranks > 0
        if failed_ranks:
            self._skip_for_oom(int(failed_ranks))
            return None
        # Before the empty-update check, so torch DDP completes the iteration its forward began.
        self._finish_backward(part.deferred_loss)
        if sample_size == 0:
            return None
        logging_output = sum_logging_outputs(part.logging_outputs)
        logging_output = dict(zip(logging_output, all_reduce_sum(list(logging_output.values()))))
        self.loss_scaler.check_loss(logging_output.get("loss"), self.num_updates + 1)
        grad_norm = self._normalize_and_clip(self.gradient_sync.world_factor / (sample_size * self.loss_scaler.scale))
        if not self.loss_scaler.update(grad_norm, self.num_updates + 1):
            logger.info("NOTE: gradient overflow detected, ignoring gradient, setting loss scale to: %g",
                        self.loss_scaler.scale)
            self.overflow_updates += 1
            self._optimizer.zero_grad(set_to_none=True)
            return None
        self._optimizer.step()
        self.num_updates += 1
        lr = self.lr_scheduler.step_update(self.num_updates)
        return {
            "logging_output": logging_output,
            "gnorm": grad_norm,
            "clipped": self.clip_norm > 0 and grad_norm > self.clip_norm,
            "lr": lr,
            "train_wall": time.perf_counter() - start,
        }

    def _micro_batches(self, samples: list[dict]) -> _LocalPart:
        """Forward and backward of this rank's micro-batches; the gradients accumulate in place."""
        logging_outputs: list[dict] = []
        sample_size = 0
        out_of_memory = False
        deferred = None  # torch DDP: the backward that all-reduces waits until every rank agrees
        loss: torch.Tensor | None  # set to None after an OOM, to free the activations it holds
        loss_scale = self.loss_scaler.scale
        defers = self.gradient_sync.defers_last_backward
        for index, given in enumerate(samples):
            sample, weight = self._real_or_dummy(given)
            last = index == len(samples) - 1
            # After an OOM the update is lost and a rank skips its remaining work, except torch
            # DDP's synchronised forward: every rank must run it, as it may hold collectives.
            if sample is None or (out_of_memory and not (last and defers)):
                continue
            self._micro_batch = index
            phase = "forward"
            try:
                with self.gradient_sync.accumulating(self.model, last):
                    loss, size, logging_output = self._forward(sample)
                    loss = loss * (loss_scale * weight)
                    if last and defers:
                        deferred = loss
                    else:
                        phase = "backward"
                        self._backward(loss)
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                report_oom(error, phase, rank=self.context.rank, first=self.oom_updates == 0, device=self.device)
                out_of_memory = True
            if out_of_memory:
                # Frees this update's activations and gradients before anything else is tried.
                loss = deferred = None
                self._optimizer.zero_grad(set_to_none=True)
                release_memory(self.device)
                continue
            sample_size += size * weight
            logging_outputs.append(logging_output if weight else {key: value * 0 for key, value in logging_output.items()})
        return _LocalPart(logging_outputs, sample_size, out_of_memory, deferred)

    def _real_or_dummy(self, sample: dict) -> tuple[dict | None, int]:
        """A sample and its weight. With several ranks, an empty mini-batch (the padding of a short
        shard) runs the first real one with weight 0, so every rank does the same collectives."""
        if sample:
            if self._dummy_sample is None:
                self._dummy_sample = sample
            return sample, 1
        if not self.context.is_distributed:
            return None, 0
        if self._dummy_sample is None:
            raise UserError(f"rank {self.context.rank} has no data for its first update: the training split has "
                            f"fewer mini-batches than the {self.context.world_size} processes")
        return self._dummy_sample, 0

    def _forward(self, sample: dict) -> tuple[torch.Tensor, int, dict]:
        try:
            with self.precision.autocast(self.device):
                loss, size, logging_output = self.criterion(self.gradient_sync.training_model(self.model),
                                                            self._to_device(sample))
        except RuntimeError as error:
            if "Expected to have finished reduction in the prior iteration" in str(error):
                raise UserError("with --ddp-backend c10d, some parameters got no gradient in the previous update "
                                "(when fine-tuning, usually the unused masked-LM head): add "
                                "--find-unused-parameters, or use --ddp-backend no_c10d") from None
            raise
        if self.faults.fires("nan-loss", self._steps, self._micro_batch, self.num_updates + 1):
            loss = loss * float("nan")
            logging_output = {**logging_output, "loss": logging_output["loss"] * float("nan")}
        return loss, size, logging_output

    def _inject_forward_fault(self, *unused: Any) -> None:
        # A forward pre-hook of the model itself, so the error comes from inside torch DDP's
        # forward, where a real OOM would.
        if not self.model.training:
            return
        self.faults.kill_if("kill-step", step=self._steps, micro_batch=self._micro_batch, update=self.num_updates + 1)
        if self.faults.fires("oom-forward", self._steps, self._micro_batch, self.num_updates + 1):
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected by {FAULTS_VARIABLE})")

    def _backward(self, loss: torch.Tensor) -> None:
        if self.faults.fires("oom-backward", self._steps, self._micro_batch, self.num_updates + 1):
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected by {FAULTS_VARIABLE})")
        loss.backward()

    def _finish_backward(self, deferred: torch.Tensor | None) -> None:
        """Run the backward torch DDP all-reduces in, or else the strategy's own all-reduce."""
        if deferred is not None:
            try:
                self._backward(deferred)
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                raise UserError(f"out of memory in the backward pass of update {self.num_updates + 1} while torch "
                                f"DDP was all-reducing gradients (--ddp-backend c10d/pytorch_ddp): the other "
                                f"processes cannot skip this update. Use --ddp-backend no_c10d, which recovers "
                                f"from an OOM anywhere, or lower --max-tokens/--batch-size") from None
        else:
            self.gradient_sync.after_backward([p.grad for p in self._params if p.grad is not None])

    def _skip_for_oom(self, failed_ranks: int) -> None:
        self.oom_updates += 1
        world = self.context.world_size
        # Every rank reached this verdict; one says so.
        if self.context.is_master and failed_ranks == world:
            logger.warning("OOM in all workers, skipping update")
        elif self.context.is_master:
            logger.warning("OOM in %d of %d workers, skipping update on all of them", failed_ranks, world)
        self.gradient_sync.discard()
        self._optimizer.zero_grad(set_to_none=True)
        release_memory(self.device)
        self.oom_backoff.record_oom(announce=self.context.is_master)

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
    def valid_step(self, sample: dict, *, with_records: bool = False) -> tuple[dict, list[dict]]:
        """The criterion's logging output for `sample` and, `with_records`, one record per example."""
        self.faults.kill_if("kill-validate", update=self.num_updates)
        self.faults.kill_if("sigterm-validate", update=self.num_updates, signum=signal.SIGTERM)
        if self.faults.fires("slow-validate", update=self.num_updates):
            time.sleep(SLOW_VALIDATE_SECONDS)
        self.model.eval()
        self.criterion.eval()
        sample = self._to_device(sample)
        with self.precision.autocast(self.device):
            if with_records:
                _, _, logging_output, records = self.criterion.forward_with_records(self.model, sample)
                return logging_output, records
            _, _, logging_output = self.criterion(self.model, sample)
        return logging_output, []

    def _to_device(self, sample: dict) -> dict:
        if self.device.type == "cpu":
            return sample
        return _move(sample, self.device)

    def extra_stats(self) -> dict[str, float]:
        """Trainer-level fields for the logs beyond the criterion's: loss scale, OOM-skipped updates."""
        stats = self.loss_scaler.stats()
        if self.oom_updates:
            stats["oom"] = self.oom_updates
        return stats

    def checkpoint_state(self, flags: dict, extra_state: dict, *, save_optimizer_state: bool = True) -> dict:
        """Everything a resume needs, with fairseq's top-level checkpoint keys; `flags` are the run's
        flags as plain data."""
        return build_checkpoint_state(
            cfg={**flags, "model": self.model.config.to_dict()}, model_state=self.model.state_dict(),
            criterion_name=type(self.criterion).__name__, optimizer_name=type(self.optimizer).__name__,
            optimizer_state=self._optimizer_state(), lr_scheduler_state=self.lr_scheduler.state_dict(),
            num_updates=self.num_updates, previous_history=self._optimizer_history,
            save_optimizer_state=save_optimizer_state, **extra_state)

    def restore(self, state: TrainerState, *, path: Any) -> None:
        """Put back the optimizer (with the loss scaler), schedule and update count of checkpoint
        `path`; the model's weights are restored beside this, by `load_model_weights`."""
        state.check_names(type(self.optimizer).__name__, type(self.criterion).__name__)
        optimizer_state = state.optimizer
        if state.fairseq_optimizer_by_name is not None:
            optimizer_state = fairseq_resume.optimizer_state_for(state.fairseq_optimizer_by_name, self._optimizer,
                                                                 self.model, path)
        elif optimizer_state is not None:
            optimizer_state = align_saved_groups(optimizer_state, self._optimizer, path=path)
        if optimizer_state is not None:
            self._load_optimizer_state(optimizer_state)
            for group in self._optimizer.param_groups:
                group.update(state.optimizer_overrides)
        if state.lr_scheduler is not None:
            self.lr_scheduler.load_state_dict(state.lr_scheduler)
        self.num_updates = state.num_updates
        self.lr_scheduler.step_update(self.num_updates)
        self._optimizer_history = state.optimizer_history

    def _optimizer_state(self) -> dict:
        """The optimizer's state plus the loss scaler's, which --reset-optimizer drops with it."""
        state = self._optimizer.state_dict()
        scaler_state = self.loss_scaler.state_dict()
        if scaler_state is None:
            return state
        # `loss_scale` is where fairseq keeps the scale; the full state makes a resume exact.
        return {**state, "loss_scale": self.loss_scaler.scale, "loss_scaler": scaler_state}

    def _load_optimizer_state(self, state: dict) -> None:
        """Inverse of `_optimizer_state`. A scaler on one side only starts afresh (fp16 run from an
        fp32 checkpoint) or is dropped (fp32 run from an fp16 checkpoint)."""
        if "loss_scaler" in state:
            self.loss_scaler.load_state_dict(state["loss_scaler"])
        self._optimizer.load_state_dict({key: value for key, value in state.items()
                                        if key not in ("loss_scale", "loss_scaler")})


def _move(value: Any, device: torch.device) -> Any:
    if torch.is_tensor(value):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {key: _move(item, device) for key, item in value.items()}
    if isinstance(value, list):
        return [_move(item, device) for item in value]
    return value
