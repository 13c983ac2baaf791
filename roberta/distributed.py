"""Processes and collectives: torchrun, one process per visible GPU, and the few all-reduces we need.

A run is launched in one of three ways, and every rank then calls the same `rank_main(payload,
context)` (the command's own function and its parsed command line, which this module does not read):
- under `torchrun` (RANK/WORLD_SIZE/LOCAL_RANK in the environment, on one or many machines);
- plainly with several visible GPUs (or `--distributed-world-size N`): we start one process
  per GPU ourselves, as fairseq does, meeting at a free localhost port;
- plainly on one device: no process group at all.
NCCL is the backend on GPUs, gloo on the CPU (`--cpu --distributed-world-size 2` runs two CPU
processes, which is how the tests exercise every collective).
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
from multiprocessing.connection import wait
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist

from roberta.errors import UserError, exit_on_user_error
from roberta.stop_signals import STOP_EXIT_CODES, STOP_SIGNALS

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
# How a run was launched, which a later command on a checkpoint must not inherit.
LAUNCH_FLAGS = ("distributed_world_size", "distributed_init_method")
DDP_BACKENDS = ("c10d", "pytorch_ddp", "no_c10d", "legacy_ddp")
# torch DDP: the gradient all-reduce overlaps the backward pass of the last micro-batch.
OVERLAPPING_BACKENDS = ("c10d", "pytorch_ddp")
# How long the launcher waits for the other ranks once one has stopped on a signal.
STOP_GRACE_SECONDS = 60


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands among all of the run's processes."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_master(self) -> bool:
        """Rank 0 alone logs at INFO level and writes checkpoints and prediction files."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


SINGLE_PROCESS = DistributedContext()
RankMain = Callable[[Any, DistributedContext], None]


@dataclass(frozen=True)
class DistributedSettings:
    """The process flags; `distributed_world_size` is the resolved count (see `resolve_world_size`)."""
    distributed_world_size: int = 1
    distributed_init_method: str | None = None
    ddp_backend: str = "pytorch_ddp"
    find_unused_parameters: bool = False
    cpu: bool = False


def add_distributed_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("distributed")
    group.add_argument("--ddp-backend", default="pytorch_ddp", choices=DDP_BACKENDS,
                       help="how gradients are synchronised across processes: c10d/pytorch_ddp (torch "
                            "DDP) overlap the all-reduce with the last backward pass; no_c10d/legacy_ddp "
                            "all-reduce once after all micro-batches and recover from an OOM anywhere")
    group.add_argument("--distributed-world-size", type=int,
                       help="total number of processes (default: WORLD_SIZE under torchrun, else every "
                            "visible GPU, else 1); with --cpu, that many CPU processes")
    group.add_argument("--distributed-init-method", metavar="URL",
                       help="where processes started by roberta-train meet (default: a free localhost "
                            "port); e.g. file:///shared/path for a file rendezvous")
    group.add_argument("--find-unused-parameters", action="store_true",
                       help="let torch DDP tolerate parameters that get no gradient (e.g. the unused "
                            "LM head while fine-tuning with --ddp-backend c10d)")


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def resolve_world_size(requested: int | None, cpu: bool) -> int:
    """The number of processes `--distributed-world-size` (None: not given) asks for; checks it
    against what exists."""
    if requested is not None and requested < 1:
        raise UserError(f"--distributed-world-size must be >= 1, got {requested}")
    if launched_by_torchrun():
        world = int(os.environ["WORLD_SIZE"])
        if requested is not None and requested != world:
            raise UserError(f"--distributed-world-size {requested} does not match torchrun's WORLD_SIZE "
                            f"{world}; drop the flag under torchrun")
        return world
    gpus = 0 if cpu or not torch.cuda.is_available() else torch.cuda.device_count()
    if requested is None:
        return max(gpus, 1)
    if requested > 1 and not cpu and gpus < requested:
        raise UserError(f"--distributed-world-size {requested} needs {requested} GPUs but {gpus} are "
                        f"visible; add --cpu for CPU processes or use torchrun across machines")
    return requested


