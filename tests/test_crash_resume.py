"""Nothing is lost: SIGKILL at random moments, SIGTERM and Ctrl-C, then the same command again.

Every run is a real `roberta-train` subprocess on the CPU. A run is killed (SIGKILL, no cleanup
of any kind) in a training step, while a checkpoint is being written, between the names of one
save, during validation, and at random wall-clock moments; each time the same command is run
again. The final weights and optimizer state must equal, bit for bit, those of a run that was
never interrupted, and every checkpoint file on disk must load at every moment in between.
"""
from __future__ import annotations

import os
import random
import re
import signal
import time
from pathlib import Path

import pytest
import torch

from roberta.checkpoint.files import load_checkpoint, num_updates
from roberta.stop_signals import StoppedBySignal, StopSignals
from support.live_run import Run, run_to_end
from support.train_args import MAX_UPDATE, SAVE_EVERY, train_command

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

EPOCH_END = 31  # train_command's --max-tokens 4096 makes 31 updates per epoch


def checkpoints(save_dir: Path) -> list[Path]:
    return sorted(save_dir.glob("checkpoint*.pt"))


def assert_every_checkpoint_loads(save_dir: Path) -> None:
    for path in checkpoints(save_dir):
        load_checkpoint(path)  # a truncated or half-renamed file raises here


def updates_in(path: Path) -> int:
    return num_updates(load_checkpoint(path))


def last_save_before(update: int) -> int:
    saves = [u for u in range(SAVE_EVERY, MAX_UPDATE + 1, SAVE_EVERY)] + [EPOCH_END]
    return max([u for u in saves if u < update], default=0)


def assert_same_training_state(path: Path, reference: Path) -> None:
    ours, theirs = load_checkpoint(path), load_checkpoint(reference)
    assert num_updates(ours) == num_updates(theirs) == MAX_UPDATE
    assert ours["model"].keys() == theirs["model"].keys()
    for key, tensor in theirs["model"].items():
        assert torch.equal(ours["model"][key], tensor), key
    ours_adam, theirs_adam = ours["last_optimizer_state"]["state"], theirs["last_optimizer_state"]["state"]
    assert ours_adam.keys() == theirs_adam.keys()
    for index, state in theirs_adam.items():
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(ours_adam[index][name], state[name]), (index, name)
    assert ours["extra_state"]["best"] == theirs["extra_state"]["best"]


@pytest.fixture(scope="module")
def uninterrupted(demo_data_bin: Path, tmp_path_factory) -> Path:
    save_dir = tmp_path_factory.mktemp("uninterrupted")
    code, output = run_to_end(train_command(demo_data_bin, save_dir))
    assert code == 0, output[-3000:]
    return save_dir / "checkpoint_last.pt"


def test_sigkill_at_random_moments_then_rerun_gives_identical_weights(demo_data_bin: Path, uninterrupted: Path,
                                                                      tmp_path: Path) -> None:
    rng = random.Random(8)
    command = train_command(demo_data_bin, tmp_path)
    last = tmp_path / "checkpoint_last.pt"

    def saved_update() -> int:
        return updates_in(last) if last.exists() else 0

    def kill_at(fault: str, update: int) -> str:
        code, output = run_to_end(command, f"{fault}:updates={update}")
        assert code == -signal.SIGKILL, f"{fault} at update {update} did not kill the run:\n{output[-3000:]}"
        assert_every_checkpoint_loads(tmp_path)
        # A kill loses at most the updates since the last save before it.
        assert saved_update() == last_save_before(update), (fault, update)
        return output

    def kill_from_outside(within_seconds: float) -> None:
        run = Run(command)
        run.wait_for("train_inner")
        time.sleep(rng.uniform(0.0, within_seconds))
        run.process.kill()
        assert run.finish() in (-signal.SIGKILL, 0)  # 0: it finished first
        assert_every_checkpoint_loads(tmp_path)

    def next_save(after: int, before: int) -> int:
        choices = [u for u in range(SAVE_EVERY, before, SAVE_EVERY) if u > after]
        assert choices, f"no save point between {after} and {before}"
        return rng.choice(choices)

    kill_at("kill-step", rng.randint(2, 2 * SAVE_EVERY - 1))
    kill_from_outside(within_seconds=0.1)
    save_at = next_save(saved_update(), EPOCH_END - SAVE_EVERY)
    kill_at("kill-save", save_at)
    left_behind = [path.name for path in tmp_path.glob("*.tmp.*")]
    assert len(left_behind) == 1 and re.fullmatch(rf"checkpoint_1_{save_at}\.pt\.tmp\.\d+", left_behind[0]), left_behind
    output = kill_at("kill-validate", next_save(save_at, EPOCH_END))
    assert f"removed 1 unfinished checkpoint file(s) left by an interrupted save: {left_behind[0]}" in output
    # At the epoch end checkpoint1.pt is written first, then checkpoint_last.pt: each is old or new.
    kill_at("kill-save-names", EPOCH_END)
    assert updates_in(tmp_path / "checkpoint1.pt") == EPOCH_END
    code, output = run_to_end(command)
    assert code == 0, output[-3000:]
    assert_same_training_state(last, uninterrupted)
    assert not list(tmp_path.glob("*.tmp*")), "temporary files were left behind"


