"""A real full disk under roberta-preprocess, roberta-convert and --log-file: one line, nothing
left behind, the previous output intact; a log file whose disk fills is reported once and the run
goes on. The disk is a tiny tmpfs in a private mount namespace (tests/mount_namespace.py);
tests/test_failed_writes.py fails every write of the same writers in-process.
"""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from roberta.models import ModelConfig, RobertaModel
from roberta.models.hf_export import save_our_checkpoint
from support.mount_namespace import require_mount_namespace, run_in_namespace

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

NO_SPACE = "No space left on device"


@pytest.fixture(scope="module")
def mount_namespace() -> None:
    require_mount_namespace()


def tmpfs(folder: Path, size: str, copy_from: Path | None = None, fill: bool = False) -> str:
    """Shell commands mounting a tmpfs of `size` over `folder`, holding a copy of `copy_from`, or
    filled up."""
    commands = [f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(folder))}"]
    if copy_from is not None:
        commands.append(f"cp -a {shlex.quote(str(copy_from))}/. {shlex.quote(str(folder))}/")
    if fill:
        commands.append(f"dd if=/dev/zero of={shlex.quote(str(folder / 'filler'))} bs=4k 2>/dev/null || true")
    return "; ".join(commands)


def tree(root: Path, skip: frozenset[str] = frozenset()) -> dict[str, bytes | None]:
    return {path.relative_to(root).as_posix(): path.read_bytes() if path.is_file() else None
            for path in sorted(root.rglob("*")) if path.name not in skip}


