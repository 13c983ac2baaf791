"""Masked-LM forward + backward: our RobertaModel against transformers' RobertaForMaskedLM.

Same configuration, same batch, 15% masking, both in training mode (dropout on). Steps of
the two models alternate; after warm-up the median step time of each (over steps during which
no other process used the CPUs) is reported as real tokens per second, with the ratio
ours / HF and the measured fp32 GEMM roof of this machine.

    python benchmarks/model_forward_backward.py --preset small   # 4 x 256, batch 16 x 128
    python benchmarks/model_forward_backward.py --preset base    # 12 x 768, batch 8 x 128
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
import transformers

from roberta.models import ModelConfig, RobertaModel

VOCAB = 50265
PAD, MASK = 1, VOCAB - 1
PRESETS = {"small": ((4, 256, 1024, 4), 16), "base": ((12, 768, 3072, 12), 8),
           "tiny": ((2, 64, 256, 4), 16)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small",
                        help="model size: layers x hidden (FFN = 4 x hidden)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="sequences per batch (default: 16 for small, 8 for base)")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per sequence")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per model")
    parser.add_argument("--steps", type=int, default=10,
                        help="undisturbed timed steps wanted per model")
    parser.add_argument("--max-steps", type=int, default=40,
                        help="give up waiting for undisturbed steps after this many")
    parser.add_argument("--hf-attn", choices=("sdpa", "eager"), default="sdpa",
                        help="attention implementation of the transformers baseline")
    return parser.parse_args()


def make_batch(batch: int, length: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor,
                                                                 torch.Tensor]:
    """(input tokens with <mask> applied, bool masked positions, original tokens)."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(4, VOCAB - 1, (batch, length), generator=generator)
    tokens[:, 0], tokens[:, -1] = 0, 2
    masked = torch.rand(batch, length, generator=generator) < 0.15
    masked[:, 0] = masked[:, -1] = False
    return tokens.masked_fill(masked, MASK), masked, tokens


def gemm_roof(dtype: torch.dtype = torch.float32, size: int = 2048) -> float:
    """GFLOP/s of a large square matmul in `dtype`: the ceiling both models are held to."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    times = []
    for _ in range(6):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * size ** 3 / min(times[1:]) / 1e9


def build_steps(args: argparse.Namespace) -> tuple[Callable[[], None], Callable[[], None]]:
    (layers, dim, ffn, heads), default_batch = PRESETS[args.preset]
    inputs, masked, targets = make_batch(args.batch_size or default_batch, args.seq_len)
    ours = RobertaModel(ModelConfig(vocab_size=VOCAB, encoder_layers=layers,
                                    encoder_embed_dim=dim, encoder_ffn_embed_dim=ffn,
                                    encoder_attention_heads=heads)).train()
    hf = transformers.RobertaForMaskedLM(transformers.RobertaConfig(
        vocab_size=VOCAB, hidden_size=dim, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=ffn, max_position_embeddings=514, type_vocab_size=1,
        layer_norm_eps=1e-5, pad_token_id=PAD, attn_implementation=args.hf_attn)).train()
    labels = targets.masked_fill(~masked, -100)
    masked_targets = targets[masked]

    def ours_step() -> None:
        ours.zero_grad(set_to_none=True)
        logits, _ = ours(inputs, masked_tokens=masked)
        F.cross_entropy(logits, masked_targets, reduction="sum").backward()

    def hf_step() -> None:
        hf.zero_grad(set_to_none=True)
        hf(input_ids=inputs, labels=labels).loss.backward()

    return ours_step, hf_step


def busy_cpu_seconds() -> float:
    """CPU time used by every process on the machine so far (Linux), 0.0 elsewhere."""
    try:
        with open("/proc/stat") as stat:
            ticks = [int(value) for value in stat.readline().split()[1:9]]
    except OSError:
        return 0.0
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def timed(run: Callable[[], None]) -> tuple[float, bool]:
    """(wall seconds, whether other processes stayed off the CPUs meanwhile).

    On a shared machine another process's burst slows a step several-fold; such steps are
    set aside instead of being averaged in.
    """
    busy, own, start = busy_cpu_seconds(), time.process_time(), time.perf_counter()
    run()
    wall = time.perf_counter() - start
    foreign = (busy_cpu_seconds() - busy) - (time.process_time() - own)
    return wall, foreign < 0.05 * wall + 0.02


def measure(steps: dict[str, Callable[[], None]],
            args: argparse.Namespace) -> dict[str, list[float]]:
    """Alternate the models' steps until each has `--steps` undisturbed timings."""
    clean: dict[str, list[float]] = {name: [] for name in steps}
    every: dict[str, list[float]] = {name: [] for name in steps}
    for step in range(args.warmup + args.max_steps):
        for name, run in steps.items():
            wall, undisturbed = timed(run)
            if step >= args.warmup:
                every[name].append(wall)
                if undisturbed:
                    clean[name].append(wall)
        if step >= args.warmup + args.steps - 1 and all(
                len(times) >= args.steps for times in clean.values()):
            break
    if all(clean.values()):
        return clean
    print("warning: no undisturbed steps (busy machine); timings include other processes' load")
    return every


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ours_step, hf_step = build_steps(args)
    timings = measure({"ours": ours_step, "hf": hf_step}, args)
    batch = args.batch_size or PRESETS[args.preset][1]
    tokens = batch * args.seq_len
    print(f"preset={args.preset} batch={batch}x{args.seq_len} "
          f"threads={args.threads} fp32 GEMM roof={gemm_roof():.0f} GFLOP/s "
          f"steps measured: ours {len(timings['ours'])}, HF {len(timings['hf'])}")
    ours_tps = tokens / statistics.median(timings["ours"])
    hf_tps = tokens / statistics.median(timings["hf"])
    print(f"ours {ours_tps:8.0f} tokens/s | HF RobertaForMaskedLM ({args.hf_attn}) "
          f"{hf_tps:8.0f} tokens/s | ratio {ours_tps / hf_tps:.2f}x (medians)")


if __name__ == "__main__":
    main()
