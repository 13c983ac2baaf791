"""Saving: when and under which names, atomic writes, retention (--keep-*), the best score and
early stopping (--patience); one writer per --save-dir."""
from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from roberta.checkpoint.watch import mark_finished, mark_running
from roberta.dir_lock import exclusive_directory
from roberta.errors import UserError
from roberta.faults import NO_FAULTS, FaultInjector
from roberta.fileio import atomic_write, failed_write_cause, remove_orphaned_temporaries, temporary_path

logger = logging.getLogger("roberta.checkpoint")

SAVE_DIR_LOCK = ".roberta-train.lock"
_MINIMUMS = {"save_interval": 1, "save_interval_updates": 0, "keep_interval_updates": -1, "patience": -1,
             "keep_interval_updates_pattern": -1, "keep_last_epochs": -1, "keep_best_checkpoints": -1}


def add_save_args(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Declare fairseq's saving flags (same names, same defaults)."""
    add = parser.add_argument

    def number(flag: str, default: int, help_text: str) -> None:
        add(flag, type=int, default=default, metavar="N", help=help_text)

    def switch(flag: str, help_text: str) -> None:
        add(flag, action="store_true", help=help_text)

    number("--save-interval", 1, "save a checkpoint every N epochs")
    number("--save-interval-updates", 0, "also save (and validate) every N updates; 0 disables")
    number("--keep-interval-updates", -1, "keep only the newest N checkpoint_E_U.pt files; -1 keeps all")
    number("--keep-interval-updates-pattern", -1, "never prune checkpoint_E_U.pt with U %% N == 0; -1 off")
    number("--keep-last-epochs", -1, "keep only the newest N checkpoint{E}.pt files; -1 keeps all")
    number("--keep-best-checkpoints", -1, "keep the N best as checkpoint.best_<metric>_<value>.pt; -1 off")
    switch("--no-save", "do not save any checkpoint")
    switch("--no-epoch-checkpoints", "do not write checkpoint{E}.pt at epoch ends (only best and last)")
    switch("--no-last-checkpoints", "do not write checkpoint_last.pt")
    switch("--no-save-optimizer-state", "leave optimizer state out of checkpoints (a resume restarts Adam)")
    add("--best-checkpoint-metric", default="loss", help="valid metric for checkpoint_best.pt and --patience")
    switch("--maximize-best-checkpoint-metric", "higher --best-checkpoint-metric is better (e.g. accuracy)")
    number("--patience", -1, "stop after N consecutive validations without improvement; -1 disables")
    add("--checkpoint-suffix", default="", metavar="SUFFIX", help="text inserted before .pt in file names")


@dataclass(frozen=True)
class SaveSettings:
    """The saving flags, checked together."""
    save_dir: Path = Path("checkpoints")
    checkpoint_suffix: str = ""
    save_interval: int = 1
    save_interval_updates: int = 0
    keep_interval_updates: int = -1
    keep_interval_updates_pattern: int = -1
    keep_last_epochs: int = -1
    keep_best_checkpoints: int = -1
    no_save: bool = False
    no_epoch_checkpoints: bool = False
    no_last_checkpoints: bool = False
    no_save_optimizer_state: bool = False
    best_checkpoint_metric: str = "loss"
    maximize_best_checkpoint_metric: bool = False
    patience: int = -1

    def __post_init__(self) -> None:
        object.__setattr__(self, "save_dir", Path(self.save_dir))
        problems = self.problems()
        if problems:
            raise UserError("; ".join(problems))

    def problems(self) -> list[str]:
        """Every value that makes no sense, as one phrase each."""
        problems = [f"--{flag.replace('_', '-')} {getattr(self, flag)}: must be at least {minimum}"
                    for flag, minimum in _MINIMUMS.items() if getattr(self, flag) < minimum]
        if not re.fullmatch(r"[\w.-]+", self.best_checkpoint_metric):
            problems.append(f"--best-checkpoint-metric '{self.best_checkpoint_metric}': must be a metric "
                            f"name such as loss or accuracy")
        if "/" in self.checkpoint_suffix or self.checkpoint_suffix[:1].isdigit():
            problems.append(f"--checkpoint-suffix '{self.checkpoint_suffix}': must not contain '/' or start "
                            f"with a digit (file names would become ambiguous)")
        return problems

    @property
    def saves_last(self) -> bool:
        """Whether checkpoint_last.pt is written (a stopped run can resume from it)."""
        return not (self.no_save or self.no_last_checkpoints)


class CheckpointManager:
    """Decides when and under which names to save, writes atomically, prunes, and tracks the best score.

    All names of one save are hard links to (or atomic copies of) one serialized file; saves only
    ever replace directory entries and never write into an existing file, so the names stay
    independent. `writes_files` is False on ranks > 0: they keep the schedule and the best score,
    rank 0 writes.
    """

    def __init__(self, settings: SaveSettings, *, writes_files: bool = True,
                 faults: FaultInjector = NO_FAULTS) -> None:
        self.settings = settings
        self.save_dir = settings.save_dir
        self.writes_files = writes_files
        self.faults = faults
        self.best: float | None = None
        self._patience_best: float | None = None
        self._validations_without_improvement = 0

    def restore_best(self, best: float | None) -> None:
        """Continue the best score of a restored run (None when its meters were reset)."""
        self.best = best

    def check_writable(self) -> None:
        """Fail at start-up, not hours later at the first save, when --save-dir cannot be written."""
        if self.settings.no_save or not self.writes_files:
            return
        probe = self.save_dir / f".write-probe-{os.getpid()}"
        try:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as error:
            raise UserError(f"--save-dir {self.save_dir}: not writable ({error.strerror}); choose another "
                            f"directory or fix its permissions") from None

    @contextlib.contextmanager
    def sole_writer(self) -> Iterator[None]:
        """For a whole run: check --save-dir is writable, hold its lock (a second run on it is refused
        with the holder's pid), and remove what saves of dead processes left behind, which no later
        save would overwrite. Ranks that do not write files take no lock."""
        if self.settings.no_save or not self.writes_files:
            yield
            return
        self.check_writable()
        in_use = (lambda holder: f"--save-dir {self.save_dir} is in use by another roberta-train run ({holder}); "
                                 f"wait for it, stop it, or choose another --save-dir")
        # Not kept by children: a data-loading worker that outlives a killed run must not keep the rerun out.
        with exclusive_directory(self.save_dir, SAVE_DIR_LOCK, in_use, kept_by_children=False):
            stale = remove_orphaned_temporaries(self.save_dir, "checkpoint*.pt.tmp.*")
            if stale:
                logger.info("removed %d unfinished checkpoint file(s) left by an interrupted save: %s",
                            len(stale), ", ".join(path.name for path in stale))
            mark_running(self.save_dir)
            yield

    def mark_finished(self, num_updates: int, epoch: int) -> None:
        """Leave the marker that ends `roberta-validate --watch` on this --save-dir."""
        if not self.settings.no_save and self.writes_files:
            mark_finished(self.save_dir, num_updates, epoch)

    def is_better(self, a: float, b: float | None, *, strict: bool = False) -> bool:
        """Whether score `a` is at least as good as `b` (ties overwrite checkpoint_best.pt, as in fairseq)
        or, with `strict`, better. A NaN is never better, so it cannot freeze the best score."""
        if not math.isfinite(a):
            return False
        if b is None:
            return True
        if self.settings.maximize_best_checkpoint_metric:
            return a > b if strict else a >= b
        return a < b if strict else a <= b

    def is_save_time(self, epoch: int, num_updates: int, end_of_epoch: bool, *,
                     stopping: bool = False) -> bool:
        """fairseq's schedule: every --save-interval epochs, every --save-interval-updates, at a stop."""
        if self.settings.no_save:
            return False
        at_epoch = end_of_epoch and epoch % self.settings.save_interval == 0
        interval = self.settings.save_interval_updates
        return at_epoch or (interval > 0 and num_updates > 0 and num_updates % interval == 0) or stopping

    def should_stop_early(self, val_metric: float | None) -> bool:
        """True after --patience consecutive validations without strict improvement (in-process only)."""
        if self.settings.patience <= 0 or val_metric is None:
            return False
        if self.is_better(val_metric, self._patience_best, strict=True):
            self._patience_best = val_metric
            self._validations_without_improvement = 0
            return False
        self._validations_without_improvement += 1
        if self._validations_without_improvement < self.settings.patience:
            return False
        logger.info("early stop: valid %s has not improved for %d validations (--patience %d)",
                    self.settings.best_checkpoint_metric, self._validations_without_improvement, self.settings.patience)
        return True

    def save(self, state: dict, *, epoch: int, num_updates: int, end_of_epoch: bool,
             val_metric: float | None) -> list[Path]:
        """Write `state` under every name this moment calls for; returns the paths written."""
        val = None if val_metric is None else float(val_metric)
        if val is not None and not math.isfinite(val):
            logger.warning("valid %s is %s: it cannot become the best", self.settings.best_checkpoint_metric, val)
        is_best = val is not None and self.is_better(val, self.best)
        if is_best:
            self.best = val
        if self.settings.no_save or not self.writes_files:
            return []
        paths = self._paths(epoch, num_updates, end_of_epoch, val, is_best)
        if not paths:
            return []
        extra_state = {**(state.get("extra_state") or {}), "val_loss": val, "best": self.best}
        try:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            self._write({**state, "extra_state": extra_state}, paths, num_updates)
        except (OSError, RuntimeError) as error:
            disk_error = failed_write_cause(error)
            if disk_error is None:
                raise
            raise UserError(f"could not write checkpoint to {paths[0]}: {disk_error.strerror}; "
                            f"previous checkpoints are intact") from None
        logger.info("saved %s (epoch %d @ %d updates, valid %s %s, best %s)", ", ".join(map(str, paths)),
                    epoch, num_updates, self.settings.best_checkpoint_metric, val, self.best)
        self._prune()
        return paths

    def _paths(self, epoch: int, num_updates: int, end_of_epoch: bool, val: float | None,
               is_best: bool) -> list[Path]:
        suffix, names = self.settings.checkpoint_suffix, []
        if end_of_epoch and not self.settings.no_epoch_checkpoints and epoch % self.settings.save_interval == 0:
            names.append(f"checkpoint{epoch}{suffix}.pt")
        interval = self.settings.save_interval_updates
        if not end_of_epoch and interval > 0 and num_updates % interval == 0:
            names.append(f"checkpoint_{epoch}_{num_updates}{suffix}.pt")
        if is_best:
            names.append(f"checkpoint_best{suffix}.pt")
        if self.settings.keep_best_checkpoints > 0 and val is not None and math.isfinite(val):
            kept = self._best_files()  # best first, so the last one is the worst still on disk
            if len(kept) < self.settings.keep_best_checkpoints or self.is_better(val, kept[-1][0]):
                names.append(f"checkpoint.best_{self.settings.best_checkpoint_metric}_{val:.3f}{suffix}.pt")
        if not self.settings.no_last_checkpoints:
            names.append(f"checkpoint_last{suffix}.pt")
        return [self.save_dir / name for name in names]

    def _write(self, state: dict, paths: list[Path], num_updates: int) -> None:
        # Serialize once; a crash at any point leaves each name either old or new, never partial.
        first, *others = paths
        with atomic_write(first, "wb") as handle:
            torch.save(state, handle)
            self.faults.kill_if("kill-save", update=num_updates)
        self.faults.kill_if("kill-save-names", update=num_updates)
        for path in others:
            link = temporary_path(path)
            link.unlink(missing_ok=True)  # left by a killed process that had our pid
            try:
                os.link(first, link)
            except OSError:  # a file system without hard links: copy, still through a temporary
                with open(first, "rb") as source, atomic_write(path, "wb") as target:
                    shutil.copyfileobj(source, target)
                continue
            try:
                os.replace(link, path)
            finally:
                link.unlink(missing_ok=True)

    def _prune(self) -> None:
        """Apply --keep-*; only files whose whole name matches our own patterns are ever deleted."""
        suffix, doomed = re.escape(self.settings.checkpoint_suffix), []
        if self.settings.keep_interval_updates > 0:
            pattern = self.settings.keep_interval_updates_pattern
            found = self._matching(rf"checkpoint_\d+_(\d+){suffix}\.pt", reverse=True)
            doomed += [path for u, path in found if pattern <= 0 or u % pattern][self.settings.keep_interval_updates:]
        if self.settings.keep_last_epochs > 0:
            epochs = self._matching(rf"checkpoint(\d+){suffix}\.pt", reverse=True)
            doomed += [path for _, path in epochs][self.settings.keep_last_epochs:]
        if self.settings.keep_best_checkpoints > 0:
            doomed += [path for _, path in self._best_files()[self.settings.keep_best_checkpoints:]]
        for path in doomed:
            path.unlink(missing_ok=True)
            logger.info("removed old checkpoint %s", path)

    def _best_files(self) -> list[tuple[float, Path]]:
        """This metric's checkpoint.best_* files, best score first."""
        metric, suffix = re.escape(self.settings.best_checkpoint_metric), re.escape(self.settings.checkpoint_suffix)
        regex = rf"checkpoint\.best_{metric}_(-?\d+\.\d+){suffix}\.pt"
        return self._matching(regex, reverse=self.settings.maximize_best_checkpoint_metric)

    def _matching(self, regex: str, *, reverse: bool) -> list[tuple[float, Path]]:
        """(number in the name, path) of the files whose whole name matches `regex`, sorted by number."""
        compiled = re.compile(regex)
        found = [(float(match.group(1)), path) for path in self.save_dir.iterdir()
                 if (match := compiled.fullmatch(path.name)) and path.is_file()]
        return sorted(found, key=lambda item: item[0], reverse=reverse)
