"""Scores of a sweep's runs, their result.json record, and the tables: pure functions, no files.

A run's score is read from the json validation lines of its `train.log`; the runs of one
task and setting (one per seed) become a row with mean, sample std, max and min; the best
setting of each task (by mean) and the average of those best means over tasks (with and
without WNLI, the GLUE task most papers leave out) make the summary.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Iterable, Mapping, Sequence

# `2026-11-23 03:06:17 | INFO | valid | {"epoch": 1, "valid_loss": "8.589", ...}`: the tag is the
# validation subset and every key of the object is prefixed with it (roberta.logging's json format).
_JSON_LINE = re.compile(r"^\S+ \S+ \| INFO \| (?P<tag>[^\s|]+) \| (?P<record>\{.*\})\s*$")
WNLI = "WNLI"
CSV_COLUMNS = ("task", "setting", "metric", "maximize", "seeds_finished", "seeds_planned",
               "mean", "std", "max", "min", "best", "other_subsets")


@dataclass(frozen=True, slots=True)
class LogScores:
    """Best value of the metric per validation subset, and every field the subsets reported."""

    best: dict[str, float]
    fields_seen: frozenset[str]


def best_validation_scores(lines: Iterable[str], *, subsets: Sequence[str], metric: str,
                           maximize: bool) -> LogScores:
    """The best `<subset>_<metric>` of each subset over all validation lines of a log.

    Lines cut short (a killed run) and NaN values are ignored; a subset without the metric
    is absent from `best`.
    """
    best: dict[str, float] = {}
    fields: set[str] = set()
    for line in lines:
        match = _JSON_LINE.match(line)
        if match is None or match["tag"] not in subsets:
            continue
        try:
            record = json.loads(match["record"])
        except json.JSONDecodeError:
            continue
        fields.update(record)
        subset = match["tag"]
        try:
            value = float(record[f"{subset}_{metric}"])
        except (KeyError, TypeError, ValueError):
            continue
        if math.isnan(value):
            continue
        previous = best.get(subset)
        if previous is None or (value > previous if maximize else value < previous):
            best[subset] = value
    return LogScores(best=best, fields_seen=frozenset(fields))


class NoScore(ValueError):
    """A log without the metric on the first validation subset."""


def run_scores(lines: Iterable[str], *, subsets: Sequence[str], metric: str, maximize: bool) -> dict[str, float]:
    """A run's best score per subset; NoScore (saying what the log does report) when the first
    subset, which ranks the run, lacks the metric."""
    scores = best_validation_scores(lines, subsets=subsets, metric=metric, maximize=maximize)
    if subsets[0] not in scores.best:
        reported = sorted(name for name in scores.fields_seen if name.startswith(f"{subsets[0]}_"))
        raise NoScore(f"no validation line reports {subsets[0]}_{metric} "
                      f"({'they report ' + ', '.join(reported) if reported else 'there is no validation line'})")
    return scores.best


@dataclass(frozen=True, slots=True)
class RunScore:
    """One finished run: the best value of its metric on each validation subset; `subset`
    (the first of --valid-subset) gives the run's score."""

    task: str
    setting: str
    seed: int
    subset: str
    subset_scores: Mapping[str, float]

    @property
    def score(self) -> float:
        return self.subset_scores[self.subset]

    @classmethod
    def from_result(cls, result: Mapping) -> RunScore:
        return cls(task=result["task"], setting=result["setting"], seed=result["seed"], subset=result["subset"],
                   subset_scores=result["subset_scores"])


def result_record(*, task: str, setting: str, seed: int, metric: str, maximize: bool, subsets: Sequence[str],
                  subset_scores: Mapping[str, float], command: Sequence[str], train_args: Sequence[str],
                  wall_seconds: float, gpu: str | None) -> dict:
    """The content of a run's result.json; `score` is the first subset's, which ranks the run."""
    return {"task": task, "setting": setting, "seed": seed, "metric": metric, "maximize": maximize,
            "subset": subsets[0], "score": subset_scores[subsets[0]], "subset_scores": dict(subset_scores),
            "command": list(command), "train_args": list(train_args), "wall_seconds": round(wall_seconds, 3),
            "gpu": gpu, "finished_at": datetime.now().isoformat(timespec="seconds")}


