"""Out-of-memory recovery: recognising an OOM, reporting it, freeing memory, and backing off."""
from __future__ import annotations

import logging

import torch

from roberta.logging import EVERY_RANK

logger = logging.getLogger("roberta.trainer")

# How many OOM-skipped updates at one micro-batch size before --oom-backoff halves it.
BACKOFF_AFTER_OOMS = 2


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error))


def report_oom(error: BaseException, phase: str, *, rank: int, first: bool, device: torch.device) -> None:
    """fairseq's warnings, plus the allocator's summary the first time (it is long)."""
    where = f" on rank {rank}" if rank else ""
    logger.warning("OOM: ran out of memory%s in the %s pass with exception: %s", where, phase,
                   str(error).splitlines()[0] if str(error) else type(error).__name__, extra=EVERY_RANK)
    if first and device.type == "cuda":
        logger.warning("memory at the first OOM:\n%s", torch.cuda.memory_summary(device), extra=EVERY_RANK)
    logger.warning("attempting to recover from OOM in forward/backward pass", extra=EVERY_RANK)


def release_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


class OomBackoff:
    """`--oom-backoff`: after repeated OOMs, split every micro-batch in two and accumulate twice
    as many, so the examples per update (and the gradient) stay what they were."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.parts = 1
        self._ooms_at_this_size = 0

    def record_oom(self, announce: bool = True) -> None:
        if not self.enabled:
            return
        self._ooms_at_this_size += 1
        if self._ooms_at_this_size < BACKOFF_AFTER_OOMS:
            return
        self.parts *= 2
        self._ooms_at_this_size = 0
        if announce:
            logger.warning("--oom-backoff: %d OOMs at this micro-batch size; from now on each mini-batch is split "
                           "in %d parts and %d times as many micro-batches are accumulated per update, so the "
                           "examples per update are unchanged", BACKOFF_AFTER_OOMS, self.parts, self.parts)
