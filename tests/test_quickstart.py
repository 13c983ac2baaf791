"""The README's quickstart (scripts/quickstart.sh) runs end to end with the installed commands."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("roberta-train") is None, reason="console scripts not installed (pip install -e .)")
def test_quickstart_script(tmp_path: Path) -> None:
    env = {**os.environ, "MAX_UPDATE": "40", "WORKERS": "2"}
    result = subprocess.run(["bash", "scripts/quickstart.sh", str(tmp_path / "qs")], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "qs" / "checkpoints" / "checkpoint_best.pt").is_file()
    assert "| valid | " in result.stderr and "| test | " in result.stderr
    # It ends by saying where things are and what to try next; the fill-mask command it prints works.
    out = tmp_path / "qs"
    summary = result.stdout.split("Done. Your model: ", 1)[1]
    assert summary.startswith(f"{out / 'checkpoints' / 'checkpoint_best.pt'} (update 40).")
    assert re.search(r"Validation perplexity: valid [\d.]+, test [\d.]+", summary)
    assert f"Logs: {out / 'train.log'}" in summary and "roberta-train RACE-bin --task sentence_ranking" in summary
    assert f"Curves: {out / 'curves.png'}" in summary or "pip install -e '.[plot]'" in summary
    fill_mask = next(line.strip() for line in summary.splitlines() if line.strip().startswith("python -c"))
    filled = subprocess.run(fill_mask, shell=True, capture_output=True, text=True, timeout=120)
    assert filled.returncode == 0, filled.stderr
    assert filled.stdout.startswith("[('The farmer builds the wooden") and filled.stdout.count("(") == 3