@dataclass(frozen=True, slots=True)
class TaskMetric:
    name: str
    metric: str
    maximize: bool


@dataclass(frozen=True, slots=True)
class Stats:
    """Over seeds; `std` is the sample standard deviation (ddof=1), None for a single seed."""

    count: int
    mean: float
    std: float | None
    max: float
    min: float


def summarize(scores: Sequence[float]) -> Stats:
    if not scores:
        raise ValueError("summarize needs at least one score")
    std = statistics.stdev(scores) if len(scores) > 1 else None
    return Stats(count=len(scores), mean=statistics.fmean(scores), std=std, max=max(scores), min=min(scores))


@dataclass(frozen=True, slots=True)
class Row:
    """One task and setting; `stats` is None while none of its seeds has finished."""

    task: TaskMetric
    setting: str
    seeds_planned: int
    stats: Stats | None
    other_subset_means: dict[str, float]
    is_best: bool = False


def build_rows(tasks: Sequence[TaskMetric], settings: Sequence[str], *, seeds_planned: int,
               runs: Iterable[RunScore]) -> list[Row]:
    """A row per task and setting in the given order, the best setting of each task marked."""
    grouped: dict[tuple[str, str], list[RunScore]] = {}
    for run in runs:
        grouped.setdefault((run.task, run.setting), []).append(run)
    rows = []
    for task in tasks:
        task_rows = [_row(task, setting, seeds_planned, grouped.get((task.name, setting), []))
                     for setting in settings]
        best = _best_row(task_rows)
        rows += [replace(row, is_best=row is best) for row in task_rows]
    return rows


def _row(task: TaskMetric, setting: str, seeds_planned: int, runs: list[RunScore]) -> Row:
    stats = summarize([run.score for run in runs]) if runs else None
    # Other subsets (MNLI's valid1, mismatched) are averaged only when every finished seed has them.
    others = sorted({name for run in runs for name in run.subset_scores} - {run.subset for run in runs})
    means = {name: statistics.fmean(run.subset_scores[name] for run in runs) for name in others
             if all(name in run.subset_scores for run in runs)}
    return Row(task, setting, seeds_planned, stats, means)


def _best_row(rows: Sequence[Row]) -> Row | None:
    """Best mean among rows with results; the first in grid order wins a tie."""
    best, best_mean = None, 0.0
    for row in rows:
        if row.stats is None:
            continue
        mean = row.stats.mean
        if best is None or (mean > best_mean if row.task.maximize else mean < best_mean):
            best, best_mean = row, mean
    return best


@dataclass(frozen=True, slots=True)
class Summary:
    """Best row per task; averages of their means (None while a task has no finished run)."""

    best: dict[str, Row]
    waiting_for: list[str]
    average: float | None
    has_wnli: bool
    average_without_wnli: float | None


def summarize_tasks(rows: Sequence[Row], task_names: Sequence[str]) -> Summary:
    best = {row.task.name: row for row in rows if row.is_best}
    waiting = [name for name in task_names if name not in best]
    without_wnli = [name for name in task_names if name.upper() != WNLI]
    return Summary(best=best, waiting_for=waiting, average=_average(best, task_names),
                   has_wnli=len(without_wnli) < len(task_names),
                   average_without_wnli=_average(best, without_wnli))


