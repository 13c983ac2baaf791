"""A SIGKILLed preprocessing run leaves no process running and publishes nothing afterwards; the
next run removes what it left and completes.

A SIGKILL cannot be handled, so the processes a run started must die with it by themselves:
roberta/process_lifetime.py (pool workers, and every step of the shell scripts).
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable

import pytest

from roberta.cli import preprocess
from roberta.process_lifetime import remove_leftovers_of_dead_runs

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
# How long the processes of a killed run may take to go; a poll of the parent takes 0.5 s.
DEATH_SECONDS = 5.0
needs_console_scripts = pytest.mark.skipif(shutil.which("roberta-bpe") is None,
                                           reason="console scripts not installed (pip install -e .)")
needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find processes")


def script_env(**extra: str) -> dict[str, str]:
    # The checkout first on the path: the console scripts and `python -m roberta...` must import
    # this tree's `roberta`, whatever the editable install points at.
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "PYTHON": sys.executable, **extra}


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat from the state on (state, ppid, pgrp, session, ...); None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rindex(")") + 2:].split()


def running(pids: set[int]) -> set[int]:
    """Those of `pids` still running (a zombie has ended: it only waits to be reaped)."""
    return {pid for pid in pids if (fields := stat_fields(pid)) is not None and fields[0] not in "ZX"}


def in_session(session: int) -> set[int]:
    """The live processes of `session`: a killed run's orphans keep it, whoever adopts them."""
    pids = {int(entry) for entry in os.listdir("/proc") if entry.isdigit()}
    return {pid for pid in running(pids) if (fields := stat_fields(pid)) and int(fields[3]) == session}


def children(pid: int) -> set[int]:
    pids = {int(entry) for entry in os.listdir("/proc") if entry.isdigit()}
    return {child for child in running(pids) if (fields := stat_fields(child)) and int(fields[1]) == pid}


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def wait_for(condition: Callable[[], object], seconds: float, what: str) -> object:
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.05)
    return value


def kill_session(process: subprocess.Popen) -> None:
    """After the test: whatever is left of the run it started (its own session) goes."""
    for pid in in_session(process.pid):
        os.kill(pid, signal.SIGKILL)
    process.wait()


# --------------------------------------------------------------------------------- pool workers

POOL_PROGRAM = textwrap.dedent("""
    import sys, time
    from roberta import process_lifetime
    if sys.argv[1] == "watch":  # as where the kernel offers no parent-death signal
        process_lifetime._kernel_kills_at_parent_death = lambda: False
    pool = process_lifetime.worker_pool(2)
    pool.map_async(time.sleep, [120, 120], chunksize=1)
    time.sleep(120)
""")


@needs_proc
@pytest.mark.parametrize("how", ["kernel", "watch"])
def test_pool_workers_die_with_a_sigkilled_parent(how: str) -> None:
    parent = subprocess.Popen([sys.executable, "-c", POOL_PROGRAM, how], env=script_env(),
                              start_new_session=True)
    try:
        workers = wait_for(lambda: len(found := children(parent.pid)) == 2 and found, 60, "2 workers")
        parent.kill()
        parent.wait()
        wait_for(lambda: not running(workers), DEATH_SECONDS, f"workers {workers} to die")
    finally:
        kill_session(parent)


def write_corpus(folder: Path, lines: int) -> tuple[Path, Path]:
    words = [f"w{number}" for number in range(300)]
    rng = random.Random(0)
    (folder / "dict.txt").write_text("".join(f"{word} 1\n" for word in words), encoding="utf-8")
    text = "".join(" ".join(rng.choices(words, k=50)) + "\n" for _ in range(lines))
    (folder / "text.txt").write_text(text, encoding="utf-8")
    return folder / "dict.txt", folder / "text.txt"


def preprocess_command(srcdict: Path, text: Path, destdir: Path) -> list[str]:
    return [sys.executable, "-m", "roberta.cli.preprocess", "--only-source", "--srcdict", str(srcdict),
            "--trainpref", str(text), "--destdir", str(destdir), "--workers", "2"]


