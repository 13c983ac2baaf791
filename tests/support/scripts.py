"""Running the shell and Python scripts of scripts/ against this checkout, and checking their errors."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support.paths import REPO


def script_env() -> dict[str, str]:
    # The checkout first on the path: the console scripts and `python scripts/...` must import
    # this tree's `roberta`, whatever the editable install points at.
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "PYTHON": sys.executable, "WORKERS": "1"}


def run(*command: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(part) for part in command], capture_output=True, text=True,
                          env=script_env(), timeout=300)


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def assert_error_is_only_line(result: subprocess.CompletedProcess, prog: str, *fragments: str) -> None:
    """Exit status 1 and stderr one `prog: error: ...` line: stricter than support.cli's check,
    which lets log lines come before the error."""
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{prog}: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
