"""How the gradients of one update are summed over processes, chosen once when the trainer is built:
nothing to do in one process, one bucketed all-reduce after all micro-batches (`--ddp-backend
no_c10d`/`legacy_ddp`), or torch DDP overlapping the all-reduce with the last backward pass
(`c10d`/`pytorch_ddp`)."""
from __future__ import annotations

import contextlib
from typing import Protocol

import torch

from roberta.distributed import OVERLAPPING_BACKENDS, DistributedContext, all_reduce_gradients, wrap_data_parallel


class GradientSync(Protocol):
    # True when the last micro-batch's backward is itself the all-reduce (torch DDP): every rank
    # must run it, so it waits until all ranks agree the update goes ahead.
    defers_last_backward: bool
    # What the summed gradient must be multiplied by to be the sum over all ranks' examples.
    world_factor: int

    def training_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module training passes run through."""

    def accumulating(self, model: torch.nn.Module, last: bool) -> contextlib.AbstractContextManager:
        """Around the forward and backward of one micro-batch of `model`."""

    def after_backward(self, grads: list[torch.Tensor]) -> None:
        """Once all micro-batches' backward passes are done."""

    def discard(self) -> None:
        """After an update skipped for out-of-memory on some rank."""


class LocalGradients:
    """One process: the gradients are already the update's."""
    defers_last_backward = False
    world_factor = 1

    def training_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def accumulating(self, model: torch.nn.Module, last: bool) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def after_backward(self, grads: list[torch.Tensor]) -> None:
        pass

    def discard(self) -> None:
        pass


class AllReduceOnce(LocalGradients):
    """Several processes, one all-reduce per update after every micro-batch; an OOM anywhere can be
    skipped by all ranks alike."""

    def after_backward(self, grads: list[torch.Tensor]) -> None:
        all_reduce_gradients(grads)


class TorchDDP:
    """torch DDP: local accumulation (no_sync) on every micro-batch but the last, whose backward
    all-reduces. DDP averages over ranks, hence `world_factor`."""
    defers_last_backward = True

    def __init__(self, context: DistributedContext, device: torch.device, find_unused_parameters: bool) -> None:
        self.world_factor = context.world_size
        self._device = device
        self._find_unused_parameters = find_unused_parameters
        self._wrapped: torch.nn.parallel.DistributedDataParallel | None = None

    def training_model(self, model: torch.nn.Module) -> torch.nn.parallel.DistributedDataParallel:
        # Wrapped at the first update (every rank gets there together), so a validation-only
        # process never builds the wrapper.
        if self._wrapped is None:
            self._wrapped = wrap_data_parallel(model, self._device, self._find_unused_parameters)
        return self._wrapped

    def accumulating(self, model: torch.nn.Module, last: bool) -> contextlib.AbstractContextManager:
        if last:
            return contextlib.nullcontext()
        return self.training_model(model).no_sync()

    def after_backward(self, grads: list[torch.Tensor]) -> None:
        pass

    def discard(self) -> None:
        # Some ranks ran DDP's synchronised forward without its backward, which leaves their
        # reducers expecting one; a new wrapper (built by all ranks at the next update) starts clean.
        self._wrapped = None


def choose_gradient_sync(context: DistributedContext, ddp_backend: str = "pytorch_ddp",
                         device: torch.device = torch.device("cpu"),
                         find_unused_parameters: bool = False) -> GradientSync:
    if not context.is_distributed:
        return LocalGradients()
    if ddp_backend in OVERLAPPING_BACKENDS:
        return TorchDDP(context, device, find_unused_parameters)
    return AllReduceOnce()
