"""Restoring: which file a run starts from and, decided once from the flags and that file, what of
it each stateful object gets back (the trainer's part, the run's progress) and what is reset.

`plan_restore` is the only reader of --restore-file, --finetune-from-model and --reset-*.
"""
from __future__ import annotations

import argparse
import ast
import logging
from dataclasses import astuple, dataclass, field
from pathlib import Path

from roberta import fairseq_resume
from roberta.checkpoint.files import last_checkpoint, num_updates
from roberta.errors import UserError
from roberta.models.pretrained import Pretrained, load_pretrained

logger = logging.getLogger("roberta.checkpoint")

DEFAULT_RESTORE_FILE = "checkpoint_last.pt"
_RESET_FLAGS = ("reset_optimizer", "reset_lr_scheduler", "reset_dataloader", "reset_meters")


def add_restore_args(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Declare fairseq's restoring flags (same names, same defaults), --save-dir and --unsafe-load."""
    add = parser.add_argument
    add("--save-dir", default="checkpoints", metavar="DIR", help="directory to write checkpoints to")
    add("--restore-file", default=DEFAULT_RESTORE_FILE, metavar="FILE",
        help="checkpoint to resume from; the default means <save-dir>/checkpoint_last.pt if it exists, "
             "any other value is a path that must exist: ours, a fairseq model.pt or a Hugging Face folder")
    add("--finetune-from-model", default=None, metavar="FILE",
        help="start from this model with all --reset-* implied, unless <save-dir>/checkpoint_last.pt "
             "already exists (then that run is resumed)")
    add("--reset-optimizer", action="store_true",
        help="do not restore optimizer and LR scheduler state, update count, best score")
    add("--reset-lr-scheduler", action="store_true", help="do not restore the LR scheduler state")
    add("--reset-dataloader", action="store_true", help="do not restore the data position; start at epoch 1")
    add("--reset-meters", action="store_true", help="do not restore meters, the best score or the training time")
    add("--optimizer-overrides", default="{}", metavar="DICT",
        help="dict literal of optimizer param-group values to set after restoring, e.g. \"{'lr': 1e-5}\"")
    add("--unsafe-load", action="store_true",
        help="allow checkpoints that need arbitrary code to unpickle; only for trusted files")


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

    def merged_with(self, other: Resets) -> Resets:
        return Resets(*(mine or theirs for mine, theirs in zip(astuple(self), astuple(other))))


EVERYTHING = Resets(True, True, True, True)


@dataclass(frozen=True)
class RestoreSettings:
    """The restoring flags, checked together."""
    save_dir: Path = Path("checkpoints")
    checkpoint_suffix: str = ""
    restore_file: str = DEFAULT_RESTORE_FILE
    finetune_from_model: str | None = None
    reset_optimizer: bool = False
    reset_lr_scheduler: bool = False
    reset_dataloader: bool = False
    reset_meters: bool = False
    optimizer_overrides: str = "{}"
    unsafe_load: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "save_dir", Path(self.save_dir))

    def problems(self) -> list[str]:
        """Every combination that makes no sense, as one phrase each."""
        problems = []
        if self.finetune_from_model is not None:
            if self.restore_file != DEFAULT_RESTORE_FILE:
                problems.append(f"--finetune-from-model cannot be combined with --restore-file "
                                f"{self.restore_file}; pass only one of them")
            explicit = ", ".join("--" + flag.replace("_", "-") for flag in _RESET_FLAGS if getattr(self, flag))
            if explicit:
                problems.append(f"--finetune-from-model already implies every --reset-* flag; drop {explicit}")
        try:
            parse_optimizer_overrides(self.optimizer_overrides)
        except UserError as error:
            problems.append(str(error))
        return problems

    @property
    def resets(self) -> Resets:
        return Resets(self.reset_optimizer, self.reset_lr_scheduler, self.reset_dataloader, self.reset_meters)

    @property
    def last_checkpoint(self) -> Path:
        return last_checkpoint(self.save_dir, self.checkpoint_suffix)

    @property
    def resumes_own_run(self) -> bool:
        """Whether a start now would continue this --save-dir's own run (its checkpoint_last.pt)."""
        return self.restore_file == DEFAULT_RESTORE_FILE and self.last_checkpoint.is_file()


@dataclass(frozen=True)
class TrainerState:
    """The trainer's part: optimizer (with the loss scaler's state), schedule, update count."""
    optimizer: dict | None = None
    # A fairseq checkpoint's optimizer state by parameter name, mapped once the optimizer exists.
    fairseq_optimizer_by_name: dict | None = None
    optimizer_overrides: dict = field(default_factory=dict)
    lr_scheduler: dict | None = None
    num_updates: int = 0
    optimizer_history: list = field(default_factory=list)
    optimizer_reset: bool = False

    def check_names(self, optimizer_name: str, criterion_name: str) -> None:
        """A restored optimizer state must come from the same optimizer and criterion."""
        if self.optimizer_reset:
            return
        newest = self.optimizer_history[-1] if self.optimizer_history else {}
        for kind, ours in (("optimizer", optimizer_name), ("criterion", criterion_name)):
            theirs = newest.get(f"{kind}_name")
            if theirs is not None and theirs != ours:
                raise UserError(f"the checkpoint was trained with {kind} {theirs}, this run uses {ours} "
                                f"(did --fp16 or --{kind} change?); pass --reset-optimizer to start "
                                f"the optimizer afresh")


