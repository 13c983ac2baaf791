"""The numbers `roberta-plot` draws, read from files: pure parsing, no matplotlib.

- A training log: `--log-format json` lines of roberta-train or fairseq-train (a `--log-file`, or
  the captured stderr), `<date> <time> | INFO | <tag> | {json}`. `train_inner` records give the
  training curves (loss, lr, ... at `num_updates`); a record tagged with a validation subset
  carries `<subset>_<metric>` keys and `<subset>_num_updates`. Values are text ("9.051").
- Watch results: SAVE_DIR/watch/results.jsonl of `roberta-validate --watch`, one object per
  checkpoint and subset, numbers as numbers.
- A sweep: the result.json of each finished run of `roberta-sweep`, DIR/<task>/<setting>/seed<S>/.

Every malformed input raises UserError naming the file and line.
"""
from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from roberta.errors import UserError
from roberta.sweep_results import summarize

# `| train_inner | {...}` anywhere in a line, so a capture with other prefixes still reads.
_RECORD_LINE = re.compile(r"\| (?P<tag>[^\s|]+) \| (?P<record>\{.*\})\s*$")
TRAIN_TAG = "train_inner"
EPOCH_TAG = "train"  # end-of-epoch averages: `train_num_updates` like a validation record, but not one
WATCH_RESULTS = Path("watch") / "results.jsonl"
RESULT_FILE = "result.json"
# Columns of a watch results row that are not metrics (roberta.cli.watch writes them).
_WATCH_BOOKKEEPING = frozenset({"checkpoint", "subset", "epoch", "update", "train_seconds", "validated_at",
                                "size", "mtime_ns"})
# Throughput and bookkeeping counters: not worth a panel unless asked for. ppl and nll_loss are
# functions of loss, so loss alone tells the same story.
_NOT_DRAWN_BY_DEFAULT = frozenset({"wps", "wpb", "bsz", "ups", "num_updates", "num_examples", "wall", "train_wall",
                                   "gb_free", "loss_scale", "clip", "gnorm", "ppl", "nll_loss", "epoch"})

Points = dict[int, float]  # update -> value


@dataclass
class RunCurves:
    """One run's curves: training fields (`loss`, `lr`, ...) and validation metrics per subset,
    each as points by update. A later point at the same update (a resumed run that redid
    updates, a checkpoint scored under two names) replaces the earlier one."""

    train: dict[str, Points] = field(default_factory=dict)
    valid: dict[str, dict[str, Points]] = field(default_factory=dict)

    def add_train(self, name: str, update: int, value: float) -> None:
        self.train.setdefault(name, {})[update] = value

    def add_valid(self, subset: str, metric: str, update: int, value: float) -> None:
        self.valid.setdefault(subset, {}).setdefault(metric, {})[update] = value

    def merge(self, other: RunCurves) -> None:
        """Add `other`'s points (the same run read from another file); `other` wins a shared update."""
        for name, points in other.train.items():
            self.train.setdefault(name, {}).update(points)
        for subset, metrics in other.valid.items():
            for metric, points in metrics.items():
                self.valid.setdefault(subset, {}).setdefault(metric, {}).update(points)

    def valid_metrics(self) -> list[str]:
        return list(dict.fromkeys(metric for metrics in self.valid.values() for metric in metrics))


def sorted_points(points: Points) -> tuple[list[int], list[float]]:
    """(updates, values) in update order."""
    updates = sorted(points)
    return updates, [points[update] for update in updates]


def default_valid_metrics(runs: Iterable[RunCurves]) -> list[str]:
    """The validation metrics drawn without --metric: all but throughput counters and loss's derivatives."""
    seen = dict.fromkeys(metric for run in runs for metric in run.valid_metrics())
    return [metric for metric in seen if metric not in _NOT_DRAWN_BY_DEFAULT and not metric.startswith("best_")]