def launch(rank_main: RankMain, payload: Any, settings: DistributedSettings, prog: str) -> None:
    """Run `rank_main(payload, context)` on each of the `settings.distributed_world_size` ranks.
    A spawned rank starts with empty registries: `rank_main` loads its plugins itself."""
    world = settings.distributed_world_size
    if launched_by_torchrun():
        context = DistributedContext(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), world)
        _run_rank(rank_main, payload, context, "env://", settings.cpu)
    elif world == 1:
        rank_main(payload, SINGLE_PROCESS)
    else:
        init_method = settings.distributed_init_method or f"tcp://localhost:{_free_port()}"
        try:
            _spawn_and_join(world, rank_args=(rank_main, payload, world, init_method, prog, settings.cpu))
        except torch.multiprocessing.ProcessExitedException as error:
            if error.signal_name:
                raise SystemExit(f"{prog}: error: process {error.error_index} was killed by {error.signal_name}; "
                                 f"the others were stopped") from None
            # The failing rank printed its own one-line error; the others were stopped.
            raise SystemExit(error.exit_code or 1) from None
        except torch.multiprocessing.ProcessRaisedException as error:
            raise SystemExit(f"{prog}: error: a training process failed:\n{error}") from None


def _spawn_and_join(world: int, rank_args: tuple) -> None:
    """Start the ranks and wait for them. A SIGTERM or SIGINT sent to this launcher alone (`kill`,
    a scheduler) is passed on to every rank as SIGTERM, so they stop together at a safe point."""
    ranks = torch.multiprocessing.spawn(_spawned_rank, args=rank_args, nprocs=world, join=False)

    def forward(signum: int, frame: object) -> None:
        for process in ranks.processes:
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)

    previous = {signum: signal.signal(signum, forward) for signum in STOP_SIGNALS}
    try:
        while True:
            ready = wait([process.sentinel for process in ranks.processes if process.exitcode is None])
            for process in ranks.processes:
                if process.sentinel in ready:
                    process.join()  # a ready sentinel means the exit is under way; collect its status
            if any(process.exitcode in STOP_EXIT_CODES for process in ranks.processes):
                # The others stop at the same update, a moment later: let them, rather than have
                # torch's join terminate them as if they had hung.
                for process in ranks.processes:
                    process.join(STOP_GRACE_SECONDS)
            if ranks.join(timeout=0):
                return
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _spawned_rank(index: int, rank_main: RankMain, payload: Any, world: int, init_method: str, prog: str,
                  cpu: bool) -> None:
    with exit_on_user_error(f"{prog} (rank {index})" if index else prog):
        if cpu and "OMP_NUM_THREADS" not in os.environ:
            # CPU processes share the machine's cores instead of each claiming all of them.
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        _run_rank(rank_main, payload, DistributedContext(index, index, world), init_method, cpu)


def _run_rank(rank_main: RankMain, payload: Any, context: DistributedContext, init_method: str, cpu: bool) -> None:
    use_cuda = not cpu and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(context.local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo", init_method=init_method,
                            rank=context.rank, world_size=context.world_size)
    try:
        rank_main(payload, context)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def barrier() -> None:
    """Wait for every rank (nothing to wait for in one process)."""
    if is_initialized():
        dist.barrier()


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sum over ranks, in float64 (counts stay exact); identity in one process."""
    if not is_initialized():
        return list(values)
    buffer = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(buffer)
    return buffer.tolist()


def all_gather_objects(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order; `[value]` in one process."""
    if not is_initialized():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_object(value: Any) -> Any:
    """Rank 0's `value` on every rank."""
    if not is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_gradients(grads: list[torch.Tensor], bucket_elements: int = 2 ** 24) -> None:
    """Sum `grads` over ranks in place, a few large flat buffers at a time (per dtype)."""
    if not is_initialized():
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for grad in grads:
        by_dtype.setdefault(grad.dtype, []).append(grad)
    for same_dtype in by_dtype.values():
        bucket: list[torch.Tensor] = []
        size = 0
        for grad in same_dtype:
            bucket.append(grad)
            size += grad.numel()
            if size >= bucket_elements:
                _all_reduce_bucket(bucket)
                bucket, size = [], 0
        if bucket:
            _all_reduce_bucket(bucket)


def _all_reduce_bucket(bucket: list[torch.Tensor]) -> None:
    flat = torch.cat([grad.reshape(-1) for grad in bucket])
    dist.all_reduce(flat)
    for grad, reduced in zip(bucket, flat.split([grad.numel() for grad in bucket])):
        grad.copy_(reduced.view_as(grad))


class _DataParallel(torch.nn.parallel.DistributedDataParallel):
    """torch DDP that still answers the wrapped model's attributes (`config`, heads), as fairseq's
    wrapper does, so criterions work the same with one process or many."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def wrap_data_parallel(model: torch.nn.Module, device: torch.device,
                       find_unused_parameters: bool) -> torch.nn.parallel.DistributedDataParallel:
    """torch DDP around `model`; parameters are broadcast from rank 0 here."""
    device_ids = [device.index] if device.type == "cuda" else None
    return _DataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused_parameters)
