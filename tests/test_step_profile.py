"""benchmarks/step_profile.py: the categories it reports, and its window over a real program."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from support.paths import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from step_profile import UNATTRIBUTED, breakdown  # noqa: E402

from roberta.models.encoder import dropout  # noqa: E402


def profiled_update(updates: int = 2) -> dict[str, float]:
    """A small linear layer trained with our CPU dropout and torch's Adam, profiled."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 64)
    optimizer = torch.optim.Adam(layer.parameters())
    x = torch.randn(256, 64)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        start = time.perf_counter()
        for _ in range(updates):
            loss = torch.nn.functional.gelu(dropout(layer(x), 0.1, training=True)).square().mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        wall = time.perf_counter() - start
    return breakdown(profiler.events(), wall, updates)


def test_each_kind_of_work_lands_in_its_category() -> None:
    per_update = profiled_update()
    for category in ("matrix multiply", "dropout & random", "gelu", "optimizer step"):
        assert per_update.get(category, 0.0) > 0.0, (category, per_update)
    parts = sum(value for key, value in per_update.items() if key != "total (wall)")
    assert per_update[UNATTRIBUTED] >= 0.0
    assert parts == pytest.approx(per_update["total (wall)"], rel=0.05), per_update


def run_profiled_program(folder: Path, updates: int, *window: str) -> subprocess.CompletedProcess:
    """`python -m program` (which makes `updates` calls of `loop.Loop.update`) under step_profile."""
    (folder / "loop.py").write_text(
        "import torch\n"
        "class Loop:\n"
        "    def update(self):\n"
        "        torch.mm(torch.randn(64, 64), torch.randn(64, 64))\n")
    (folder / "program.py").write_text(f"import loop\nfor _ in range({updates}):\n    loop.Loop().update()\n")
    command = [sys.executable, str(REPO / "benchmarks" / "step_profile.py"), "--step", "loop:Loop.update",
               *window, "--out", str(folder / "profile.json"), "--", "-m", "program"]
    return subprocess.run(command, capture_output=True, text=True, cwd=folder,
                          env={"PYTHONPATH": str(folder), "PATH": "/usr/bin:/bin"})


def test_the_window_covers_the_asked_updates_of_a_real_program(tmp_path: Path) -> None:
    result = run_profiled_program(tmp_path, 6, "--skip", "2", "--updates", "3")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "profile.json").read_text())
    assert report["updates"] == 3 and report["ms_per_update"]["matrix multiply"] > 0.0
    assert sorted(path.name for path in tmp_path.iterdir() if path.is_file()) == [
        "loop.py", "profile.json", "program.py"]


def test_a_run_too_short_for_the_window_says_so(tmp_path: Path) -> None:
    result = run_profiled_program(tmp_path, 1)
    assert result.returncode == 1
    assert result.stderr.strip() == "step_profile: the run made 1 updates; it needs --skip + --updates = 15 + 1"
