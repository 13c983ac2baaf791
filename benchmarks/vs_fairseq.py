"""`roberta-train` against `fairseq-train` 0.12.2: the same masked-LM flags on the same data, words
per second as a ratio.

Both commands run as processes of their own: ours on this Python, fairseq in its Python 3.10 venv
on its own torch (`FAIRSEQ_PYTHON`, see `scripts/fairseq_reference_env.sh`). The data is one
generated corpus, binarized once in fairseq's format (which roberta-preprocess writes byte for
byte). Each run logs JSON after every update; its figure is the median `wps` of the updates after
the warm-up, and each side's best of `--repeats` runs is compared. Neither side validates or saves.

    python benchmarks/vs_fairseq.py [--sizes tiny small] [--updates 60] [--repeats 2] [--profile]

Each line also gives the model GFLOP/s both sides reach (matrix-multiply FLOPs from the words per
second; the LM head only over masked tokens, as both compute it). `--profile` then runs each side
once more under `step_profile.py` and prints where an update's milliseconds go, category by
category, side by side.

`tiny` is 2 layers x 64 (FFN 128, 2 heads), blocks of 64 tokens, batch 8; `small` is 4 x 256 (FFN
1024, 4 heads), blocks of 128, batch 16. At these sizes an update costs milliseconds, so the
ratio measures the per-update overhead (Python, data pipeline, logging, optimizer step) as much
as the arithmetic.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from roberta.data.dictionary import Dictionary  # noqa: E402
from roberta.data.indexed_dataset import MMapIndexedDatasetBuilder, best_fitting_dtype  # noqa: E402

SIZES = {
    "tiny": {"layers": 2, "dim": 64, "ffn": 128, "heads": 2, "block": 64, "batch": 8},
    "small": {"layers": 4, "dim": 256, "ffn": 1024, "heads": 4, "block": 128, "batch": 16},
}
VOCAB = 1000
WARMUP_UPDATES = 10


def write_corpus(folder: Path, lines: int = 4000, seed: int = 0) -> Path:
    """A dict.txt of VOCAB symbols and train and valid splits of random lines, in fairseq's format."""
    rng = np.random.default_rng(seed)
    dictionary = Dictionary()
    for index in range(VOCAB):
        dictionary.add_symbol(f"w{index}", n=VOCAB - index)
    data = folder / "data-bin"
    data.mkdir(parents=True)
    dictionary.save(data / "dict.txt")
    # fairseq-train opens the valid split even when it does not validate.
    for split, count in (("train", lines), ("valid", lines // 20)):
        builder = MMapIndexedDatasetBuilder(data / f"{split}.bin", dtype=best_fitting_dtype(len(dictionary)))
        for _ in range(count):
            length = int(rng.integers(20, 200))
            builder.add_item(np.append(rng.integers(dictionary.nspecial, len(dictionary), length), dictionary.eos()))
        builder.finalize(data / f"{split}.idx")
    return data


def flags(size: dict, updates: int, save_dir: Path) -> list[str]:
    """fairseq's masked-LM recipe at `size`, the same for both commands."""
    return ["--task", "masked_lm", "--criterion", "masked_lm", "--arch", "roberta_base",
            "--encoder-layers", str(size["layers"]), "--encoder-embed-dim", str(size["dim"]),
            "--encoder-ffn-embed-dim", str(size["ffn"]), "--encoder-attention-heads", str(size["heads"]),
            "--tokens-per-sample", str(size["block"]), "--max-positions", str(size["block"]),
            "--sample-break-mode", "none", "--batch-size", str(size["batch"]),
            "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--adam-eps", "1e-6", "--weight-decay", "0.01",
            "--clip-norm", "1.0", "--lr", "5e-4", "--lr-scheduler", "polynomial_decay", "--warmup-updates", "10",
            "--total-num-update", str(updates), "--max-update", str(updates), "--seed", "1", "--cpu",
            "--disable-validation", "--no-save", "--save-dir", str(save_dir),
            "--log-format", "json", "--log-interval", "1"]


def flops_per_token(size: dict) -> float:
    """Training FLOPs of the matrix multiplies per token: 6 x (encoder weights), attention's two
    products, and the LM head (dense + output projection) on the 15% masked tokens."""
    d, f, layers, block = size["dim"], size["ffn"], size["layers"], size["block"]
    encoder_weights = layers * (4 * d * d + 2 * d * f)
    return 6 * encoder_weights + 12 * layers * block * d + 6 * (d * d + d * VOCAB) * 0.15


def run(command: list[str], cwd: Path) -> float:
    """The median words per second of one run after the warm-up updates."""
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env={**os.environ, "PYTHONPATH": ""})
    if result.returncode:
        raise SystemExit(f"{command[0]} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    speeds = [json.loads(line.split("| train_inner | ", 1)[1])["wps"]
              for line in (result.stdout + result.stderr).splitlines() if "| train_inner | " in line]
    if len(speeds) <= WARMUP_UPDATES:
        raise SystemExit(f"{command[0]}: only {len(speeds)} logged updates; raise --updates")
    return statistics.median(float(value) for value in speeds[WARMUP_UPDATES:])


def profile_both(ours: list[str], theirs: list[str], updates: int, cwd: Path) -> None:
    """One profiled run a side; their per-update breakdowns in one table."""
    script = str(Path(__file__).with_name("step_profile.py"))
    sides = {"roberta-train": (ours, "roberta.trainer:Trainer.train_step"),
             "fairseq-train": (theirs, "fairseq.trainer:Trainer.train_step")}
    tables = {}
    for name, (command, step) in sides.items():
        out = cwd / f"{name}.profile.json"
        window = ["--skip", str(WARMUP_UPDATES), "--updates", str(min(10, updates - WARMUP_UPDATES - 1))]
        result = subprocess.run([command[0], script, "--step", step, *window, "--out", str(out), "--", *command[1:]],
                                capture_output=True, text=True, cwd=cwd, env={**os.environ, "PYTHONPATH": ""})
        if result.returncode:
            raise SystemExit(f"profiling {name} failed ({result.returncode}):\n{result.stderr[-3000:]}")
        tables[name] = json.loads(out.read_text())["ms_per_update"]
    rows = list(dict.fromkeys(key for table in tables.values() for key in table))
    rows.remove("total (wall)")
    print(f"  {'ms per update':40s} {'roberta-train':>14s} {'fairseq-train':>14s}")
    for row in [*rows, "total (wall)"]:
        print(f"  {row:40s} " + " ".join(f"{tables[name].get(row, 0.0):14.1f}" for name in sides))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=SIZES, default=list(SIZES))
    parser.add_argument("--updates", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--profile", action="store_true",
                        help="then profile one run of each side (step_profile.py) and print the breakdown")
    parser.add_argument("--fairseq-python", default=os.environ.get("FAIRSEQ_PYTHON"),
                        help="the fairseq 0.12.2 venv's python (default: $FAIRSEQ_PYTHON)")
    args = parser.parse_args()
    if not args.fairseq_python:
        raise SystemExit("give --fairseq-python or set FAIRSEQ_PYTHON (bash scripts/fairseq_reference_env.sh)")
    with tempfile.TemporaryDirectory() as tmp:
        data = write_corpus(Path(tmp))
        for name in args.sizes:
            train_flags = [str(data), *flags(SIZES[name], args.updates, Path(tmp) / "unused")]
            ours_command = [sys.executable, "-m", "roberta.cli.train", *train_flags]
            theirs_command = [args.fairseq_python, "-m", "fairseq_cli.train", *train_flags]
            ours = max(run(ours_command, Path(tmp)) for _ in range(args.repeats))
            theirs = max(run(theirs_command, Path(tmp)) for _ in range(args.repeats))
            gflop = flops_per_token(SIZES[name]) / 1e9
            print(f"{name:6s} {SIZES[name]['layers']} x {SIZES[name]['dim']}: roberta-train {ours:8.0f} wps "
                  f"({ours * gflop:5.1f} GFLOP/s)   fairseq-train {theirs:8.0f} wps ({theirs * gflop:5.1f} GFLOP/s)"
                  f"   ratio {ours / theirs:.2f}x")
            print(f"RESULT size={name} ours_wps={ours:.0f} fairseq_wps={theirs:.0f} ratio={ours / theirs:.2f} "
                  f"ours_gflop_s={ours * gflop:.1f} fairseq_gflop_s={theirs * gflop:.1f} "
                  f"target=1.5 updates={args.updates} repeats={args.repeats}", flush=True)
            if args.profile:
                profile_both(ours_command, theirs_command, args.updates, Path(tmp))


if __name__ == "__main__":
    main()
