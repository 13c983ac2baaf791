"""Checkpoint policy: flags, file names, retention, best score, --reset-*, atomic writes, loading.

Names and keys follow fairseq (`checkpoint_last.pt`, `checkpoint{E}.pt`, `checkpoint_{E}_{U}.pt`,
`checkpoint_best.pt`, `optimizer_history`, `extra_state`, ...) so runs and tools written for
fairseq keep working. Where fairseq was unsafe we are strict: a missing explicit --restore-file is
an error, every name is created atomically, loading never runs pickled code unless --unsafe-load
is given, and a fine-tuning run never inherits its pretraining run's best score.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import logging
import math
import os
import re
import shutil
from dataclasses import astuple, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from roberta.dir_lock import exclusive_directory
from roberta.errors import UserError
from roberta.faults import NO_FAULTS, FaultInjector
from roberta.fileio import atomic_write, failed_write_cause, remove_orphaned_temporaries, temporary_path
from roberta.torch_file import read_torch_file

logger = logging.getLogger(__name__)

DEFAULT_RESTORE_FILE = "checkpoint_last.pt"
SAVE_DIR_LOCK = ".roberta-train.lock"
_PLAIN_SCALARS = (str, int, float, bool, type(None))
_DROP = object()  # marks a value plain_config leaves out
_MINIMUMS = {"save_interval": 1, "save_interval_updates": 0, "keep_interval_updates": -1, "patience": -1,
             "keep_interval_updates_pattern": -1, "keep_last_epochs": -1, "keep_best_checkpoints": -1}
_RESET_FLAGS = ("reset_optimizer", "reset_lr_scheduler", "reset_dataloader", "reset_meters")


def add_checkpoint_args(parser: argparse.ArgumentParser) -> None:
    """Declare fairseq's checkpoint flags (same names, same defaults) and --unsafe-load."""
    add = parser.add_argument

    def number(flag: str, default: int, help_text: str) -> None:
        add(flag, type=int, default=default, metavar="N", help=help_text)

    def switch(flag: str, help_text: str) -> None:
        add(flag, action="store_true", help=help_text)

    add("--save-dir", default="checkpoints", metavar="DIR", help="directory to write checkpoints to")
    add("--restore-file", default=DEFAULT_RESTORE_FILE, metavar="FILE",
        help="checkpoint to resume from; the default means <save-dir>/checkpoint_last.pt if it exists, "
             "any other value is a path that must exist: ours, a fairseq model.pt or a Hugging Face folder")
    add("--finetune-from-model", default=None, metavar="FILE",
        help="start from this model with all --reset-* implied, unless <save-dir>/checkpoint_last.pt "
             "already exists (then that run is resumed)")
    switch("--reset-optimizer", "do not restore optimizer and LR scheduler state, update count, best score")
    switch("--reset-lr-scheduler", "do not restore the LR scheduler state")
    switch("--reset-dataloader", "do not restore the data position; start at epoch 1")
    switch("--reset-meters", "do not restore meters, the best score or the training time")
    add("--optimizer-overrides", default="{}", metavar="DICT",
        help="dict literal of optimizer param-group values to set after restoring, e.g. \"{'lr': 1e-5}\"")
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
    switch("--unsafe-load", "allow checkpoints that need arbitrary code to unpickle; only for trusted files")


def validate_checkpoint_args(args: argparse.Namespace) -> None:
    """Reject flag combinations that make no sense, reporting every problem in one error."""
    problems = []
    if args.finetune_from_model is not None:
        if args.restore_file != DEFAULT_RESTORE_FILE:
            problems.append(f"--finetune-from-model cannot be combined with --restore-file "
                            f"{args.restore_file}; pass only one of them")
        explicit = ", ".join("--" + flag.replace("_", "-") for flag in _RESET_FLAGS if getattr(args, flag))
        if explicit:
            problems.append(f"--finetune-from-model already implies every --reset-* flag; drop {explicit}")
    for flag, minimum in _MINIMUMS.items():
        if getattr(args, flag) < minimum:
            problems.append(f"--{flag.replace('_', '-')} {getattr(args, flag)}: must be at least {minimum}")
    if not re.fullmatch(r"[\w.-]+", args.best_checkpoint_metric):
        problems.append(f"--best-checkpoint-metric '{args.best_checkpoint_metric}': must be a metric "
                        f"name such as loss or accuracy")
    if "/" in args.checkpoint_suffix or args.checkpoint_suffix[:1].isdigit():
        problems.append(f"--checkpoint-suffix '{args.checkpoint_suffix}': must not contain '/' or start "
                        f"with a digit (file names would become ambiguous)")
    try:
        parse_optimizer_overrides(args.optimizer_overrides)
    except UserError as error:
        problems.append(str(error))
    if problems:
        raise UserError("; ".join(problems))


