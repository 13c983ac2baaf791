"""Logging set-up, stat formatting, and progress output in fairseq's simple/json/tqdm formats.

Every line goes through the standard `logging` module, so `--log-file` captures progress too.
Progress records carry the tag as their logger name, which reproduces fairseq's lines:
`2024-01-01 12:00:00 | INFO | train_inner | epoch 001:    200 / 1374 loss=3.14, ppl=8.82`.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import numbers
import os
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, Iterable, Iterator, Mapping, TextIO, TypeVar

from tqdm import tqdm

from roberta.errors import UserError
from roberta.fileio import temporary_path

LOG_FORMATS = ("simple", "json", "tqdm", "none")
LINE_FORMAT = "%(asctime)s | %(levelname)s | %(name)s | %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"

logger = logging.getLogger(__name__)
_progress = logging.getLogger("roberta.progress")
_installed_handlers: list[logging.Handler] = []
_warned: set[tuple[str, str]] = set()
T = TypeVar("T")


class _StderrHandler(logging.StreamHandler):
    """Writes to the current `sys.stderr`, which may be replaced after setup (by a test harness,
    a notebook or a caller capturing output), instead of keeping a possibly closed stream."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


# `logger.warning(..., extra=EVERY_RANK)`: a warning about this rank alone (an OOM), which
# ranks > 0 print too; their other warnings would repeat rank 0's.
EVERY_RANK = {"every_rank": True}


def _own_news_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR or getattr(record, "every_rank", False)


def setup_logging(log_file: str | None = None, rank: int = 0, level: int = logging.INFO) -> None:
    """Send log records to stderr (and appended to `log_file`); ranks > 0 keep only errors and
    the warnings marked `EVERY_RANK`.

    Calling it again replaces the handlers it installed before, never anyone else's.
    """
    handlers: list[logging.Handler] = [_StderrHandler()]
    if log_file:
        try:
            handlers.append(open_log_file(log_file, f"--log-file {log_file}"))
        except OSError as error:
            raise UserError(f"--log-file {log_file}: cannot write ({error.strerror}); pick a "
                            f"writable path on a disk with free space") from None
    reset_logging()
    root = logging.getLogger()
    formatter = logging.Formatter(LINE_FORMAT, DATE_FORMAT)
    for handler in handlers:
        handler.setFormatter(formatter)
        if rank > 0:
            handler.addFilter(_own_news_only)
        root.addHandler(handler)
        _installed_handlers.append(handler)
    root.setLevel(level if rank == 0 else max(level, logging.WARNING))


def reset_logging() -> None:
    """Remove the handlers `setup_logging` installed (for a caller that ran a CLI in-process)."""
    root = logging.getLogger()
    while _installed_handlers:
        handler = _installed_handlers.pop()
        root.removeHandler(handler)
        handler.close()


class LogFileHandler(logging.FileHandler):
    """Appends records to a file. The first write that fails (a full disk, a lost mount) is
    reported once as a warning and the file is dropped: the run goes on, logging to the console,
    instead of printing a traceback for every later record."""

    def __init__(self, path: str | os.PathLike, label: str) -> None:
        super().__init__(path, mode="a", encoding="utf-8")
        self.label = label
        self.failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            super().handleError(record)  # a bad message or format: a bug worth its traceback
            return
        self._give_up(error)
        self.close()

    def close(self) -> None:
        # Closing flushes what is still buffered, which fails again after a failed write.
        try:
            super().close()
        except OSError as error:
            self._give_up(error)

    def _give_up(self, error: OSError) -> None:
        if not self.failed:
            self.failed = True
            logger.warning(f"{self.label}: write failed ({error.strerror or error}); logging to "
                           f"the console only from now", extra=EVERY_RANK)


