"""A full disk or a read-only --save-dir: found at start-up or at the save, one clear line, and the
checkpoints already written stay whole.

The conditions are real, not simulated: each run happens in its own mount namespace (`unshare`)
where --save-dir is a small tmpfs (the kernel answers ENOSPC) or a read-only bind mount (EROFS,
which binds even root). Where mount namespaces are not available the tests skip.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from roberta.checkpoint.files import load_checkpoint, num_updates
from support.mount_namespace import require_mount_namespace, run_in_namespace

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
SAVE_EVERY = 8


@pytest.fixture(scope="module")
def mount_namespace() -> None:
    require_mount_namespace()


def train_command(data: Path, save_dir: Path) -> list[str]:
    return [sys.executable, "-m", "roberta.cli.train", str(data), "--arch", "roberta_tiny", "--max-tokens", "2048",
            "--tokens-per-sample", "128", "--sample-break-mode", "complete", "--max-update", str(3 * SAVE_EVERY),
            "--save-interval-updates", str(SAVE_EVERY), "--disable-validation", "--num-workers", "0", "--cpu",
            "--no-progress-bar", "--save-dir", str(save_dir)]


def last_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stderr.strip().splitlines()[-1]


def test_disk_full_at_a_save_keeps_the_previous_checkpoint(mount_namespace, demo_data_bin: Path,
                                                           tmp_path: Path) -> None:
    # Room for one checkpoint (1.8 MB for this model, all names hard links to it) but not two.
    save_dir, after = tmp_path / "save", tmp_path / "after"
    save_dir.mkdir()
    result = run_in_namespace(f"mount -t tmpfs -o size=2560k tmpfs {save_dir}", train_command(demo_data_bin, save_dir),
                              save_dir, after)
    assert result.returncode == 1, result.stderr[-3000:]
    line = last_line(result)
    assert line.startswith("roberta-train: error: could not write checkpoint to ")
    assert f"checkpoint_1_{2 * SAVE_EVERY}.pt: No space left on device; previous checkpoints are intact" in line
    assert sorted(path.name for path in after.iterdir()) == ["checkpoint_1_8.pt", "checkpoint_last.pt"]
    assert num_updates(load_checkpoint(after / "checkpoint_last.pt")) == SAVE_EVERY
    # With room again, the same command goes on from there.
    again = subprocess.run(train_command(demo_data_bin, after), cwd=REPO, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"(update {SAVE_EVERY})" in again.stderr
    assert num_updates(load_checkpoint(after / "checkpoint_last.pt")) == 3 * SAVE_EVERY


def test_a_full_disk_is_found_before_training(mount_namespace, demo_data_bin: Path, tmp_path: Path) -> None:
    save_dir = tmp_path / "save"
    save_dir.mkdir()
    fill = f"dd if=/dev/zero of={save_dir}/filler bs=64k 2>/dev/null || true"
    result = run_in_namespace(f"mount -t tmpfs -o size=256k tmpfs {save_dir}; {fill}",
                              train_command(demo_data_bin, save_dir), save_dir, tmp_path / "after")
    assert result.returncode == 1
    assert last_line(result) == (f"roberta-train: error: --save-dir {save_dir}: not writable (No space left on "
                                 f"device); choose another directory or fix its permissions")
    assert "loaded" not in result.stderr  # refused before reading any data


def test_a_read_only_save_dir_is_found_before_training_and_left_alone(mount_namespace, demo_data_bin: Path,
                                                                      tmp_path: Path) -> None:
    save_dir = tmp_path / "save"
    first = subprocess.run(train_command(demo_data_bin, save_dir), cwd=REPO, capture_output=True, text=True,
                           timeout=240)
    assert first.returncode == 0, first.stderr[-3000:]
    before = {path.name: path.read_bytes() for path in save_dir.iterdir()}
    command = train_command(demo_data_bin, save_dir)
    command[command.index("--max-update") + 1] = str(5 * SAVE_EVERY)
    read_only = f"mount --bind {save_dir} {save_dir}; mount -o remount,bind,ro {save_dir}"
    result = run_in_namespace(read_only, command, save_dir, tmp_path / "after")
    assert result.returncode == 1
    assert last_line(result) == (f"roberta-train: error: --save-dir {save_dir}: not writable (Read-only file "
                                 f"system); choose another directory or fix its permissions")
    assert {path.name: path.read_bytes() for path in save_dir.iterdir()} == before
