"""Dropout on the CPU: torch's `F.dropout` beside our 16-bit-slice mask (`roberta.models.encoder`),
forward plus backward, at the shapes a masked-LM update drops.

Runs under any Python with torch; under fairseq's reference venv (torch 2.1.2) it shows what
fairseq's dropout costs there, for `vs_fairseq.py --profile`'s "dropout & random" row:

    python benchmarks/dropout_kernels.py
    $FAIRSEQ_PYTHON benchmarks/dropout_kernels.py
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the toolkit, uninstalled under fairseq's venv
from roberta.models.encoder import dropout  # noqa: E402

# (what is dropped, shape): `small` (4 x 256, batch 16 x 128) and roberta-base (batch 8 x 128).
SHAPES = (("small hidden states", (16, 128, 256)), ("small attention probabilities", (16, 4, 128, 128)),
          ("base hidden states", (8, 128, 768)), ("base attention probabilities", (8, 12, 128, 128)))


def milliseconds(drop: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...], repeats: int) -> float:
    """Median forward + backward time of `drop` on a fresh-gradient input of `shape`."""
    x = torch.randn(shape, requires_grad=True)
    grad = torch.randn(shape)
    times = []
    for step in range(repeats + 3):
        start = time.perf_counter()
        drop(x).backward(grad)
        if step >= 3:
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--p", type=float, default=0.1, help="drop rate (default: 0.1, RoBERTa's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, p={args.p}, median of {args.repeats}, "
          f"forward + backward")
    for name, shape in SHAPES:
        native = milliseconds(lambda x: F.dropout(x, args.p, training=True), shape, args.repeats)
        ours = milliseconds(lambda x: dropout(x, args.p, training=True), shape, args.repeats)
        print(f"{name:30s} {str(shape):18s} F.dropout {native:7.2f} ms   ours {ours:7.2f} ms   "
              f"F.dropout / ours {native / ours:.2f}")


if __name__ == "__main__":
    main()
