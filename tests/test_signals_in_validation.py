"""SIGTERM during validation: the pass is abandoned within seconds, checkpoint_last.pt is written,
the process exits 143, and the same command resumes; also in the final validation at
--max-update, and with several processes when only one of them got the signal.

The validation is made to last over a minute (`slow-validate` adds a second to each of its 72
batches), so a run that finished the pass before stopping would fail the time limit.
"""
from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from roberta.checkpoint.files import load_checkpoint, num_updates
from support.live_run import Run, run_to_end
from support.train_args import train_command

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

BEGIN_VALIDATION = 'begin validation on "valid" subset'
STOP_WITHIN_SECONDS = 10
VALIDATE_AT = 4


def slow_validation_command(data: Path, save_dir: Path, max_update: int, *extra: str) -> list[str]:
    return train_command(data, save_dir, "--max-update", str(max_update), "--batch-size-valid", "1", *extra)


def assert_stopped_in_validation(run: Run, started: float, save_dir: Path) -> dict:
    code = run.finish()
    assert code == 128 + signal.SIGTERM, run.output[-3000:]
    assert time.monotonic() - started < STOP_WITHIN_SECONDS, run.output[-3000:]
    assert "Traceback" not in run.output
    assert "validation abandoned for the stop request" in run.output
    assert "valid on 'valid' subset" not in run.output  # no score from the abandoned pass
    stopped = [line for line in run.lines if "stopped by SIGTERM at update" in line]
    assert len(stopped) == 1 and f"at update {VALIDATE_AT}: {save_dir / 'checkpoint_last.pt'} holds this update" \
        in stopped[0], run.output[-3000:]
    state = load_checkpoint(save_dir / "checkpoint_last.pt")
    assert num_updates(state) == VALIDATE_AT
    assert state["extra_state"]["val_loss"] is None and not (save_dir / "checkpoint_best.pt").exists()
    return state


@pytest.mark.parametrize("max_update", [2 * VALIDATE_AT, VALIDATE_AT], ids=["mid-run", "final-validation"])
def test_sigterm_during_validation_abandons_it_saves_and_exits_143(demo_data_bin: Path, tmp_path: Path,
                                                                     max_update: int) -> None:
    command = slow_validation_command(demo_data_bin, tmp_path, max_update)
    run = Run(command, f"slow-validate:updates={VALIDATE_AT}")
    run.wait_for(BEGIN_VALIDATION)
    time.sleep(1.0)  # well inside the pass
    started = time.monotonic()
    run.process.send_signal(signal.SIGTERM)
    assert_stopped_in_validation(run, started, tmp_path)
    code, output = run_to_end(command)
    assert code == 0, output[-3000:]
    assert f"restored {tmp_path / 'checkpoint_last.pt'} (update {VALIDATE_AT})" in output
    assert num_updates(load_checkpoint(tmp_path / "checkpoint_last.pt")) == max_update
    if max_update == VALIDATE_AT:
        assert "already at --max-update" in output


def test_a_signal_to_one_rank_during_validation_stops_every_rank(demo_data_bin: Path, tmp_path: Path) -> None:
    # Rank 1 alone signals itself at its first validation batch; rank 0 must leave the pass with it.
    command = slow_validation_command(demo_data_bin, tmp_path, 2 * VALIDATE_AT, "--distributed-world-size", "2",
                                      "--distributed-init-method", f"file://{tmp_path / 'rendezvous'}")
    run = Run(command, f"slow-validate:updates={VALIDATE_AT};sigterm-validate:rank=1:updates={VALIDATE_AT}")
    run.wait_for(BEGIN_VALIDATION)
    started = time.monotonic()
    assert_stopped_in_validation(run, started, tmp_path)
    assert "Terminating process" not in run.output  # no rank had to be killed by the launcher
