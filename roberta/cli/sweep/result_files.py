"""A sweep's files of results: each run's result.json (its score, read from its train.log) and the
tables over all finished runs, results.md and results.csv (rendered by roberta.sweep_results)."""
from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Collection

from roberta.cli.sweep.plan import Run
from roberta.cli.sweep.spec import SweepSpec
from roberta.errors import UserError
from roberta.fileio import atomic_write
from roberta.sweep_results import NoScore, RunScore, TaskMetric, render_tables, result_record, run_scores

RESULT_FILE = "result.json"


class RunFailed(Exception):
    """A run that exited with an error or left no score; the sweep goes on with the others."""


def score_run(run: Run) -> dict[str, float]:
    """Best value of the task's metric on every validation subset of the run's train.log."""
    log_path = run.run_dir / "train.log"
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        lines = []
    try:
        return run_scores(lines, subsets=run.subsets, metric=run.task.metric, maximize=run.task.maximize)
    except NoScore as error:
        raise RunFailed(f"{log_path}: {error}") from None


def write_result(run: Run, subset_scores: dict[str, float], *, wall_seconds: float, gpu: str | None) -> dict:
    result = result_record(task=run.task.name, setting=run.setting.name, seed=run.seed, metric=run.task.metric,
                           maximize=run.task.maximize, subsets=run.subsets, subset_scores=subset_scores,
                           command=run.argv, train_args=run.train_args, wall_seconds=wall_seconds, gpu=gpu)
    with atomic_write(run.run_dir / RESULT_FILE, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(result, indent=2) + "\n")
    return result


def load_result(run: Run) -> dict | None:
    """A finished run's result.json (None if none), re-scored from train.log if the spec's metric changed."""
    path = run.run_dir / RESULT_FILE
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
        stored_args = result["train_args"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise UserError(f"{path}: unreadable ({error}); delete it to run {run.name} again") from error
    if stored_args != list(run.train_args):
        raise UserError(f"{path}: finished with other arguments ({shlex.join(stored_args)}) than the spec "
                        f"gives now; use another --output-dir, or delete {run.run_dir} to run it again")
    if (result.get("metric"), result.get("maximize"), result.get("subset")) != \
            (run.task.metric, run.task.maximize, run.subsets[0]):
        try:
            result = {**result, "subset": run.subsets[0], "subset_scores": score_run(run)}
        except RunFailed as error:
            raise UserError(f"{path}: scored by {result.get('metric')}, and re-scoring failed: {error}") from error
    return result


def write_tables(output_dir: Path, spec: SweepSpec, scores: Collection[RunScore]) -> str | None:
    """Rewrite results.md and results.csv from the runs finished so far and return the Markdown;
    None, and no files, before the first run has finished."""
    if not scores:
        return None
    tasks = [TaskMetric(task.name, task.metric, task.maximize) for task in spec.tasks]
    markdown, csv_text = render_tables(tasks, [setting.name for setting in spec.settings],
                                       seeds_planned=len(spec.seeds), runs=scores)
    for file_name, text in (("results.md", markdown), ("results.csv", csv_text)):
        with atomic_write(output_dir / file_name, "w", encoding="utf-8") as handle:
            handle.write(text)
    return markdown