def stopped_at(run: Run, signum: int) -> int:
    """The update a run stopped at after `signum`, checked against what it says and saved."""
    code = run.finish()
    assert code == 128 + signum, run.output[-3000:]
    assert "Traceback" not in run.output and "exited unexpectedly" not in run.output, run.output[-3000:]
    stopped = [line for line in run.lines if f"stopped by {signal.Signals(signum).name} at update" in line]
    assert len(stopped) == 1, run.output[-3000:]  # one line, from rank 0 alone
    assert "run the same command to resume" in stopped[0]
    update = int(stopped[0].split("at update ")[1].split(":")[0])
    assert 0 < update < MAX_UPDATE
    save_dir = Path(run.process.args[run.process.args.index("--save-dir") + 1])
    assert updates_in(save_dir / "checkpoint_last.pt") == update
    return update


def test_sigterm_saves_at_the_next_update_says_so_and_resumes_exactly(demo_data_bin: Path, uninterrupted: Path,
                                                                      tmp_path: Path) -> None:
    command = train_command(demo_data_bin, tmp_path)
    run = Run(command)
    run.wait_for("train_inner")
    run.process.send_signal(signal.SIGTERM)
    stop_update = stopped_at(run, signal.SIGTERM)
    code, output = run_to_end(command)
    assert code == 0, output[-3000:]
    assert f"restored {tmp_path / 'checkpoint_last.pt'} (update {stop_update})" in output
    assert_same_training_state(tmp_path / "checkpoint_last.pt", uninterrupted)


def test_ctrl_c_to_the_process_group_spares_the_data_workers(demo_data_bin: Path, tmp_path: Path) -> None:
    # A terminal's Ctrl-C reaches every process of the group, data-loading workers included.
    run = Run(train_command(demo_data_bin, tmp_path), new_session=True)
    run.wait_for("train_inner")
    os.killpg(run.process.pid, signal.SIGINT)
    stopped_at(run, signal.SIGINT)


def test_sigterm_to_the_launcher_stops_every_rank_at_the_same_update(demo_data_bin: Path, tmp_path: Path) -> None:
    command = train_command(demo_data_bin, tmp_path, "--distributed-world-size", "2",
                            "--distributed-init-method", f"file://{tmp_path / 'rendezvous'}")
    run = Run(command)
    run.wait_for("train_inner")
    run.process.send_signal(signal.SIGTERM)
    stopped_at(run, signal.SIGTERM)
    assert "Terminating process" not in run.output  # no rank had to be killed by the launcher


def test_the_first_signal_is_a_request_and_a_second_ctrl_c_interrupts_at_once() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with StopSignals() as stop_signals:
        assert not stop_signals.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop_signals.requested and stop_signals.name == "SIGTERM"
        os.kill(os.getpid(), signal.SIGTERM)  # the same request again: still no exception
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert StoppedBySignal(signal.SIGTERM).exit_code == 143 and StoppedBySignal(signal.SIGINT).exit_code == 130


FAILING_CRITERION = '''
from criterions.masked_lm import MaskedLMCriterion
from roberta.registry import CRITERIONS

CALLS = [0]


@CRITERIONS.register("failing_masked_lm")
class FailingMaskedLMCriterion(MaskedLMCriterion):
    def forward(self, model, sample):
        CALLS[0] += 1
        if CALLS[0] == 12:
            raise RuntimeError("a bug in the criterion")
        return super().forward(model, sample)
'''


def test_a_bug_mid_epoch_ends_the_run_instead_of_hanging(demo_data_bin: Path, tmp_path: Path) -> None:
    # The data worker of the abandoned epoch must still be stopped at exit (torch does it with SIGTERM).
    plugin = tmp_path / "failing_plugin"
    plugin.mkdir()
    (plugin / "__init__.py").write_text(FAILING_CRITERION)
    command = train_command(demo_data_bin, tmp_path / "ckpt", "--user-dir", str(plugin),
                            "--criterion", "failing_masked_lm")
    started = time.monotonic()
    code, output = run_to_end(command)
    assert code == 1 and "RuntimeError: a bug in the criterion" in output, output[-3000:]
    assert time.monotonic() - started < 60
