"""SIGTERM and Ctrl-C during training: finish the current update, save, then exit.

A job scheduler (SLURM, Kubernetes, torchrun shutting down) sends SIGTERM and waits a grace
period before SIGKILL; a user presses Ctrl-C. Either way the run should end at the next
update boundary with `checkpoint_last.pt` written, so rerunning the same command resumes it.
The first SIGTERM or SIGINT only records the request; a second Ctrl-C interrupts at once.
"""
from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any, Callable

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
STOP_EXIT_CODES = frozenset(128 + signum for signum in STOP_SIGNALS)


class StoppedBySignal(Exception):
    """Training stopped early on a signal, after saving; the process exits with 128 + signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


class StopSignals:
    """While entered, turns the first SIGTERM/SIGINT into `requested`; the loop polls it."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.received or signal.SIGTERM).name

    def __enter__(self) -> StopSignals:
        # Python delivers signals to the main thread only; elsewhere (an embedding program's
        # worker thread) the default behaviour stays.
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._handle) for signum in STOP_SIGNALS}
        return self

    def __exit__(self, *unused: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Only a flag: the handler may run in the middle of a checkpoint write or a collective.
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.received is None:
            self.received = signum


def ignore_interrupts(*unused: object) -> None:
    """For data-loading workers: Ctrl-C in a terminal reaches the whole process group, and a
    worker it killed would fail the main process's next batch before it could save. SIGTERM keeps
    its default: torch ends a worker that does not stop by itself with SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