def _average(best: Mapping[str, Row], names: Sequence[str]) -> float | None:
    means = [stats.mean for name in names if name in best and (stats := best[name].stats) is not None]
    if not names or len(means) < len(names):
        return None
    return statistics.fmean(means)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def render_tables(tasks: Sequence[TaskMetric], settings: Sequence[str], *, seeds_planned: int,
                  runs: Iterable[RunScore]) -> tuple[str, str]:
    """results.md and results.csv of the runs finished so far."""
    rows = build_rows(tasks, settings, seeds_planned=seeds_planned, runs=runs)
    names = [task.name for task in tasks]
    return render_markdown(rows, names), render_csv(rows, names)


def render_markdown(rows: Sequence[Row], task_names: Sequence[str]) -> str:
    """results.md: the per-setting table, then the summary over tasks."""
    lines = ["# Sweep results", "",
             "Per task and setting, over the finished seeds: mean, sample standard deviation "
             "(ddof=1; `-` with fewer than two seeds), max and min of each run's best validation "
             "score. `**best**` marks each task's best setting by mean.", "",
             "| task | setting | metric | seeds | mean | std | max | min | best | other subsets (mean) |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- | --- |"]
    for row in rows:
        stats = row.stats
        values = (stats.mean, stats.std, stats.max, stats.min) if stats else (None,) * 4
        others = ", ".join(f"{name} {value:.3f}" for name, value in row.other_subset_means.items())
        lines.append(f"| {row.task.name} | {row.setting} | {_metric_label(row.task)} | "
                     f"{stats.count if stats else 0}/{row.seeds_planned} | "
                     f"{' | '.join(_number(value) for value in values)} | "
                     f"{'**best**' if row.is_best else ''} | {others} |")
    return "\n".join(lines + [""] + _summary_markdown(summarize_tasks(rows, task_names), task_names)) + "\n"


def _metric_label(task: TaskMetric) -> str:
    return f"{task.metric} ({'higher' if task.maximize else 'lower'} is better)"


def _summary_markdown(summary: Summary, task_names: Sequence[str]) -> list[str]:
    lines = ["## Summary", "", "| task | best setting | metric | seeds | mean |", "| --- | --- | --- | --- | ---: |"]
    for name in task_names:
        row = summary.best.get(name)
        if row is None or row.stats is None:  # a best row always has stats; this narrows the type
            lines.append(f"| {name} | (no finished run) | | | - |")
        else:
            lines.append(f"| {name} | {row.setting} | {row.task.metric} | {row.stats.count}/{row.seeds_planned} "
                         f"| {row.stats.mean:.3f} |")
    waiting = f" (waiting for {', '.join(summary.waiting_for)})" if summary.waiting_for else ""
    lines += ["", f"Average over tasks of the best settings' means: {_number(summary.average)}{waiting}"]
    if summary.has_wnli:
        lines.append(f"Average over tasks without WNLI: {_number(summary.average_without_wnli)}")
    else:
        lines.append("Average over tasks without WNLI: same as above (WNLI is not among the tasks)")
    return lines


def render_csv(rows: Sequence[Row], task_names: Sequence[str]) -> str:
    """results.csv: a row per task and setting (full precision; empty cells where there is no value),
    then `(average)` rows for the averages of the best settings' means."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        stats = row.stats
        values = (stats.mean, stats.std, stats.max, stats.min) if stats else (None,) * 4
        writer.writerow([row.task.name, row.setting, row.task.metric, str(row.task.maximize).lower(),
                         stats.count if stats else 0, row.seeds_planned, *(_cell(value) for value in values),
                         "best" if row.is_best else "",
                         ";".join(f"{name}={value!r}" for name, value in row.other_subset_means.items())])
    summary = summarize_tasks(rows, task_names)
    averages = [("(average)", summary.average)]
    if summary.has_wnli:
        averages.append(("(average without WNLI)", summary.average_without_wnli))
    for label, value in averages:
        writer.writerow([label, "(best setting per task)", "", "", "", "", _cell(value), "", "", "", "", ""])
    return out.getvalue()


def _cell(value: float | None) -> str:
    return "" if value is None else repr(value)