@dataclass(frozen=True)
class RunProgress:
    """The training loop's part: data position, meters, best score, time trained so far."""
    train_iterator: dict | None = None
    meters: dict | None = None
    best: float | None = None
    previous_training_time: float = 0.0


@dataclass(frozen=True)
class RestorePlan:
    """A run's starting checkpoint, split into what each stateful object restores."""
    path: Path
    pretrained: Pretrained
    trainer: TrainerState
    progress: RunProgress


def plan_restore(settings: RestoreSettings) -> RestorePlan | None:
    """Find and read the starting checkpoint (None: a fresh run), then decide what of it is restored.

    Unlike fairseq, an explicit --restore-file that does not exist is an error: silently training
    from random weights is the worst outcome of a typo (fairseq #999). --reset-optimizer also
    drops the scheduler, the update count and the best score: a fine-tuning run must not compare
    itself with its pretraining run's best (fairseq #1302). Ours and fairseq's (0.10-0.12, and
    2019 files that carry training state) continue as fairseq would; a Hugging Face folder has
    only weights.
    """
    path, implied = starting_file(settings)
    if path is None:
        return None
    pretrained = load_pretrained(path, unsafe=settings.unsafe_load)
    resets = settings.resets.merged_with(implied)
    state = pretrained.training_state
    if state is None:
        logger.info("%s is a %s model: starting from its weights with a fresh optimizer, LR schedule, update "
                    "count, data position and meters (as with --reset-optimizer --reset-dataloader "
                    "--reset-meters)", path, pretrained.source)
        state, resets = {}, EVERYTHING
    return RestorePlan(path, pretrained, *restored_parts(state, resets, settings.optimizer_overrides))


def starting_file(settings: RestoreSettings) -> tuple[Path | None, Resets]:
    """The checkpoint to start from (None: a fresh run) and the resets that choice implies."""
    last = settings.last_checkpoint
    if settings.restore_file != DEFAULT_RESTORE_FILE:  # RestoreSettings forbids --finetune-from-model here
        return _existing_file(Path(settings.restore_file), "--restore-file", settings.save_dir), Resets()
    if last.is_file():
        if settings.finetune_from_model is not None:
            logger.info("resuming %s; --finetune-from-model only starts fresh runs", last)
        return last, Resets()
    if settings.finetune_from_model is not None:
        path = _existing_file(Path(settings.finetune_from_model), "--finetune-from-model", settings.save_dir)
        logger.info("fine-tuning from %s (optimizer, LR scheduler, data position and meters reset)", path)
        return path, EVERYTHING
    logger.info("no checkpoint found at %s; starting from scratch", last)
    return None, Resets()


def _existing_file(path: Path, flag: str, save_dir: Path) -> Path:
    if path.is_file() or (path / "config.json").is_file():  # or a Hugging Face model folder
        return path
    in_save_dir, hint = save_dir / path, "pass an existing checkpoint file"
    if not path.is_absolute() and in_save_dir.is_file():
        hint = f"relative paths are taken from the current directory; did you mean {in_save_dir}?"
    raise UserError(f"{flag} {path}: {'not a file' if path.exists() else 'no such file'}; {hint}")


def restored_parts(state: dict, resets: Resets, optimizer_overrides: str = "{}") -> tuple[TrainerState, RunProgress]:
    """What of a loaded checkpoint's `state` the trainer and the training loop get back under `resets`."""
    return _trainer_state(state, resets, optimizer_overrides), _run_progress(state, resets)


def _trainer_state(state: dict, resets: Resets, overrides: str) -> TrainerState:
    history = list(state.get("optimizer_history") or [])
    if resets.optimizer:
        return TrainerState(optimizer_history=history, optimizer_reset=True)
    by_name = state.get(fairseq_resume.STATE_KEY) or None
    optimizer = None if by_name else state.get("last_optimizer_state")
    if optimizer is None and by_name is None and history:
        logger.warning("the checkpoint has no optimizer state (saved with --no-save-optimizer-state); "
                       "the optimizer starts afresh")
    newest = history[-1] if history else {}
    restored = optimizer is not None or by_name is not None
    return TrainerState(
        optimizer=optimizer, fairseq_optimizer_by_name=by_name,
        optimizer_overrides=parse_optimizer_overrides(overrides) if restored else {},
        lr_scheduler=None if resets.lr_scheduler else newest.get("lr_scheduler_state"),
        num_updates=num_updates(state), optimizer_history=history)


def _run_progress(state: dict, resets: Resets) -> RunProgress:
    extra = state.get("extra_state") or {}
    iterator = None if resets.dataloader else extra.get("train_iterator")
    # A checkpoint taken at an epoch boundary has nothing to add to the new epoch's meters.
    at_epoch_start = iterator is not None and iterator.get("iterations_in_epoch", 0) == 0
    meters_kept = not resets.meters
    best = extra.get("best")
    return RunProgress(
        train_iterator=iterator,
        meters=extra.get("metrics") if meters_kept and not at_epoch_start else None,
        best=None if resets.optimizer or not meters_kept or best is None else float(best),
        previous_training_time=float(extra.get("previous_training_time", 0.0)) if meters_kept else 0.0)
