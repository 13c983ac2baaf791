"""A training run's checkpoints as they appear: which files are new and complete, and whether the
run has finished (for `roberta-validate --watch`).

It polls rather than subscribing to file-system events: polling behaves the same on network file
systems and needs no extra package. A file is handed out once its size and modification time
have not changed over one poll. Ours appear complete (an atomic rename), but fairseq writes its
checkpoints in place. Our saves give several names to one file (hard links), and a name never
changes in place, so a file's (device, inode) identifies its contents within one run.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from roberta.errors import UserError
from roberta.fileio import atomic_write

FINISHED_MARKER = "run_finished.json"
# Our and fairseq's names; temporaries (`checkpoint_last.pt.tmp.123`) do not match.
_CHECKPOINT_NAME = re.compile(r"checkpoint[^/]*\.pt")


@dataclass(frozen=True)
class CheckpointFile:
    path: Path
    size: int
    mtime_ns: int
    identity: tuple[int, int]  # (device, inode)

    @property
    def fingerprint(self) -> tuple[str, int, int]:
        """What tells this version of the name from a later save under the same name."""
        return self.path.name, self.size, self.mtime_ns


def checkpoint_files(save_dir: Path) -> dict[str, CheckpointFile]:
    """The checkpoint files in `save_dir` now, by name (none while the folder does not exist)."""
    try:
        entries = list(os.scandir(save_dir))
    except FileNotFoundError:
        return {}
    found = {}
    for entry in entries:
        if not _CHECKPOINT_NAME.fullmatch(entry.name):
            continue
        try:
            if not entry.is_file():
                continue
            stat = entry.stat()
        except FileNotFoundError:  # deleted between the listing and the stat
            continue
        found[entry.name] = CheckpointFile(Path(entry.path), stat.st_size, stat.st_mtime_ns,
                                           (stat.st_dev, stat.st_ino))
    return found


class CheckpointPoller:
    """Hands out each version of each checkpoint file once, when it is complete, oldest first."""

    def __init__(self, save_dir: Path, handled: set[tuple[str, int, int]]) -> None:
        self.save_dir = save_dir
        self.handled = set(handled)
        self._previous: dict[str, CheckpointFile] = {}

    def poll(self) -> list[CheckpointFile]:
        """Files unchanged since the previous poll and not handled yet, in the order they were written."""
        current = checkpoint_files(self.save_dir)
        ready = [file for name, file in current.items()
                 if self._previous.get(name) == file and file.fingerprint not in self.handled]
        self._previous = current
        return sorted(ready, key=lambda file: (file.mtime_ns, file.path.name))

    def mark_handled(self, file: CheckpointFile) -> None:
        self.handled.add(file.fingerprint)

    def all_handled(self) -> bool:
        """Whether every file of the latest poll has been handed out and handled."""
        return all(file.fingerprint in self.handled for file in self._previous.values())


def finished_update(save_dir: Path) -> int | None:
    """The final update of the run that wrote `save_dir`, once it has finished; None while it runs."""
    marker = save_dir / FINISHED_MARKER
    try:
        return int(json.loads(marker.read_text())["num_updates"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{marker} is not a finished-run marker written by roberta-train; remove it "
                        f"if the run is still going") from None


def mark_finished(save_dir: Path, num_updates: int, epoch: int) -> None:
    """Tell watchers that this run is over: no checkpoint will follow update `num_updates`."""
    with atomic_write(save_dir / FINISHED_MARKER, "w", encoding="utf-8") as handle:
        json.dump({"num_updates": num_updates, "epoch": epoch}, handle)


def mark_running(save_dir: Path) -> None:
    """A run (a resume included) is writing checkpoints to `save_dir` again."""
    (save_dir / FINISHED_MARKER).unlink(missing_ok=True)