def parse_optimizer_overrides(text: str) -> dict:
    """`--optimizer-overrides` as a dict; only literals are accepted, never evaluated code."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = None
    if not isinstance(value, dict):
        raise UserError(f"--optimizer-overrides {text!r}: not a Python dict literal; "
                        f"write e.g. \"{{'lr': 1e-5}}\"")
    return value


@dataclass(frozen=True)
class Resets:
    """Which parts of a loaded checkpoint to ignore (the four --reset-* flags)."""
    optimizer: bool = False
    lr_scheduler: bool = False
    dataloader: bool = False
    meters: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Resets:
        return cls(*(getattr(args, flag) for flag in _RESET_FLAGS))

    def merged_with(self, other: Resets) -> Resets:
        return Resets(*(mine or theirs for mine, theirs in zip(astuple(self), astuple(other))))


def last_checkpoint(save_dir: str | os.PathLike, suffix: str = "") -> Path:
    """Where a run in `save_dir` keeps the checkpoint it resumes from."""
    return Path(save_dir) / f"checkpoint_last{suffix}.pt"


def resolve_restore_file(restore_file: str, save_dir: str | os.PathLike, finetune_from_model: str | None,
                         *, suffix: str = "") -> tuple[Path | None, Resets]:
    """The checkpoint to start from (None = fresh start) and the resets that choice implies.

    Unlike fairseq, an explicit --restore-file that does not exist is an error: silently
    training from random weights is the worst outcome of a typo (fairseq #999).
    """
    last = last_checkpoint(save_dir, suffix)
    if restore_file != DEFAULT_RESTORE_FILE:  # validate_checkpoint_args forbids --finetune-from-model here
        return _existing_file(Path(restore_file), "--restore-file", save_dir), Resets()
    if last.is_file():
        if finetune_from_model is not None:
            logger.info("resuming %s; --finetune-from-model only starts fresh runs", last)
        return last, Resets()
    if finetune_from_model is not None:
        path = _existing_file(Path(finetune_from_model), "--finetune-from-model", save_dir)
        logger.info("fine-tuning from %s (optimizer, LR scheduler, data position and meters reset)", path)
        return path, Resets(optimizer=True, lr_scheduler=True, dataloader=True, meters=True)
    logger.info("no checkpoint found at %s; starting from scratch", last)
    return None, Resets()


def _existing_file(path: Path, flag: str, save_dir: str | os.PathLike) -> Path:
    if path.is_file() or (path / "config.json").is_file():  # or a Hugging Face model folder
        return path
    in_save_dir, hint = Path(save_dir) / path, "pass an existing checkpoint file"
    if not path.is_absolute() and in_save_dir.is_file():
        hint = f"relative paths are taken from the current directory; did you mean {in_save_dir}?"
    raise UserError(f"{flag} {path}: {'not a file' if path.exists() else 'no such file'}; {hint}")


def load_checkpoint(path: str | os.PathLike, *, unsafe: bool = False) -> dict:
    """Read a checkpoint onto the CPU without running pickled code; every failure names the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path}: no such file")
    state = read_torch_file(path, unsafe=unsafe)
    if not isinstance(state, dict) or "model" not in state:
        raise UserError(f"checkpoint {path}: not a model checkpoint (no 'model' entry); "
                        f"pass a file written by roberta-train or fairseq-train")
    return state


