"""One run per directory: a second roberta-train on a --save-dir in use is refused at once, naming
the holder's pid; temporaries are removed only when their writer is dead; file systems without
locks get a warning instead of a refusal."""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from roberta.checkpoint.files import load_checkpoint, num_updates
from roberta.checkpoint.manager import SAVE_DIR_LOCK, CheckpointManager, SaveSettings
from roberta.cli import sweep
from roberta.dir_lock import exclusive_directory
from roberta.errors import UserError
from support.cli import assert_one_line_error, run_cli
from support.live_run import Run
from support.train_args import train_command

REPO = Path(__file__).resolve().parent.parent
LOCK = ".test.lock"
# Takes the lock, prints its pid and, with "fork", a forked child's pid; then waits, or with "die"
# ends at once without releasing anything, as a killed run whose forked worker lives on.
HOLDER = r'''
import os, sys, time
from pathlib import Path
from roberta.dir_lock import exclusive_directory
directory, kind, ending = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
with exclusive_directory(directory, ".test.lock", str, kept_by_children=kind == "kept"):
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    print(os.getpid(), child, flush=True)
    if ending == "die":
        os._exit(0)
    time.sleep(60)
'''


def echo_holder(holder: str) -> str:
    return holder


def start_holder(directory: Path, kind: str, ending: str) -> tuple[subprocess.Popen, int, int]:
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory), kind, ending], cwd=REPO,
                               stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    pid, child = map(int, process.stdout.readline().split())
    return process, pid, child


def stop(*pids: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("kind", ["kept", "own"])
def test_a_held_directory_is_refused_naming_the_holder_until_the_holder_dies(tmp_path, kind):
    process, pid, child = start_holder(tmp_path, kind, "wait")
    try:
        with pytest.raises(UserError) as refused:
            with exclusive_directory(tmp_path, LOCK, echo_holder, kept_by_children=kind == "kept"):
                pass
        assert str(refused.value) == f"pid {pid}"
    finally:
        stop(pid, child)
        process.wait()
    deadline = time.monotonic() + 10
    while True:  # the forked child ends asynchronously after its SIGKILL
        try:
            with exclusive_directory(tmp_path, LOCK, echo_holder, kept_by_children=kind == "kept") as fd:
                assert os.pread(fd, 64, 0).split()[0] == str(os.getpid()).encode()
            break
        except UserError:
            assert time.monotonic() < deadline, "the lock outlived its holders"
            time.sleep(0.05)
    assert not (tmp_path / LOCK).exists()  # released and removed: the directory is as it was


@pytest.mark.parametrize("kind", ["kept", "own"])
def test_only_a_kept_lock_outlives_its_holder_in_forked_children(tmp_path, kind):
    """preprocess and sweep want their workers to hold the lock; a training run must not be kept out
    of its --save-dir by a data-loading worker that outlives a killed run."""
    process, pid, child = start_holder(tmp_path, kind, "die")
    process.wait()
    try:
        if kind == "kept":
            with pytest.raises(UserError, match=f"^pid {pid}$"):
                with exclusive_directory(tmp_path, LOCK, echo_holder, kept_by_children=True):
                    pass
        else:
            with exclusive_directory(tmp_path, LOCK, echo_holder, kept_by_children=False):
                pass
    finally:
        stop(child)


def test_a_lock_file_replaced_while_locking_is_locked_anew(tmp_path, monkeypatch):
    """The holder removes the file as it releases; a run that opened the old file locks the new one."""
    real_lockf, calls = fcntl.lockf, []

    def lockf(fd, operation):
        calls.append(os.fstat(fd).st_ino)
        if len(calls) == 1:  # the holder releases now: removes the file another process then recreates
            os.unlink(tmp_path / LOCK)
            (tmp_path / LOCK).write_text("")
        real_lockf(fd, operation)
    monkeypatch.setattr(fcntl, "lockf", lockf)
    with exclusive_directory(tmp_path, LOCK, echo_holder, kept_by_children=False):
        assert os.stat(tmp_path / LOCK).st_ino == calls[-1]
    assert len(calls) == 2 and calls[0] != calls[1]


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS])
@pytest.mark.parametrize("kept", [True, False])
def test_a_file_system_without_locks_warns_and_goes_on(tmp_path, monkeypatch, caplog, code, kept):
    def no_locks(fd, operation):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(fcntl, "flock" if kept else "lockf", no_locks)
    with caplog.at_level(logging.WARNING, logger="roberta.dir_lock"):
        with exclusive_directory(tmp_path, LOCK, echo_holder, kept_by_children=kept):
            ran = True
    assert ran and not (tmp_path / LOCK).exists()
    warnings = [record.getMessage() for record in caplog.records]
    assert warnings == [f"cannot lock {tmp_path / LOCK} ({os.strerror(code)}): this file system has no file "
                        f"locks, so a second run using {tmp_path} at the same time is not detected; make sure "
                        f"only one does"]


