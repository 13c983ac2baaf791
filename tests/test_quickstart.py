"""The README's quickstart (scripts/quickstart.sh) runs end to end with the installed commands."""
from __future__ import annotations

import os
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
    assert "valid on 'valid' subset" in result.stderr
    assert "valid on 'test' subset" in result.stderr
