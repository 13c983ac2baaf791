"""One update at a time: micro-batches, gradient normalisation, clipping, the optimizer step."""
from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from typing import Any

import torch

from roberta import checkpoint
from roberta.criterion import Criterion, sum_logging_outputs
from roberta.distributed import (OVERLAPPING_BACKENDS, SINGLE_PROCESS, DistributedContext, all_reduce_gradients,
                                 all_reduce_sum, wrap_data_parallel)
from roberta.errors import UserError
from roberta.faults import ENVIRONMENT_VARIABLE as FAULTS_VARIABLE, SLOW_VALIDATE_SECONDS, FaultInjector
from roberta.models.weights import load_model_weights
from roberta.oom import OomBackoff, is_out_of_memory, release_memory, report_oom
from roberta.optim.loss_scaler import DynamicLossScaler
from roberta.precision import FP32, Precision

logger = logging.getLogger(__name__)


class TrainingDiverged(UserError):
    """The loss or gradient became inf/NaN outside fp16 overflow handling."""


class Trainer:
    """Owns the model, criterion, optimizer and schedule, and runs `train_step` / `valid_step`.

    The gradient of an update is the sum of per-example losses over all micro-batches and all
    ranks divided by the total sample size, as in fairseq, so `--update-freq N` equals an N
    times larger batch and world size W with `--update-freq 1` equals one process with W.
    With a `loss_scaler` (float16) an update whose gradient overflows is skipped, as in fairseq:
    it does not count in `num_updates` and leaves the weights and the LR as they were. An
    out-of-memory error in any micro-batch of any rank skips the update on every rank alike.
    """

    def __init__(self, model: torch.nn.Module, criterion: Criterion, optimizer: torch.optim.Optimizer,
                 lr_scheduler: Any, *, device: torch.device, clip_norm: float = 0.0, seed: int = 1,
                 precision: Precision = FP32, loss_scaler: DynamicLossScaler | None = None,
                 context: DistributedContext = SINGLE_PROCESS, ddp_backend: str = "pytorch_ddp",
                 find_unused_parameters: bool = False, oom_backoff: bool = False) -> None:
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
        self.ddp_backend = ddp_backend
        # torch DDP all-reduces during the last micro-batch's backward; otherwise we do it after.
        self._overlap = context.is_distributed and ddp_backend in OVERLAPPING_BACKENDS
        self._find_unused_parameters = find_unused_parameters
        self._wrapped_model: torch.nn.Module | None = None
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
    def _train_model(self) -> torch.nn.Module:
        """The model training passes run through: wrapped in torch DDP at the first update (every
        rank gets there together), so a validation-only process never builds the wrapper."""
        if self._wrapped_model is None:
            self._wrapped_model = (wrap_data_parallel(self.model, self.device, self._find_unused_parameters)
                                   if self._overlap else self.model)
        return self._wrapped_model

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
        self.optimizer.zero_grad(set_to_none=True)
        self._steps += 1
        start = time.perf_counter()
        logging_outputs: list[dict] = []
        sample_size = 0
        out_of_memory = False
        deferred = None  # torch DDP: the backward that all-reduces waits until every rank agrees
        loss_scale = self.loss_scaler.scale if self.loss_scaler is not None else 1.0
        for index, sample in enumerate(samples):
            sample, weight = self._real_or_dummy(sample)
            last = index == len(samples) - 1
            # After an OOM the update is lost and a rank skips its remaining work, except torch
            # DDP's synchronised forward: every rank must run it, as it may hold collectives.
            if sample is None or (out_of_memory and not (last and self._overlap)):
                continue
            self._micro_batch = index
            phase = "forward"
            try:
                with self._gradient_sync(last):
                    loss, size, logging_output = self._forward(sample)
                    loss = loss * (loss_scale * weight)
                    if last and self._overlap:
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
                self.optimizer.zero_grad(set_to_none=True)
                release_memory(self.device)
                continue
            sample_size += size * weight
            logging_outputs.append(logging_output if weight else {key: value * 0 for key, value in logging_output.items()})
        failed_ranks, sample_size, stopping_ranks = all_reduce_sum(
            [float(out_of_memory), float(sample_size), float(stop_requested)])
        self.stop_agreed = stopping_ranks > 0
        if failed_ranks:
            self._skip_for_oom(int(failed_ranks))
            return None
        # Before the empty-update check, so torch DDP completes the iteration its forward began.
        self._finish_backward(deferred)
        if sample_size == 0:
            return None
        logging_output = sum_logging_outputs(logging_outputs)
        if self.context.is_distributed:
            logging_output = dict(zip(logging_output, all_reduce_sum(list(logging_output.values()))))
        self._check_loss(logging_output)
        # torch DDP averages over ranks; the gradient we want is the sum over all examples.
        world_factor = self.context.world_size if self._overlap else 1
        grad_norm = self._normalize_and_clip(world_factor / (sample_size * loss_scale))
        if not self._usable(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.optimizer.step()
        self.num_updates += 1
        lr = self.lr_scheduler.step_update(self.num_updates)
        return {
            "logging_output": logging_output,
            "gnorm": grad_norm,
            "clipped": self.clip_norm > 0 and grad_norm > self.clip_norm,
            "lr": lr,
            "train_wall": time.perf_counter() - start,
        }

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

    def _gradient_sync(self, last: bool) -> contextlib.AbstractContextManager:
        """Local accumulation on every micro-batch but the last (torch DDP's no_sync)."""
        if self._overlap and not last:
            return self._train_model.no_sync()
        return contextlib.nullcontext()

    def _forward(self, sample: dict) -> tuple[torch.Tensor, int, dict]:
        try:
            with self.precision.autocast(self.device):
                loss, size, logging_output = self.criterion(self._train_model, self._to_device(sample))
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
        """Run the backward torch DDP all-reduces in, or else our own all-reduce."""
        if deferred is not None:
            try:
                self._backward(deferred)
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                raise UserError(f"out of memory in the backward pass of update {self.num_updates + 1} while torch "
                                f"DDP was all-reducing gradients (--ddp-backend {self.ddp_backend}): the other "
                                f"processes cannot skip this update. Use --ddp-backend no_c10d, which recovers "
                                f"from an OOM anywhere, or lower --max-tokens/--batch-size") from None
        elif self.context.is_distributed:
            all_reduce_gradients([p.grad for p in self._params if p.grad is not None])

    def _skip_for_oom(self, failed_ranks: int) -> None:
        self.oom_updates += 1
        world = self.context.world_size
        # Every rank reached this verdict; one says so.
        if self.context.is_master and failed_ranks == world:
            logger.warning("OOM in all workers, skipping update")
        elif self.context.is_master:
            logger.warning("OOM in %d of %d workers, skipping update on all of them", failed_ranks, world)
        if self._overlap:
            # Some ranks ran torch DDP's synchronised forward without its backward, which leaves
            # their reducers expecting one; a new wrapper (built by all ranks at the next update)
            # starts clean.
            self._wrapped_model = None
        self.optimizer.zero_grad(set_to_none=True)
        release_memory(self.device)
        self.oom_backoff.record_oom(announce=self.context.is_master)

    def _check_loss(self, logging_output: dict) -> None:
        """A non-finite loss stops the run before anything is saved; with fp16 the gradient
        overflow check decides instead."""
        loss = logging_output.get("loss")
        if self.loss_scaler is None and loss is not None and not math.isfinite(loss):
            raise TrainingDiverged(f"the training loss became {loss} at update {self.num_updates + 1}; lower "
                                   f"--lr, set --clip-norm, or check the data. Nothing was saved after the "
                                   f"last good checkpoint")

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
        self.overflow_updates += 1
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
        self.faults.kill_if("kill-validate", update=self.num_updates)
        self.faults.kill_if("sigterm-validate", update=self.num_updates, signum=signal.SIGTERM)
        if self.faults.fires("slow-validate", update=self.num_updates):
            time.sleep(SLOW_VALIDATE_SECONDS)
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
        """Trainer-level fields for the logs beyond the criterion's: loss scale, OOM-skipped updates."""
        stats = {} if self.loss_scaler is None else {"loss_scale": self.loss_scaler.scale}
        if self.oom_updates:
            stats["oom"] = self.oom_updates
        return stats

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