def open_log_file(path: str | os.PathLike, label: str) -> LogFileHandler:
    """A `LogFileHandler` appending to `path` (its folder is created); `label` names it in the
    warning of a later failed write. Raises OSError when the file cannot be written now."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = LogFileHandler(path, label)
    try:
        _check_room_beside(path)
    except OSError:
        handler.close()
        raise
    return handler


def _check_room_beside(path: Path) -> None:
    # Opening for appending succeeds on a full disk; writing a byte beside the file does not.
    probe = temporary_path(path)
    try:
        handle = open(probe, "wb")
    except PermissionError:
        return  # the file is writable (it opened), its folder is not: there is nothing to test
    try:
        with handle:
            handle.write(b"\n")
            handle.flush()
            os.fsync(handle.fileno())
    finally:
        probe.unlink(missing_ok=True)


def warn_once(log: logging.Logger, message: str) -> None:
    """Log `message` as a warning the first time only (for warnings that could repeat every step)."""
    key = (log.name, message)
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


# Decimal places shown per stat; `best_<stat>` uses the stat's own entry.
STAT_DECIMALS: dict[str, int] = {
    "loss": 3, "nll_loss": 3, "ppl": 2, "accuracy": 1, "wps": 0, "ups": 2, "wpb": 1, "bsz": 1,
    "gnorm": 3, "clip": 1, "gb_free": 1, "train_wall": 0, "wall": 0, "f1": 2, "exact": 2,
}
DEFAULT_DECIMALS = 3
_GENERAL_FORMAT = frozenset({"lr", "loss_scale"})  # `{:g}`: 1e-05, 128
_INTEGER_STATS = frozenset({"num_updates", "epoch"})


def format_stat(key: str, value: Any) -> str:
    """Display text of one stat: rounded per STAT_DECIMALS, trailing zeros dropped."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    name = key.removeprefix("best_")
    if name in _GENERAL_FORMAT:
        return f"{value:g}"
    if not math.isfinite(value):
        return str(float(value))
    if name in _INTEGER_STATS:
        return str(round(value))
    text = f"{value:.{STAT_DECIMALS.get(name, DEFAULT_DECIMALS)}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def default_log_format() -> str:
    """fairseq's default: a tqdm bar on a terminal, plain lines otherwise (log files, pipes)."""
    return "tqdm" if sys.stderr.isatty() else "simple"


def resolve_log_format(log_format: str | None, *, no_progress_bar: bool = False) -> str:
    """The format to use from `--log-format` and `--no-progress-bar`."""
    if no_progress_bar and log_format in (None, "tqdm"):
        return "simple"
    if log_format is None:
        return default_log_format()
    if log_format == "tqdm" and not sys.stderr.isatty():
        logger.info("--log-format tqdm: stderr is not a terminal, printing simple lines instead")
        return "simple"
    return log_format


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_logging_args(parser: argparse.ArgumentParser) -> None:
    """Declare fairseq's logging flags."""
    group = parser.add_argument_group("logging")
    group.add_argument("--log-format", choices=LOG_FORMATS, default=None,
                       help="progress output: simple lines, one JSON object per line, a tqdm bar, "
                            "or none (default: tqdm on a terminal, else simple)")
    group.add_argument("--log-interval", type=_positive_int, default=100, metavar="N",
                       help="log training stats every N updates")
    group.add_argument("--log-file", metavar="FILE", help="also append every log line to FILE")
    group.add_argument("--no-progress-bar", action="store_true",
                       help="no tqdm bar: use --log-format simple unless json or none is given")
    group.add_argument("--tensorboard-logdir", metavar="DIR",
                       help="also write scalars for TensorBoard to DIR/<tag> (rank 0 only; "
                            "needs the tensorboard package)")


class ScalarWriter:
    """Where a run's scalars go besides the log: nowhere (TensorBoard off or missing, or a rank > 0)
    or, from `scalar_writer`, TensorBoard. One per run, shared by its epochs and validations, so
    each tag keeps one event file per run; the run closes it."""

    def add_scalars(self, tag: str, stats: Mapping[str, Any], step: int) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> ScalarWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


class TensorboardWriter(ScalarWriter):
    """One SummaryWriter per tag (train_inner, train, valid, ...), as fairseq lays them out.

    A run that resumes from a checkpoint older than the last update logged in `logdir` (the
    earlier run went on, then died) rewrites those updates. Each writer therefore starts with
    TensorBoard's restart marker at `first_step` (torch's `purge_step`): TensorBoard drops the
    earlier run's points from that update on, so every update is shown once.
    """

    def __init__(self, logdir: str, writer_cls: Any, *, first_step: int = 1) -> None:
        self._logdir = Path(logdir)
        self._writer_cls = writer_cls
        self._first_step = first_step
        self._writers: dict[str, Any] = {}

    def add_scalars(self, tag: str, stats: Mapping[str, Any], step: int) -> None:
        writer = self._writers.get(tag)
        if writer is None:
            writer = self._writers[tag] = self._writer_cls(str(self._logdir / tag), purge_step=self._first_step)
            # At the run's first update, so a later restart from an earlier update drops it with the rest.
            writer.add_text("sys.argv", " ".join(sys.argv), self._first_step)
        for key, value in stats.items():
            if key != "num_updates" and isinstance(value, numbers.Real) and not isinstance(value, bool):
                writer.add_scalar(key, value, step)
        writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


