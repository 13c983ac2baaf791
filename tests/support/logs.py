"""The JSON records of a `--log-format json` training or validation log."""
from __future__ import annotations

import json
from pathlib import Path


def json_events(text: str, tag: str) -> list[dict]:
    events = []
    for line in text.splitlines():
        if f"| {tag} |" in line:
            events.append(json.loads(line.split(f"| {tag} | ", 1)[1]))
    return events


def fairseq_log(path: Path, tag: str) -> list[dict]:
    return json_events(path.read_text(encoding="utf-8"), tag)
