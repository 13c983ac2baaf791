"""Data-parallel masked-LM training: our Trainer across processes against a plain torch DDP loop.

Two (or `--world-size`) CPU processes with gloo, one thread each, meet through a file
rendezvous. In every process, on that rank's shard of the same batches:
- ours, twice: `Trainer.train_step` with `--ddp-backend c10d` (torch DDP, all-reduce overlapped
  with the last backward pass) and with `no_c10d` (one bucketed all-reduce per update), each
  with our per-update OOM agreement and summed logging statistics;
- the reference: `transformers.RobertaForMaskedLM` wrapped in torch DDP with `torch.optim.AdamW`,
  the usual loop (`no_sync` on all but the last micro-batch, mean loss / update-freq).
The three alternate update by update, every rank in lockstep; the median over the timed
updates gives real tokens per second for all ranks together. The cost of one agreement
all-reduce (2 floats) is printed separately.

    python benchmarks/ddp_training_step.py --preset small                 # ~2 min on 2 cores
    python benchmarks/ddp_training_step.py --preset small --update-freq 2
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from roberta.distributed import DistributedContext, all_reduce_sum
from roberta.gradient_sync import choose_gradient_sync
from roberta.trainer import Trainer

# Run as a script, this file's directory is on sys.path: the single-process benchmark's
# helpers (presets, corpus, model builders) are imported, not copied.
import mlm_training_throughput
from mlm_training_throughput import build_hf, hf_inputs, resolve_preset
from model_forward_backward import PRESETS


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--world-size", type=int, default=2, help="processes (one thread each)")
    parser.add_argument("--batch-size", type=int, default=None, help="sequences per micro-batch per rank")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--update-freq", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--warmup", type=int, default=3, help="untimed updates")
    parser.add_argument("--steps", type=int, default=10, help="timed updates of each loop")
    parser.add_argument("--distinct-updates", type=int, default=4, help="distinct update groups per rank")
    return parser.parse_args()


def rank_groups(args: argparse.Namespace, rank: int, world: int) -> list[list[dict]]:
    """This rank's shard of the benchmark's update groups (built as the one-process benchmark does)."""
    preset = resolve_preset(args.preset, args)
    shared = argparse.Namespace(**{**vars(args), "distinct_updates": args.distinct_updates * world})
    groups, _ = mlm_training_throughput.training_batches(preset, shared)
    samples = [sample for group in groups for sample in group]
    mine = samples[rank::world]
    return [mine[i:i + args.update_freq] for i in range(0, len(mine), args.update_freq)]


def build_ours(args: argparse.Namespace, context: DistributedContext, backend: str) -> Trainer:
    torch.manual_seed(0)
    single = mlm_training_throughput.build_ours(resolve_preset(args.preset, args), args.lr)
    return Trainer(single.model, single.criterion, single.optimizer, single.lr_scheduler,
                   device=torch.device("cpu"), seed=1, context=context,
                   gradient_sync=choose_gradient_sync(context, backend))


def reference_step(args: argparse.Namespace, groups: list[list[dict]]) -> Callable[[], None]:
    torch.manual_seed(0)
    model, optimizer = build_hf(resolve_preset(args.preset, args), args.lr)
    ddp = DistributedDataParallel(model)
    cycle = itertools.cycle([[hf_inputs(sample) for sample in group] for group in groups])

    def step() -> None:
        group = next(cycle)
        for index, inputs in enumerate(group):
            with ddp.no_sync() if index < len(group) - 1 else contextlib.nullcontext():
                (ddp(**inputs).loss / len(group)).backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def ours_step(trainer: Trainer, groups: list[list[dict]]) -> Callable[[], None]:
    cycle = itertools.cycle(groups)

    def step() -> None:
        if trainer.train_step(next(cycle)) is None:
            raise RuntimeError("train_step skipped an update")

    return step


def lockstep(steps: dict[str, Callable[[], None]], args: argparse.Namespace) -> dict[str, list[float]]:
    """Alternate the loops for a fixed number of updates (the same on every rank)."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for update in range(args.warmup + args.steps):
        for name, step in steps.items():
            dist.barrier()
            start = time.perf_counter()
            step()
            if update >= args.warmup:
                times[name].append(time.perf_counter() - start)
    return times


def agreement_microseconds(repeats: int = 200) -> float:
    dist.barrier()
    start = time.perf_counter()
    for _ in range(repeats):
        all_reduce_sum([0.0, 0.0])
    return (time.perf_counter() - start) / repeats * 1e6


def run_rank(rank: int, args: argparse.Namespace, rendezvous: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=args.world_size)
    try:
        context = DistributedContext(rank, rank, args.world_size)
        groups = rank_groups(args, rank, args.world_size)
        tokens = sum(sample["ntokens"] for sample in groups[0]) * args.world_size
        steps = {"c10d": ours_step(build_ours(args, context, "c10d"), groups),
                 "no_c10d": ours_step(build_ours(args, context, "no_c10d"), groups),
                 "hf_ddp": reference_step(args, groups)}
        times = lockstep(steps, args)
        agreement = agreement_microseconds()
        if rank == 0:
            report(args, tokens, times, agreement)
    finally:
        dist.destroy_process_group()


def report(args: argparse.Namespace, tokens: int, times: dict[str, list[float]], agreement_us: float) -> None:
    rate = {name: tokens / statistics.median(values) for name, values in times.items()}
    preset = resolve_preset(args.preset, args)
    print(f"preset={args.preset} world_size={args.world_size} (gloo, 1 thread each) micro-batch "
          f"{preset.batch}x{args.seq_len} per rank, update_freq={args.update_freq}, real tokens/update {tokens}")
    for name in ("c10d", "no_c10d"):
        print(f"  ours --ddp-backend {name:8s} {rate[name]:8.0f} tokens/s  ratio vs HF+DDP {rate[name] / rate['hf_ddp']:.2f}x")
    print(f"  HF RobertaForMaskedLM + torch DDP {rate['hf_ddp']:8.0f} tokens/s")
    print(f"  one OOM-agreement all-reduce (2 floats): {agreement_us:.0f} us")
    print("RESULT " + " ".join([
        f"preset={args.preset}", f"world_size={args.world_size}", f"update_freq={args.update_freq}",
        f"c10d_tok_s={rate['c10d']:.0f}", f"no_c10d_tok_s={rate['no_c10d']:.0f}", f"hf_ddp_tok_s={rate['hf_ddp']:.0f}",
        f"ratio_c10d={rate['c10d'] / rate['hf_ddp']:.2f}", f"ratio_no_c10d={rate['no_c10d'] / rate['hf_ddp']:.2f}",
        f"agreement_us={agreement_us:.0f}"]), flush=True)


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as folder:
        torch.multiprocessing.spawn(run_rank, args=(args, str(Path(folder) / "rendezvous")), nprocs=args.world_size)


if __name__ == "__main__":
    main()