def _number(value: Any) -> float | None:
    """A logged value as a float: a number, or the text of one ("9.051"); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:  # an integer beyond float range
            return None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _update(value: Any, where: str, key: str) -> int:
    number = _number(value)
    if number is None or not math.isfinite(number) or number < 0 or number != int(number):
        raise UserError(f"{where}: {key} is {str(value)[:40]!r}, not an update count; fix or remove the line")
    return int(number)


def _is_progress_tag(tag: str) -> bool:
    # Progress records are logged under their tag (train_inner, train, a subset name); other JSON-like
    # lines come from module loggers, whose names have dots (fairseq_cli.train prints its config).
    return "." not in tag


def parse_training_log(lines: Sequence[str], source: str) -> RunCurves:
    """The curves of a `--log-format json` training log (see `parse_log`); a log without training
    records raises UserError."""
    curves, seen_train = parse_log(lines, source)
    if not seen_train:
        raise UserError(f"no `| {TRAIN_TAG} |` JSON records in {source}: was the run started with "
                        f"--log-format json (and for at least --log-interval updates)?")
    return curves


def parse_log(lines: Sequence[str], source: str) -> tuple[RunCurves, bool]:
    """The curves of a `--log-format json` log of roberta-train, roberta-validate or fairseq, and
    whether it held training records. A line that a killed run cut off mid-write (it does not end
    in `}`) is no record; a progress line `| tag | {...}` that is not JSON raises UserError."""
    curves = RunCurves()
    seen_train = False
    for number, line in enumerate(lines, 1):
        match = _RECORD_LINE.search(line)
        if match is None or not _is_progress_tag(match["tag"]):
            continue
        where = f"{source}, line {number}"
        try:
            record = json.loads(match["record"])
        except (ValueError, RecursionError):
            raise UserError(f"{where}: a `| {match['tag']} |` record that is not valid JSON; "
                            f"fix or remove the line") from None
        tag = match["tag"]
        if tag == TRAIN_TAG:
            seen_train = True
            _add_train_record(curves, record, where)
        elif tag != EPOCH_TAG and f"{tag}_num_updates" in record:
            _add_valid_record(curves, tag, record, where)
    return curves, seen_train


def _add_train_record(curves: RunCurves, record: Mapping[str, Any], where: str) -> None:
    if "num_updates" not in record:
        raise UserError(f"{where}: a `| {TRAIN_TAG} |` record without num_updates; fix or remove the line")
    update = _update(record["num_updates"], where, "num_updates")
    for key, value in record.items():
        number = _number(value)
        if key not in ("num_updates", "epoch", "update") and number is not None:
            curves.add_train(key, update, number)


def _add_valid_record(curves: RunCurves, subset: str, record: Mapping[str, Any], where: str) -> None:
    prefix = f"{subset}_"
    update = _update(record[f"{prefix}num_updates"], where, f"{prefix}num_updates")
    for key, value in record.items():
        number = _number(value)
        if key.startswith(prefix) and key != f"{prefix}num_updates" and number is not None:
            curves.add_valid(subset, key.removeprefix(prefix), update, number)


def parse_watch_results(lines: Sequence[str], source: str) -> RunCurves:
    """The validation curves of a watch results.jsonl: every numeric metric per subset by update."""
    curves = RunCurves()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{source}, line {number}"
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            row = None
        if not isinstance(row, dict) or not isinstance(row.get("subset"), str) or "update" not in row:
            raise UserError(f"{where}: not a result row of roberta-validate --watch (a JSON object with "
                            f"subset and update); fix or remove the line")
        update = _update(row["update"], where, "update")
        for key, value in row.items():
            metric = _number(value)
            if key not in _WATCH_BOOKKEEPING and metric is not None:
                curves.add_valid(row["subset"], key, update, metric)
    if not curves.valid:
        raise UserError(f"{source}: no scored checkpoint yet; run roberta-validate DATA --watch SAVE_DIR first")
    return curves


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: a folder; give a log file, a results.jsonl or a save dir") from None
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror})") from None


def read_run(path: Path) -> RunCurves:
    """A training log, a watch results.jsonl, or a save dir holding watch/results.jsonl."""
    if path.is_dir():
        results = path / WATCH_RESULTS
        if not results.is_file():
            raise UserError(f"{path}: a folder without {WATCH_RESULTS} (written by roberta-validate DATA "
                            f"--watch {path}); give a training log (--log-file) or a save dir that was watched")
        return parse_watch_results(_read_lines(results), str(results))
    if path.suffix == ".jsonl":
        return parse_watch_results(_read_lines(path), str(path))
    return parse_training_log(_read_lines(path), str(path))


def default_run_names(paths: Sequence[Path]) -> list[str]:
    """Legend names: a log's file name without suffix, a save dir's name (also for its
    watch/results.jsonl), with as many folders above as it takes to tell runs apart (`run1`,
    `mlm/train`, `race/train`). Paths naming the same run (`a.log`, `a/`) get the same name."""
    stems = [_run_path(path) for path in paths]
    depths = [1] * len(stems)
    while True:
        names = ["/".join(stem.parts[-depth:]) for stem, depth in zip(stems, depths)]
        clashing = {index for index, name in enumerate(names)
                    if any(other == name and stems[at] != stems[index] for at, other in enumerate(names))}
        deeper = [index for index in clashing if depths[index] < len(stems[index].parts)]
        if not deeper:
            return names
        for index in deeper:
            depths[index] += 1


def _run_path(path: Path) -> Path:
    """The path that names a run: a save dir for its watch results, a log without its suffix."""
    path = path.resolve()
    if path.suffix == ".jsonl" and path.parent.name == WATCH_RESULTS.parent.name:
        return path.parent.parent
    return path if path.is_dir() else path.with_suffix("")


@dataclass(frozen=True, slots=True)
class SettingScores:
    """One task and setting of a sweep: each finished seed's score, their mean and the standard
    error of the mean (sample std, ddof=1, over sqrt(seeds); None with one seed)."""

    setting: str
    seeds: tuple[int, ...]
    scores: tuple[float, ...]
    mean: float
    standard_error: float | None


@dataclass(frozen=True, slots=True)
class TaskScores:
    task: str
    metric: str
    maximize: bool
    settings: tuple[SettingScores, ...]


def read_sweep(output_dir: Path) -> list[TaskScores]:
    """The finished runs of a roberta-sweep --output-dir, by task and setting, in the order of its
    results.csv (the spec's grid order); settings it does not list yet come after, sorted."""
    if not output_dir.is_dir():
        raise UserError(f"{output_dir}: no such folder; give a roberta-sweep --output-dir")
    results = [_read_result(path) for path in sorted(output_dir.glob(f"*/*/seed*/{RESULT_FILE}"))]
    if not results:
        raise UserError(f"{output_dir}: no finished run (<task>/<setting>/seed<S>/{RESULT_FILE}); give a "
                        f"roberta-sweep --output-dir once a run has finished")
    order = _table_order(output_dir / "results.csv")
    grouped: dict[str, dict[str, list[dict]]] = {}
    for result in results:
        grouped.setdefault(result["task"], {}).setdefault(result["setting"], []).append(result)
    tasks = []
    for task in sorted(grouped, key=lambda name: (order.get((name, ""), math.inf), name)):
        by_setting = grouped[task]
        names = sorted(by_setting, key=lambda name: (order.get((task, name), math.inf), name))
        first = by_setting[names[0]][0]
        tasks.append(TaskScores(task, first["metric"], first["maximize"],
                                tuple(_setting_scores(name, by_setting[name]) for name in names)))
    return tasks


def _read_result(path: Path) -> dict:
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
        ok = (isinstance(result, dict) and all(isinstance(result.get(key), str) for key in ("task", "setting", "metric"))
              and isinstance(result.get("seed"), int) and _number(result.get("score")) is not None)
    except (OSError, ValueError, RecursionError):
        ok = False
    if not ok:
        raise UserError(f"{path}: not a result.json of roberta-sweep (task, setting, seed, metric, score); "
                        f"delete it and run the sweep again to redo that run")
    return {**result, "score": _number(result["score"]), "maximize": result.get("maximize") is not False}


def _table_order(csv_path: Path) -> dict[tuple[str, str], int]:
    """(task, setting) -> row of results.csv, and (task, "") -> the task's first row; empty when
    there is no readable table (the figure then sorts by name)."""
    try:
        rows = list(csv.DictReader(csv_path.read_text(encoding="utf-8").splitlines()))
    except (OSError, csv.Error, UnicodeDecodeError):
        return {}
    order: dict[tuple[str, str], int] = {}
    for index, row in enumerate(rows):
        task, setting = row.get("task") or "", row.get("setting") or ""
        order.setdefault((task, setting), index)
        order.setdefault((task, ""), index)
    return order


def _setting_scores(setting: str, results: list[dict]) -> SettingScores:
    results = sorted(results, key=lambda result: result["seed"])
    scores = [result["score"] for result in results]
    stats = summarize(scores)
    error = None if stats.std is None else stats.std / math.sqrt(stats.count)
    return SettingScores(setting, tuple(result["seed"] for result in results), tuple(scores), stats.mean, error)
