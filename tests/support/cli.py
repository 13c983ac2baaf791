"""Running a roberta command in a subprocess, and checking that it failed with one clear line."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable

from support.paths import REPO

# `command("train", *argv)` (the fixture in conftest.py): a finished roberta-train or -validate.
Command = Callable[..., subprocess.CompletedProcess]


def run_cli(module: str, *argv: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"roberta.cli.{module}", *map(str, argv)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess, prog: str, *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{prog}: error: "), result.stderr
    for fragment in fragments:
        assert fragment in last, last
