"""Shared fixtures: the real data samples in ../shared/data, skipped when absent."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# Tests import `tasks` and `criterions` from this checkout, never from another installed package.
sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data samples not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def gpt2_bpe_dir(shared_data: Path) -> Path:
    path = shared_data / "gpt2_bpe"
    if not (path / "encoder.json").is_file():
        pytest.skip(f"GPT-2 BPE files not found in {path}")
    return path
