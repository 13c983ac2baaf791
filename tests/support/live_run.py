"""A training subprocess read line by line while it runs, so a test can act at a given moment."""
from __future__ import annotations

import os
import subprocess
import threading

from roberta.faults import ENVIRONMENT_VARIABLE as FAULTS

TIMEOUT = 240


class Run:
    """A training subprocess whose merged output is read line by line while it runs."""

    def __init__(self, command: list[str], faults: str = "", *, new_session: bool = False) -> None:
        env = {**os.environ, FAULTS: faults, "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        env=env, start_new_session=new_session)
        self.lines: list[str] = []
        self._watchdog = threading.Timer(TIMEOUT, self.process.kill)
        self._watchdog.start()

    def wait_for(self, fragment: str) -> str:
        """Read output until a line contains `fragment`; fails if the process ends first."""
        for line in self.process.stdout:
            self.lines.append(line)
            if fragment in line:
                return line
        raise AssertionError(f"the run ended without printing {fragment!r}:\n{self.output[-3000:]}")

    def finish(self) -> int:
        self.lines.extend(self.process.stdout)
        code = self.process.wait()
        self._watchdog.cancel()
        return code

    @property
    def output(self) -> str:
        return "".join(self.lines)


def run_to_end(command: list[str], faults: str = "") -> tuple[int, str]:
    run = Run(command, faults)
    code = run.finish()
    return code, run.output