def training_flags(state: dict) -> dict:
    """The flags a checkpoint was trained with: our flat `cfg`, fairseq's `cfg` groups, or legacy `args`.

    fairseq 0.10-0.12 store each group of `cfg` as a dict or, for groups built from the command
    line (always `model` in 0.12), as an argparse.Namespace; both read the same here.
    """
    cfg, args = state.get("cfg"), state.get("args")
    if isinstance(cfg, dict) and isinstance(cfg.get("common"), (dict, argparse.Namespace)):
        return {key: value for name in cfg for key, value in config_group(state, name).items()}
    if isinstance(cfg, dict):
        return dict(cfg)
    return dict(vars(args)) if isinstance(args, argparse.Namespace) else {}


def config_group(state: dict, name: str) -> dict:
    """One group of a fairseq `cfg` (e.g. "model", "task") as a dict; {} when absent."""
    cfg = state.get("cfg")
    group = cfg.get(name) if isinstance(cfg, dict) else None
    if isinstance(group, argparse.Namespace):
        return dict(vars(group))
    return dict(group) if isinstance(group, dict) else {}


def num_updates(state: dict) -> int:
    """How many updates the checkpoint was trained for (0 for a model without training state)."""
    history = state.get("optimizer_history") or [{}]
    return int(history[-1].get("num_updates", 0))


def epoch(state: dict) -> int:
    """The epoch the checkpoint's data position lies in (fairseq stores E+1 at the end of epoch E)."""
    return int(((state.get("extra_state") or {}).get("train_iterator") or {}).get("epoch", 1))


def plain_config(args: argparse.Namespace) -> dict:
    """`args` as nested plain values (paths as str) that load with weights_only=True; other objects
    are dropped, since storing them would make the checkpoint need arbitrary unpickling."""
    return {key: plain for key, value in vars(args).items() if (plain := _to_plain(value)) is not _DROP}


def _to_plain(value: Any) -> Any:
    if isinstance(value, _PLAIN_SCALARS):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, argparse.Namespace):
        value = vars(value)
    if isinstance(value, dict):
        if not all(isinstance(key, (str, int)) for key in value):
            return _DROP
        items = {key: _to_plain(item) for key, item in value.items()}
        return {key: item for key, item in items.items() if item is not _DROP}
    if isinstance(value, (list, tuple)):
        items = [_to_plain(item) for item in value]
        # A list with a hole would silently change meaning (e.g. per-epoch update_freq): drop it whole.
        return _DROP if any(item is _DROP for item in items) else type(value)(items)
    return _DROP


def build_checkpoint_state(
        *, cfg: dict, model_state: dict, criterion_name: str, optimizer_name: str,
        optimizer_state: dict | None, lr_scheduler_state: dict, num_updates: int, train_iterator: dict,
        previous_history: Sequence[dict] = (), val_loss: float | None = None, best: float | None = None,
        metrics: dict | None = None, previous_training_time: float = 0.0, save_optimizer_state: bool = True,
        criterion_state: dict | None = None, task_state: dict | None = None) -> dict:
    """Assemble a checkpoint with fairseq's top-level keys (fairseq-notes 5.3)."""
    history_entry = {"criterion_name": criterion_name, "optimizer_name": optimizer_name,
                     "lr_scheduler_state": lr_scheduler_state, "num_updates": num_updates}
    state = {
        "args": None, "cfg": cfg, "model": model_state, "criterion": criterion_state,
        "optimizer_history": [*previous_history, history_entry],
        "task_state": task_state or {},
        "extra_state": {"train_iterator": {"version": 2, **train_iterator}, "val_loss": val_loss,
                        "best": best, "metrics": metrics or {},
                        "previous_training_time": previous_training_time},
    }
    if save_optimizer_state and optimizer_state is not None:
        state["last_optimizer_state"] = optimizer_state
    return state


@dataclass
class RestorePlan:
    """What to put back from a loaded checkpoint; None means "keep the fresh value"."""
    model: dict
    optimizer_state: dict | None
    optimizer_overrides: dict
    lr_scheduler_state: dict | None
    num_updates: int
    optimizer_history: list
    train_iterator: dict | None
    metrics: dict | None
    best: float | None
    previous_training_time: float