def scalar_writer(logdir: str | None, *, first_step: int = 1) -> ScalarWriter:
    """TensorBoard event files under `logdir` (`--tensorboard-logdir`), or a writer that drops
    everything when `logdir` is None or tensorboard is not installed. `first_step` is the first
    update the run can log: the update it starts from, plus one."""
    if not logdir:
        return ScalarWriter()
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        warn_once(logger, f"--tensorboard-logdir {logdir}: tensorboard is not installed, so no "
                          f"scalars are written; `pip install tensorboard` to enable it")
        return ScalarWriter()
    return TensorboardWriter(logdir, SummaryWriter, first_step=first_step)


class ProgressLogger:
    """Interval lines (`log`) and summaries (`print`) for one epoch or one validation pass.

    The position shown in interval lines is the number of updates done in this epoch; it
    follows iteration through `wrap` or is set with `update_position`. `log` always writes:
    the caller decides with `should_log(num_updates)`, and resets its meters when it logs.
    Stats logged or printed also go to `scalars` (the run's `scalar_writer`, which the caller closes).
    """

    def __init__(self, log_format: str, *, epoch: int | None = None, total: int = 0,
                 prefix: str = "", log_interval: int = 100,
                 scalars: ScalarWriter | None = None) -> None:
        if log_format not in LOG_FORMATS:
            raise ValueError(f"log_format must be one of {LOG_FORMATS}, got {log_format!r}")
        self.log_format = log_format
        self.epoch = epoch
        self.total = total
        self.log_interval = log_interval
        self.position = 0
        parts = ([f"epoch {epoch:03d}"] if epoch is not None else []) + ([prefix] if prefix else [])
        self.label = " | ".join(parts)
        self._scalars = scalars if scalars is not None else ScalarWriter()
        self._bar = (tqdm(total=total, desc=self.label, leave=False, file=sys.stderr,
                          dynamic_ncols=True) if log_format == "tqdm" else None)

    def should_log(self, step: int) -> bool:
        """Whether update `step` (num_updates) ends a --log-interval window."""
        return step > 0 and step % self.log_interval == 0

    def wrap(self, iterable: Iterable[T], offset: int = 0) -> Iterator[T]:
        """Yield from `iterable`, counting positions from `offset` (updates already done)."""
        for index, item in enumerate(iterable, start=offset):
            self.update_position(index + 1)
            yield item

    def update_position(self, position: int) -> None:
        self.position = position
        if self._bar is not None:
            self._bar.update(position - self._bar.n)

    def log(self, stats: Mapping[str, Any], tag: str, step: int) -> None:
        """Interval stats: a `key=value` line, a JSON object, or the tqdm postfix."""
        self._scalars.add_scalars(tag, stats, step)
        commas = ", ".join(f"{key}={format_stat(key, value)}" for key, value in stats.items())
        if self.log_format == "simple":
            _emit(tag, f"{self.label}:  {self.position:5d} / {self.total:d} {commas}")
        elif self.log_format == "json":
            head: dict[str, Any] = self._json_head()
            if self.epoch is not None and self.total > 0:
                head["update"] = round(self.epoch - 1 + self.position / self.total, 3)
            _emit(tag, json.dumps({**head, **_formatted(stats)}))
        elif self._bar is not None:
            self._bar.set_postfix_str(commas, refresh=True)

    def print(self, stats: Mapping[str, Any], tag: str, step: int) -> None:
        """End-of-epoch or validation summary: `key value | key value`, or JSON keyed `<tag>_<key>`."""
        self._scalars.add_scalars(tag, stats, step)
        if self.log_format in ("simple", "tqdm"):
            pipes = [f"{key} {format_stat(key, value)}" for key, value in stats.items()]
            _emit(tag, " | ".join(([self.label] if self.label else []) + pipes))
        elif self.log_format == "json":
            prefixed = {f"{tag}_{key}": text for key, text in _formatted(stats).items()}
            _emit(tag, json.dumps({**self._json_head(), **prefixed}))

    def _json_head(self) -> dict[str, Any]:
        return {"epoch": self.epoch} if self.epoch is not None else {}

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> ProgressLogger:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def _formatted(stats: Mapping[str, Any]) -> dict[str, str]:
    return {key: format_stat(key, value) for key, value in stats.items()}


def _emit(tag: str, message: str) -> None:
    # The record is named after the tag (fairseq prints `| train_inner |`), but it is
    # handled by roberta.progress, so levels and handlers configured for it still apply.
    if _progress.isEnabledFor(logging.INFO):
        _progress.handle(_progress.makeRecord(tag, logging.INFO, __file__, 0, message, (), None))