def stderr_lines(result: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in result.stderr and "Logging error" not in result.stderr, result.stderr[-3000:]
    return [line for line in result.stderr.splitlines() if " | INFO | " not in line]


# ------------------------------------------------------------------------------ roberta-preprocess

def preprocess_command(srcdict: Path, text: Path, destdir: Path) -> list[str]:
    return [sys.executable, "-m", "roberta.cli.preprocess", "--only-source", "--srcdict", str(srcdict),
            "--trainpref", str(text), "--destdir", str(destdir), "--workers", "1"]


@pytest.fixture
def corpus(tmp_path: Path) -> dict[str, Path]:
    words = [f"w{number}" for number in range(300)]
    (tmp_path / "dict.txt").write_text("".join(f"{word} 1\n" for word in words), encoding="utf-8")
    (tmp_path / "small.txt").write_text("w1 w2\nw3\n", encoding="utf-8")
    # 2 bytes a token: 2 MB of tokens, on a disk of 256 kB.
    (tmp_path / "big.txt").write_text(f"{' '.join(words[:50])}\n" * 20_000, encoding="utf-8")
    return {"dict": tmp_path / "dict.txt", "small": tmp_path / "small.txt", "big": tmp_path / "big.txt"}


def test_preprocess_on_a_disk_that_fills_keeps_the_previous_output(mount_namespace, corpus: dict[str, Path],
                                                                    tmp_path: Path) -> None:
    previous, destdir, after = tmp_path / "previous", tmp_path / "data-bin", tmp_path / "after"
    done = subprocess.run(preprocess_command(corpus["dict"], corpus["small"], previous), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    destdir.mkdir()
    result = run_in_namespace(tmpfs(destdir, "256k", copy_from=previous),
                              preprocess_command(corpus["dict"], corpus["big"], destdir), destdir, after)
    assert result.returncode == 1, result.stderr[-3000:]
    assert stderr_lines(result) == [
        f"roberta-preprocess: error: could not write {destdir / 'train.bin'}: {NO_SPACE}; nothing was "
        f"published, the previous output in {destdir} is intact"]
    log = frozenset({"preprocess.log"})
    assert tree(after, log) == tree(previous, log)  # and no staging folder


def test_preprocess_into_a_full_disk_is_refused_at_the_start(mount_namespace, corpus: dict[str, Path],
                                                              tmp_path: Path) -> None:
    destdir = tmp_path / "data-bin"
    destdir.mkdir()
    result = run_in_namespace(tmpfs(destdir, "64k", fill=True),
                              preprocess_command(corpus["dict"], corpus["small"], destdir), destdir,
                              tmp_path / "after")
    assert result.returncode == 1, result.stderr[-3000:]
    assert stderr_lines(result) == [
        f"roberta-preprocess: error: --destdir {destdir}: cannot write there ({NO_SPACE}); free some space "
        f"or choose another --destdir"]


# ---------------------------------------------------------------------------------- roberta-convert

def checkpoint(path: Path, vocab_size: int, dim: int) -> Path:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=vocab_size, encoder_layers=1, encoder_embed_dim=dim,
                         encoder_ffn_embed_dim=2 * dim, encoder_attention_heads=2, max_positions=16)
    return save_our_checkpoint(path, RobertaModel(config).state_dict(), config)


def convert_command(source: Path, target: Path, to: str) -> list[str]:
    return [sys.executable, "-m", "roberta.cli.convert", str(source), str(target), "--to", to]


@pytest.mark.parametrize("to", ["ours", "huggingface"])
def test_convert_onto_a_disk_too_small_keeps_the_previous_output(mount_namespace, tmp_path: Path, to: str) -> None:
    small = checkpoint(tmp_path / "small.pt", vocab_size=24, dim=8)  # a few kB
    big = checkpoint(tmp_path / "big.pt", vocab_size=2000, dim=64)  # about 1 MB
    previous, out, after = tmp_path / "previous", tmp_path / "out", tmp_path / "after"
    name = "hf" if to == "huggingface" else "model.pt"
    done = subprocess.run(convert_command(small, previous / name, to), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out.mkdir()
    result = run_in_namespace(tmpfs(out, "256k", copy_from=previous), convert_command(big, out / name, to), out,
                              after)
    assert result.returncode == 1, result.stderr[-3000:]
    assert stderr_lines(result) == [
        f"roberta-convert: error: could not write {out / name}: {NO_SPACE}; the previous one is intact; "
        f"free some space or choose another OUTPUT"]
    assert tree(after) == tree(previous)


# ---------------------------------------------------------------------------------------- --log-file

def train_command(data: Path, save_dir: Path, log_file: Path) -> list[str]:
    return [sys.executable, "-m", "roberta.cli.train", str(data), "--arch", "roberta_tiny", "--max-tokens", "2048",
            "--tokens-per-sample", "128", "--sample-break-mode", "complete", "--max-update", "6",
            "--log-interval", "1", "--disable-validation", "--num-workers", "0", "--cpu", "--no-progress-bar",
            "--no-save", "--save-dir", str(save_dir), "--log-file", str(log_file)]


def test_a_log_file_whose_disk_fills_is_reported_once_and_training_goes_on(mount_namespace, demo_data_bin: Path,
                                                                             tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    # One page: the first lines fit, the command line arguments alone nearly fill it.
    result = run_in_namespace(tmpfs(logs, "4k"), train_command(demo_data_bin, tmp_path / "save", logs / "train.log"),
                              logs, tmp_path / "after")
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in stderr_lines(result) if "--log-file" in line]
    assert [line.split(" | ")[-1] for line in warnings] == [
        f"--log-file {logs / 'train.log'}: write failed ({NO_SPACE}); logging to the console only from now"]
    lines = result.stderr.splitlines()
    assert lines.index(warnings[0]) < max(number for number, line in enumerate(lines) if "| train |" in line)


def test_a_log_file_on_a_full_disk_is_refused_before_training(mount_namespace, demo_data_bin: Path,
                                                               tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    result = run_in_namespace(tmpfs(logs, "16k", fill=True),
                              train_command(demo_data_bin, tmp_path / "save", logs / "train.log"), logs,
                              tmp_path / "after")
    assert result.returncode == 1, result.stderr[-3000:]
    assert stderr_lines(result)[-1:] == [
        f"roberta-train: error: --log-file {logs / 'train.log'}: cannot write ({NO_SPACE}); pick a writable "
        f"path on a disk with free space"]
    assert "loaded" not in result.stderr  # refused before reading any data