def test_other_lock_errors_are_not_mistaken_for_a_missing_feature(tmp_path, monkeypatch):
    def broken(fd, operation):
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(fcntl, "lockf", broken)
    with pytest.raises(OSError, match="Input/output error"):
        with exclusive_directory(tmp_path, LOCK, echo_holder, kept_by_children=False):
            pass


def test_a_second_sweep_on_the_output_dir_is_refused_naming_the_first(tmp_path):
    with sweep._locked(tmp_path):
        with pytest.raises(UserError, match=rf"another roberta-sweep, or a run it started, is still working "
                                            rf"there \(pid {os.getpid()}\)"):
            with sweep._locked(tmp_path):
                pass


def dead_pid() -> int:
    finished = subprocess.Popen(["true"])
    finished.wait()
    return finished.pid


def test_only_temporaries_of_dead_processes_are_removed_at_start(tmp_path, caplog):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        dead, live = f"checkpoint_1_4.pt.tmp.{dead_pid()}", f"checkpoint_last.pt.tmp.{sleeper.pid}"
        names = [dead, live, f"checkpoint_best.pt.tmp.{os.getpid()}", "notes.tmp.1", "checkpoint1.pt"]
        for name in names:
            (tmp_path / name).write_bytes(b"x")
        with caplog.at_level(logging.INFO, logger="roberta.checkpoint"):
            with CheckpointManager(SaveSettings(tmp_path)).sole_writer():
                assert sorted(path.name for path in tmp_path.iterdir()) == sorted({*names, SAVE_DIR_LOCK} - {dead})
    finally:
        sleeper.kill()
        sleeper.wait()
    assert f"removed 1 unfinished checkpoint file(s) left by an interrupted save: {dead}" in caplog.text
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(set(names) - {dead})


@pytest.mark.parametrize("no_save, writes_files", [(True, True), (False, False)])
def test_a_run_that_writes_nothing_there_takes_no_lock(tmp_path, no_save, writes_files):
    manager = CheckpointManager(SaveSettings(tmp_path / "ckpt", no_save=no_save))
    manager.writes_files = writes_files
    with manager.sole_writer():
        assert not (tmp_path / "ckpt").exists()


@pytest.mark.reliability
def test_a_second_run_on_the_same_save_dir_is_refused_at_once_naming_the_first(demo_data_bin, tmp_path):
    command = train_command(demo_data_bin, tmp_path, "--max-update", "8", "--batch-size-valid", "1")
    first = Run(command, "slow-validate:updates=4")  # a validation of a minute: the first run is busy
    try:
        first.wait_for('begin validation on "valid" subset')
        started = time.monotonic()
        second = run_cli("train", *command[3:])
        assert time.monotonic() - started < 30
        assert second.returncode == 1
        assert_one_line_error(second, "roberta-train")
        assert second.stderr.strip().splitlines()[-1] == (
            f"roberta-train: error: --save-dir {tmp_path} is in use by another roberta-train run "
            f"(pid {first.process.pid}); wait for it, stop it, or choose another --save-dir")
        assert "loaded" not in second.stderr  # refused before reading any data or checkpoint
        first.process.send_signal(signal.SIGTERM)
        assert first.finish() == 128 + signal.SIGTERM, first.output[-3000:]
    finally:
        first.process.kill()
        first.finish()
    assert num_updates(load_checkpoint(tmp_path / "checkpoint_last.pt")) == 4
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint_1_4.pt", "checkpoint_last.pt"]
