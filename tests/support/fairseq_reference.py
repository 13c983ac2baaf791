"""The fairseq 0.12.2 venv the opt-in interop tests compare against (FAIRSEQ_PYTHON; built by
scripts/fairseq_reference_env.sh)."""
from __future__ import annotations

import os
import subprocess

import pytest

FAIRSEQ_PYTHON = os.environ.get("FAIRSEQ_PYTHON", "")
# One thread per fairseq process: its start-up and tiny batches gain nothing from more on 2 cores.
FAIRSEQ_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def skip_module_without_fairseq() -> None:
    """At a test module's top: skip it all when FAIRSEQ_PYTHON is not set."""
    if not FAIRSEQ_PYTHON:
        pytest.skip("FAIRSEQ_PYTHON is not set (scripts/fairseq_reference_env.sh builds fairseq 0.12.2's venv)",
                    allow_module_level=True)


def require_fairseq_0_12_2() -> None:
    """Skip unless FAIRSEQ_PYTHON imports fairseq 0.12.2, the version these tests are written against."""
    result = subprocess.run([FAIRSEQ_PYTHON, "-c", "import fairseq; print(fairseq.__version__)"],
                            capture_output=True, text=True, env=FAIRSEQ_ENV, timeout=120)
    if result.returncode != 0 or result.stdout.strip() != "0.12.2":
        pytest.skip(f"FAIRSEQ_PYTHON={FAIRSEQ_PYTHON} does not import fairseq 0.12.2: "
                    f"{(result.stdout + result.stderr).strip()[-300:]}")