@pytest.mark.slow
@pytest.mark.reliability
@needs_proc
def test_a_sigkilled_roberta_preprocess_leaves_no_worker_and_the_rerun_completes(tmp_path: Path) -> None:
    srcdict, big = write_corpus(tmp_path, 60_000)  # several seconds of work for each worker
    destdir = tmp_path / "data-bin"
    run = subprocess.Popen(preprocess_command(srcdict, big, destdir), env=script_env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        workers = wait_for(lambda: len(found := children(run.pid)) >= 2 and found, 60, "the pool workers")
        time.sleep(0.5)  # binarizing now
        run.kill()
        run.wait()
        wait_for(lambda: not running(workers), DEATH_SECONDS, f"workers {workers} to die")
    finally:
        kill_session(run)
    assert not (destdir / "train.idx").exists()
    # The workers held the lock on --destdir; it is free, and the staging folder goes.
    small = tmp_path / "small.txt"
    small.write_text("w1 w2\nw3\n", encoding="utf-8")
    rerun = subprocess.run(preprocess_command(srcdict, small, destdir), env=script_env(),
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    names = {path.name for path in destdir.iterdir()}
    assert {"dict.txt", "train.bin", "train.idx"} <= names
    assert not [name for name in names if name.startswith(preprocess.STAGING_PREFIX)], names


# ------------------------------------------------------------------------------- shell scripts

STEP_COMMANDS = ("roberta-bpe", "roberta-preprocess", '"$SCRIPTS/', '"${PYTHON:-python}"', "bash ")


def test_every_step_of_the_preprocessing_scripts_dies_with_the_script() -> None:
    """A step started without `step` would outlive a SIGKILLed script (scripts/steps.sh)."""
    for script in sorted(SCRIPTS.glob("*.sh")):
        if script.name in ("steps.sh", "quickstart.sh", "fairseq_reference_env.sh"):
            continue
        for number, line in enumerate(script.read_text(encoding="utf-8").splitlines(), start=1):
            code = line.strip()
            if code.startswith("#") or not code.startswith(STEP_COMMANDS):
                continue
            raise AssertionError(f"{script.name}:{number} starts a step without `step` or `exec`: {code}")


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def remove_with_bash(folder: Path, name: str) -> None:
    subprocess.run(["bash", "-c", f'source "{SCRIPTS / "steps.sh"}"; remove_dead_leftovers "$1"', "-",
                    str(folder / name)], check=True, timeout=30)


def remove_with_python(folder: Path, name: str) -> None:
    remove_leftovers_of_dead_runs(folder, name)


@needs_proc
@pytest.mark.parametrize("remove", [remove_with_bash, remove_with_python], ids=["steps.sh", "python"])
def test_leftovers_of_dead_runs_go_and_those_of_live_runs_stay(tmp_path: Path,
                                                               remove: Callable[[Path, str], None]) -> None:
    # A killed run's process may linger as a zombie until it is reaped: it no longer runs.
    zombie = subprocess.Popen(["true"])
    try:
        wait_for(lambda: not running({zombie.pid}), 10, "a zombie")
        dead, alive = dead_pid(), os.getppid()
        for name in (f"data-bin.extracted.{dead}.Ab12", f"data-bin.extracted.{dead}",
                     f"data-bin.extracted.{zombie.pid}.Cd34", f"data-bin.extracted.{alive}.x",
                     "data-bin.extracted.notapid", "data-bin", "other.extracted.1"):
            (tmp_path / name).mkdir()
            (tmp_path / name / "file").write_text("x", encoding="utf-8")
        remove(tmp_path, "data-bin.extracted")
    finally:
        zombie.wait()
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        ["data-bin", f"data-bin.extracted.{alive}.x", "data-bin.extracted.notapid", "other.extracted.1"])


def race_command(shared_data: Path, gpt2_bpe_dir: Path, data_bin: Path) -> list[str]:
    return ["bash", str(SCRIPTS / "preprocess_race.sh"), str(shared_data / "race" / "RACE"), str(data_bin),
            str(gpt2_bpe_dir)]


def glue_command(shared_data: Path, gpt2_bpe_dir: Path, data_bin: Path) -> list[str]:
    return ["bash", str(SCRIPTS / "preprocess_glue.sh"), str(shared_data / "glue"), "SST-2",
            str(data_bin.parent), str(gpt2_bpe_dir), "--splits", "dev"]


SCRIPT_RUNS = {"preprocess_race.sh": (race_command, "data-bin"), "preprocess_glue.sh": (glue_command, "SST-2-bin")}


@pytest.mark.slow
@pytest.mark.reliability
@needs_proc
@needs_console_scripts
@pytest.mark.parametrize("script", list(SCRIPT_RUNS))
def test_a_sigkilled_script_stops_at_once_publishes_nothing_and_the_rerun_cleans_up(
        shared_data: Path, gpt2_bpe_dir: Path, tmp_path: Path, script: str) -> None:
    make_command, output = SCRIPT_RUNS[script]
    root = tmp_path / "out"
    root.mkdir()
    command = make_command(shared_data, gpt2_bpe_dir, root / output)
    run = subprocess.Popen(command, env=script_env(WORKERS="2"), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        # Killed while binarizing: the steps that were left would still publish the output.
        wait_for(lambda: any("roberta-bpe" in command_line(pid) for pid in in_session(run.pid)), 120,
                 "the BPE step")
        run.kill()
        run.wait()
        wait_for(lambda: not in_session(run.pid), DEATH_SECONDS, "every process of the script to die")
    finally:
        kill_session(run)
    left = sorted(path.name for path in root.iterdir())
    assert output not in left and left, left  # nothing published; the temporaries of the killed run
    rerun = subprocess.run(command, env=script_env(WORKERS="2"), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert sorted(path.name for path in root.iterdir()) == [output]