def apply_resets(state: dict, resets: Resets, *, optimizer_name: str, criterion_name: str | None = None,
                 optimizer_overrides: dict | None = None) -> RestorePlan:
    """Decide what of `state` to restore under `resets` (pure; the trainer applies the plan).

    --reset-optimizer also drops the scheduler, the update count and the best score: a
    fine-tuning run must not compare itself with its pretraining run's best (fairseq #1302).
    """
    history = list(state.get("optimizer_history") or [])
    newest = history[-1] if history else {}
    if not resets.optimizer:
        for kind, ours in (("optimizer", optimizer_name), ("criterion", criterion_name)):
            theirs = newest.get(f"{kind}_name")
            if ours is not None and theirs is not None and theirs != ours:
                raise UserError(f"the checkpoint was trained with {kind} {theirs}, this run uses {ours} "
                                f"(did --fp16 or --{kind} change?); pass --reset-optimizer to start "
                                f"the optimizer afresh")
    extra = state.get("extra_state") or {}
    optimizer_state = None if resets.optimizer else state.get("last_optimizer_state")
    if not resets.optimizer and optimizer_state is None and history:
        logger.warning("the checkpoint has no optimizer state (saved with --no-save-optimizer-state); "
                       "the optimizer starts afresh")
    iterator = None if resets.dataloader else extra.get("train_iterator")
    # A checkpoint taken at an epoch boundary has nothing to add to the new epoch's meters.
    at_epoch_start = iterator is not None and iterator.get("iterations_in_epoch", 0) == 0
    scheduler_state = newest.get("lr_scheduler_state")
    return RestorePlan(
        model=state["model"],
        optimizer_state=optimizer_state,
        optimizer_overrides=dict(optimizer_overrides or {}) if optimizer_state is not None else {},
        lr_scheduler_state=None if resets.optimizer or resets.lr_scheduler else scheduler_state,
        num_updates=0 if resets.optimizer else num_updates(state),
        optimizer_history=history,
        train_iterator=iterator,
        metrics=None if resets.meters or at_epoch_start else extra.get("metrics"),
        best=None if resets.optimizer or resets.meters or extra.get("best") is None else float(extra["best"]),
        previous_training_time=0.0 if resets.meters else float(extra.get("previous_training_time", 0.0)),
    )


