"""Child processes that die with their parent, and the leftovers of runs that were killed.

A SIGKILLed process cannot stop its children: pool workers would go on binarizing for nobody,
and a step of a preprocessing script would go on and publish its output after the script was
killed. On Linux the kernel kills such a child when its parent dies (PR_SET_PDEATHSIG); elsewhere
a thread in the child watches for its parent to go.

    python -m roberta.process_lifetime PARENT_PID COMMAND [ARG...]

runs COMMAND so that it dies with PARENT_PID, its parent (the shell scripts start every step so;
bash cannot pass a SIGKILL on). Only on Linux: after `exec` no thread is left to watch.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Any, Callable, Sequence

PR_SET_PDEATHSIG = 1
PARENT_POLL_SECONDS = 0.5
ORPHAN_EXIT_STATUS = 128 + signal.SIGKILL


def die_with_parent(parent_pid: int) -> None:
    """Make this process die when `parent_pid`, its parent, dies; called first thing in a child.

    The kernel ties the signal to the thread that started the child: start children from a
    thread that lives as long as they should.
    """
    if not _kernel_kills_at_parent_death():
        _watch_parent(parent_pid)
    # A parent that died before the call above sends no signal; this child is already an orphan.
    if os.getppid() != parent_pid:
        os._exit(ORPHAN_EXIT_STATUS)


def _kernel_kills_at_parent_death() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int) -> None:
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(ORPHAN_EXIT_STATUS)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def worker_pool(workers: int, initializer: Callable[..., None] | None = None,
                initargs: Sequence[Any] = ()) -> Pool:
    """A `multiprocessing.Pool` whose workers die with this process, even when it is SIGKILLed."""
    # The workers' parent must be this process, not a fork server, for them to watch it.
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else None)
    return context.Pool(workers, initializer=_start_worker,
                        initargs=(os.getpid(), initializer, tuple(initargs)))


def _start_worker(parent_pid: int, initializer: Callable[..., None] | None, initargs: tuple) -> None:
    die_with_parent(parent_pid)
    if initializer is not None:
        initializer(*initargs)


def remove_leftovers_of_dead_runs(folder: Path, name: str) -> None:
    """Remove the entries `<name>.<pid>[.*]` of `folder` whose process is gone (a killed run's);
    those of live processes (a concurrent run) stay. Call it before this process creates its
    own: an entry with this process's id is then a dead run's (the id was reused)."""
    for path in folder.glob(f"{name}.*"):
        pid = path.name[len(name) + 1:].split(".")[0]
        if not pid.isdigit() or (int(pid) != os.getpid() and process_is_alive(int(pid))):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def process_is_alive(pid: int) -> bool:
    """Whether process `pid` still runs; a zombie (killed, not yet reaped) does not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return not Path("/proc/self").exists() and _signalable(pid)
    except OSError:
        return _signalable(pid)
    return stat[stat.rindex(")") + 2] != "Z"


def _signalable(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def main(argv: Sequence[str]) -> None:
    if len(argv) < 2 or not argv[0].isdigit():
        sys.exit("usage: python -m roberta.process_lifetime PARENT_PID COMMAND [ARG...]")
    die_with_parent(int(argv[0]))
    try:
        os.execvp(argv[1], list(argv[1:]))
    except OSError as error:
        sys.exit(f"{argv[1]}: cannot run ({error.strerror})")


if __name__ == "__main__":
    main(sys.argv[1:])
