"""roberta-train command lines for the tiny models the tests train on the CPU.

The tiny model is `--arch roberta_tiny`; `model_size_flags` is the one spelling of the size flags
that shrink or widen it. Each test keeps the sizes it was tuned with: its thresholds, tolerances
and run times depend on them.
"""
from __future__ import annotations

import sys
from pathlib import Path


def model_size_flags(*, layers: int | None = None, embed_dim: int | None = None, ffn_dim: int | None = None,
                     heads: int | None = None) -> list[str]:
    """The size flags for the sizes given; a size left out keeps the --arch preset's."""
    sizes = {"--encoder-layers": layers, "--encoder-embed-dim": embed_dim, "--encoder-ffn-embed-dim": ffn_dim,
             "--encoder-attention-heads": heads}
    return [text for flag, size in sizes.items() if size is not None for text in (flag, str(size))]


# For runs that test mechanics (kills, resumes, long runs), not learning: the fastest model.
SMALLEST_SIZES = model_size_flags(layers=1, embed_dim=32, ffn_dim=64, heads=2)
# For runs that must learn within a few hundred updates: wide enough to pass their thresholds.
LEARNING_SIZES = model_size_flags(embed_dim=128, ffn_dim=512)

MAX_UPDATE = 40  # --max-tokens 4096 makes 31 updates per epoch: the run crosses an epoch end
SAVE_EVERY = 4


def tiny_args(data: Path, save_dir: Path, *extra: str | Path) -> list[str]:
    """Two updates of the roberta_tiny preset: for runs that must start, or fail to."""
    return [str(data), "--arch", "roberta_tiny", "--max-tokens", "1024", "--tokens-per-sample", "128",
            "--sample-break-mode", "complete", "--max-update", "2", "--save-dir", str(save_dir),
            "--num-workers", "0", "--cpu", *map(str, extra)]


def tiny_run(data: Path, save_dir: Path, *extra: str) -> list[str]:
    """fairseq's masked-LM pretraining flags on the roberta_tiny preset, logging JSON."""
    return [str(data), "--task", "masked_lm", "--criterion", "masked_lm", "--arch", "roberta_tiny",
            "--sample-break-mode", "complete", "--tokens-per-sample", "128", "--max-tokens", "2048",
            "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--adam-eps", "1e-6", "--clip-norm", "1.0",
            "--lr-scheduler", "polynomial_decay", "--warmup-updates", "10", "--save-dir", str(save_dir),
            "--num-workers", "0", "--seed", "3", "--log-format", "json", "--log-interval", "10", "--cpu",
            *extra]


def train_command(data: Path, save_dir: Path, *extra: str) -> list[str]:
    """A roberta-train process that saves every SAVE_EVERY updates up to MAX_UPDATE: for kill and resume tests."""
    return [sys.executable, "-m", "roberta.cli.train", str(data), "--task", "masked_lm", "--arch", "roberta_tiny",
            *SMALLEST_SIZES, "--sample-break-mode", "complete", "--tokens-per-sample", "128", "--max-tokens", "4096",
            "--optimizer", "adam", "--lr", "1e-3", "--clip-norm", "1.0", "--lr-scheduler", "polynomial_decay",
            "--warmup-updates", "10", "--total-num-update", str(MAX_UPDATE), "--max-update", str(MAX_UPDATE),
            "--save-interval-updates", str(SAVE_EVERY), "--keep-interval-updates", "3", "--seed", "5",
            "--log-interval", "4", "--no-progress-bar", "--num-workers", "1", "--cpu", "--save-dir", str(save_dir),
            *extra]
