"""`roberta-validate DATA --watch SAVE_DIR`: validate each checkpoint a training run writes, once,
as it appears, until the run finishes.

Every result is appended to SAVE_DIR/watch/results.jsonl (one object per checkpoint and subset:
checkpoint, subset, epoch, update, the run's training seconds, every metric) and the same table
is rewritten as results.tsv. A rerun skips the checkpoint versions already scored. The watcher
polls every `--watch-interval` seconds, so it also works on network file systems and from
another machine; it ends when the run leaves its finished marker, at `--watch-until-update`, or
on Ctrl-C/SIGTERM, each with exit status 0.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from roberta.checkpoint.files import last_finished_epoch, num_updates
from roberta.checkpoint.watch import CheckpointFile
from roberta.errors import UserError
from roberta.fileio import atomic_write
from roberta.flag_types import positive_float, positive_int
from roberta.models.pretrained import Pretrained
from roberta.stop_signals import StopSignals

_LEADING_COLUMNS = ("checkpoint", "subset", "epoch", "update", "train_seconds")
_TRAILING_COLUMNS = ("validated_at", "size", "mtime_ns")


@dataclass(frozen=True)
class WatchSettings:
    watch: Path
    watch_until_update: int | None = None
    watch_interval: float = 10.0


def add_watch_args(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *,
                   default: str | None = None) -> None:
    """The watch flags; `default` argparse.SUPPRESS records only what is given (a first pass)."""
    parser.add_argument("--watch", metavar="SAVE_DIR", default=default,
                        help="instead of --path: validate every checkpoint a training run writes to SAVE_DIR, "
                             "once each, as it appears; results go to SAVE_DIR/watch/results.{jsonl,tsv}")
    parser.add_argument("--watch-until-update", type=positive_int("--watch-until-update"), metavar="N",
                        default=default, help="with --watch, stop after the first checkpoint at update N or later")
    parser.add_argument("--watch-interval", type=positive_float("--watch-interval"), metavar="SECONDS",
                        default=default if default is not None else 10.0,
                        help="with --watch, seconds between looks at SAVE_DIR; a file is validated once "
                             "it has not changed for one interval (default: 10)")


def watch_settings(argv: Sequence[str] | None) -> WatchSettings | None:
    """The watch flags of `argv`, or None without --watch. `--path` and --watch exclude each other."""
    first_pass = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_watch_args(first_pass, default=argparse.SUPPRESS)
    first_pass.add_argument("--path", default=argparse.SUPPRESS)
    given = vars(first_pass.parse_known_args(argv)[0])
    if "watch" not in given:
        for flag in ("watch_until_update", "watch_interval"):
            if flag in given:
                raise UserError(f"--{flag.replace('_', '-')} needs --watch SAVE_DIR")
        return None
    if "path" in given:
        raise UserError("give --path (one checkpoint) or --watch (every checkpoint of a run), not both")
    given.pop("path", None)
    return WatchSettings(**{**given, "watch": Path(given["watch"])})


class WatchResults:
    """SAVE_DIR/watch/results.jsonl, appended row by row, and results.tsv, rewritten from it.
    The rows are read once, when the watcher starts; later ones are kept as they are appended."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.jsonl = folder / "results.jsonl"
        self.tsv = folder / "results.tsv"
        self.rows = self._read_rows()

    def _read_rows(self) -> list[dict]:
        if not self.jsonl.exists():
            return []
        rows = []
        for number, line in enumerate(self.jsonl.read_text(encoding="utf-8").splitlines(), 1):
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError
            except ValueError:
                raise UserError(f"{self.jsonl}, line {number}: not a result row; move the file away "
                                f"to score every checkpoint again") from None
            rows.append(row)
        return rows

    def scored(self) -> set[tuple[str, int, int]]:
        """The (name, size, mtime) versions already scored."""
        return {(row["checkpoint"], row["size"], row["mtime_ns"]) for row in self.rows
                if {"checkpoint", "size", "mtime_ns"} <= row.keys()}

    def append(self, rows: list[dict]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.jsonl, "a", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
            handle.flush()
            os.fsync(handle.fileno())
        self.rows.extend(rows)
        metrics = [key for row in self.rows for key in row
                   if key not in _LEADING_COLUMNS and key not in _TRAILING_COLUMNS]
        columns = [*_LEADING_COLUMNS, *dict.fromkeys(metrics), *_TRAILING_COLUMNS]
        with atomic_write(self.tsv, "w", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, columns, delimiter="\t", lineterminator="\n", restval="")
            writer.writeheader()
            writer.writerows(self.rows)


def result_row(file: CheckpointFile, pretrained: Pretrained, subset: str, stats: dict) -> dict:
    state = pretrained.training_state or {}
    extra = state.get("extra_state") or {}
    metrics = {key: value for key, value in stats.items() if key != "num_updates"}
    return {"checkpoint": file.path.name, "subset": subset, "epoch": last_finished_epoch(state),
            "update": num_updates(state),
            "train_seconds": extra.get("previous_training_time"), **metrics,
            "validated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "size": file.size, "mtime_ns": file.mtime_ns}


def sleep(seconds: float, stop_signals: StopSignals) -> None:
    """Sleep, waking early for a stop request."""
    deadline = time.monotonic() + seconds
    while not stop_signals.requested and time.monotonic() < deadline:
        time.sleep(min(0.1, deadline - time.monotonic()))