@dataclass
class CheckpointManager:
    """Decides when and under which names to save, writes atomically, prunes, and tracks the best score.

    The fields after `save_dir` are named like the flags they come from. All names of one save
    are hard links to (or atomic copies of) one serialized file; saves only ever replace
    directory entries and never write into an existing file, so the names stay independent.
    """
    save_dir: Path
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
    best_checkpoint_metric: str = "loss"
    maximize_best_checkpoint_metric: bool = False
    patience: int = -1
    best: float | None = field(default=None, init=False)
    # False on ranks > 0: they keep the schedule and the best score, rank 0 writes.
    writes_files: bool = field(default=True, init=False)
    faults: FaultInjector = field(default=NO_FAULTS, init=False, repr=False)
    _patience_best: float | None = field(default=None, init=False, repr=False)
    _validations_without_improvement: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        self.save_dir = Path(self.save_dir)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> CheckpointManager:
        names = [item.name for item in fields(cls) if item.init and item.name != "save_dir"]
        return cls(Path(args.save_dir), **{name: getattr(args, name) for name in names})

    def load_state(self, extra_state: dict) -> None:
        """Continue the best score of a restored run (pass {} when its meters were reset)."""
        self.best = None if extra_state.get("best") is None else float(extra_state["best"])

    def check_writable(self) -> None:
        """Fail at start-up, not hours later at the first save, when --save-dir cannot be written."""
        if self.no_save or not self.writes_files:
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
        if self.no_save or not self.writes_files:
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
            yield

    def is_better(self, a: float, b: float | None, *, strict: bool = False) -> bool:
        """Whether score `a` is at least as good as `b` (ties overwrite checkpoint_best.pt, as in fairseq)
        or, with `strict`, better. A NaN is never better, so it cannot freeze the best score."""
        if not math.isfinite(a):
            return False
        if b is None:
            return True
        if self.maximize_best_checkpoint_metric:
            return a > b if strict else a >= b
        return a < b if strict else a <= b

    def is_save_time(self, epoch: int, num_updates: int, end_of_epoch: bool, *,
                     stopping: bool = False) -> bool:
        """fairseq's schedule: every --save-interval epochs, every --save-interval-updates, at a stop."""
        if self.no_save:
            return False
        at_epoch = end_of_epoch and epoch % self.save_interval == 0
        interval = self.save_interval_updates
        return at_epoch or (interval > 0 and num_updates > 0 and num_updates % interval == 0) or stopping

    def should_stop_early(self, val_metric: float | None) -> bool:
        """True after --patience consecutive validations without strict improvement (in-process only)."""
        if self.patience <= 0 or val_metric is None:
            return False
        if self.is_better(val_metric, self._patience_best, strict=True):
            self._patience_best = val_metric
            self._validations_without_improvement = 0
            return False
        self._validations_without_improvement += 1
        if self._validations_without_improvement < self.patience:
            return False
        logger.info("early stop: valid %s has not improved for %d validations (--patience %d)",
                    self.best_checkpoint_metric, self._validations_without_improvement, self.patience)
        return True

    def save(self, state: dict, *, epoch: int, num_updates: int, end_of_epoch: bool,
             val_metric: float | None) -> list[Path]:
        """Write `state` under every name this moment calls for; returns the paths written."""
        val = None if val_metric is None else float(val_metric)
        if val is not None and not math.isfinite(val):
            logger.warning("valid %s is %s: it cannot become the best", self.best_checkpoint_metric, val)
        is_best = val is not None and self.is_better(val, self.best)
        if is_best:
            self.best = val
        if self.no_save or not self.writes_files:
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
                    epoch, num_updates, self.best_checkpoint_metric, val, self.best)
        self._prune()
        return paths

    def _paths(self, epoch: int, num_updates: int, end_of_epoch: bool, val: float | None,
               is_best: bool) -> list[Path]:
        suffix, names = self.checkpoint_suffix, []
        if end_of_epoch and not self.no_epoch_checkpoints and epoch % self.save_interval == 0:
            names.append(f"checkpoint{epoch}{suffix}.pt")
        interval = self.save_interval_updates
        if not end_of_epoch and interval > 0 and num_updates % interval == 0:
            names.append(f"checkpoint_{epoch}_{num_updates}{suffix}.pt")
        if is_best:
            names.append(f"checkpoint_best{suffix}.pt")
        if self.keep_best_checkpoints > 0 and val is not None and math.isfinite(val):
            kept = self._best_files()  # best first, so the last one is the worst still on disk
            if len(kept) < self.keep_best_checkpoints or self.is_better(val, kept[-1][0]):
                names.append(f"checkpoint.best_{self.best_checkpoint_metric}_{val:.3f}{suffix}.pt")
        if not self.no_last_checkpoints:
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
        suffix, doomed = re.escape(self.checkpoint_suffix), []
        if self.keep_interval_updates > 0:
            pattern = self.keep_interval_updates_pattern
            found = self._matching(rf"checkpoint_\d+_(\d+){suffix}\.pt", reverse=True)
            doomed += [path for u, path in found if pattern <= 0 or u % pattern][self.keep_interval_updates:]
        if self.keep_last_epochs > 0:
            epochs = self._matching(rf"checkpoint(\d+){suffix}\.pt", reverse=True)
            doomed += [path for _, path in epochs][self.keep_last_epochs:]
        if self.keep_best_checkpoints > 0:
            doomed += [path for _, path in self._best_files()[self.keep_best_checkpoints:]]
        for path in doomed:
            path.unlink(missing_ok=True)
            logger.info("removed old checkpoint %s", path)

    def _best_files(self) -> list[tuple[float, Path]]:
        """This metric's checkpoint.best_* files, best score first."""
        metric, suffix = re.escape(self.best_checkpoint_metric), re.escape(self.checkpoint_suffix)
        regex = rf"checkpoint\.best_{metric}_(-?\d+\.\d+){suffix}\.pt"
        return self._matching(regex, reverse=self.maximize_best_checkpoint_metric)

    def _matching(self, regex: str, *, reverse: bool) -> list[tuple[float, Path]]:
        """(number in the name, path) of the files whose whole name matches `regex`, sorted by number."""
        compiled = re.compile(regex)
        found = [(float(match.group(1)), path) for path in self.save_dir.iterdir()
                 if (match := compiled.fullmatch(path.name)) and path.is_file()]
        return sorted(found, key=lambda item: item[0], reverse=reverse)
