"""`roberta-sweep SPEC.json --output-dir DIR [--gpus 0,1] [--dry-run]`: settings x seeds, resumable.

Each run (task, setting, seed) trains in DIR/<task>/<setting>/seed<seed>/ with `command + [data]
+ common + task args + setting flags + --seed S --save-dir RUN_DIR --log-format json --log-file
RUN_DIR/train.log`, its output in RUN_DIR/stderr.log. Its score, the best valid_<metric> of
train.log, goes to RUN_DIR/result.json; a rerun skips runs that have one, and interrupted runs go
on from their checkpoint_last.pt (roberta-train's default). DIR/results.md and results.csv are
rewritten after every finished run.

spec (JSON):
  {"command": ["roberta-train"],                 optional; default: [python, -m, roberta.cli.train]
   "common": ["--task", "sentence_prediction", ...],               flags of every run (optional)
   "tasks": {"RTE": {"data": "glue/RTE-bin", "args": ["--num-classes", "2"], "metric": "accuracy"}, ...},
   "grid": {"--lr": ["1e-5", "2e-5"], "--batch-size": ["16", "32"]},   every combination
   "seeds": [1, 2, 3],
   "metric": "accuracy", "maximize": true}           a task's metric and maximize override these
maximize defaults to true; loss, nll_loss and ppl need "maximize": false. Flag values are JSON
strings, passed as written; relative paths are taken from the current directory. A run that
starts over (no checkpoint_last.pt, or an explicit --restore-file) first moves the earlier
attempt's log to train.log.abandoned; use --finetune-from-model so fine-tuning runs resume.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from roberta.cli.common import run_cli
from roberta.dir_lock import exclusive_directory
from roberta.errors import UserError
from roberta.fileio import atomic_write
from roberta.flag_types import MAX_SEED
from roberta.logging import setup_logging
from roberta.sweep_results import NoScore, RunScore, TaskMetric, render_tables, result_record, run_scores

logger = logging.getLogger("roberta.sweep")

RUNNER_FLAGS = ("--seed", "--save-dir", "--log-file", "--log-format")
DEFAULT_COMMAND = (sys.executable, "-m", "roberta.cli.train")
RESULT_FILE = "result.json"
POLL_SECONDS = 0.2
_SPEC_KEYS = ("command", "common", "tasks", "grid", "seeds", "metric", "maximize")
_TASK_KEYS = ("data", "args", "metric", "maximize")
_LOWER_IS_BETTER = frozenset({"loss", "nll_loss", "ppl"})
# Matched with fullmatch: `$` would also let a name end in a newline.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_FLAG = re.compile(r"--[A-Za-z0-9][A-Za-z0-9_-]*")
_METRIC = re.compile(r"[A-Za-z0-9_]+")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._+-]+")
_MAX_SETTING_NAME = 200
_SHOWN_CHARS = 80  # of a bad value, in an error message
_UNPASSABLE = re.compile("[\0\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class TaskConfig:
    name: str
    data: str
    args: tuple[str, ...]
    metric: str
    maximize: bool


@dataclass(frozen=True, slots=True)
class Setting:
    """One point of the grid: its folder name (`lr_1e-5.batch-size_16`) and its flags."""

    name: str
    flags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SweepSpec:
    command: tuple[str, ...]
    common: tuple[str, ...]
    tasks: tuple[TaskConfig, ...]
    settings: tuple[Setting, ...]
    seeds: tuple[int, ...]


def load_spec(path: Path) -> SweepSpec:
    try:
        raw = json.loads(path.read_bytes().decode("utf-8-sig"))
    except OSError as error:
        raise UserError(f"{path}: cannot read the sweep spec ({error.strerror})") from error
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text (byte {error.start} is {error.object[error.start]:#04x}); "
                        f"save the spec as UTF-8") from error
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})") from error
    except (ValueError, RecursionError) as error:
        # Python's own limits: an integer of thousands of digits, lists nested thousands deep.
        raise UserError(f"{path}: not a sweep spec JSON can hold ({type(error).__name__}: "
                        f"{_shown(str(error))}); see roberta-sweep --help for the format") from error
    return parse_spec(raw, where=str(path))


def parse_spec(raw: Any, *, where: str) -> SweepSpec:
    """Check every key and value of a parsed spec; `where` names the file in error messages."""
    _check_keys(raw, _SPEC_KEYS, where)
    for key in ("tasks", "seeds"):
        if key not in raw:
            raise UserError(f'{where}: "{key}" is missing; see roberta-sweep --help for the spec format')
    command = _strings(raw.get("command", list(DEFAULT_COMMAND)), f'{where}: "command"')
    if not command or not command[0]:
        raise UserError(f'{where}: "command" is empty; give the training command, e.g. ["roberta-train"]')
    if shutil.which(command[0]) is None:
        raise UserError(f'{where}: "command" starts with {_shown(command[0])}, which is not an executable program '
                        f'(on PATH, or a path); install it or fix the name, e.g. ["roberta-train"]')
    common = _strings(raw.get("common", []), f'{where}: "common"')
    settings = _settings(raw.get("grid", {}), where)
    seeds = raw["seeds"]
    if (not isinstance(seeds, list) or not seeds
            or not all(type(seed) is int and 0 <= seed <= MAX_SEED for seed in seeds)):
        raise UserError(f'{where}: "seeds" must be a non-empty list of integers in [0, {MAX_SEED}], e.g. [1, 2, 3]; '
                        f'got {_shown(seeds)}')
    if len(set(seeds)) < len(seeds):
        raise UserError(f'{where}: "seeds" lists a seed twice: {seeds}')
    tasks = _tasks(raw["tasks"], raw, where)
    grid_flags = {flag for setting in settings for flag in setting.flags[::2]}
    _check_fixed_flags(common, grid_flags, f'{where}: "common"')
    for task in tasks:
        _check_fixed_flags(task.args, grid_flags, f'{where}: task "{task.name}" "args"')
    return SweepSpec(command=command, common=common, tasks=tasks, settings=settings, seeds=tuple(seeds))


def _check_keys(raw: Any, allowed: Sequence[str], label: str) -> None:
    if not isinstance(raw, dict):
        raise UserError(f"{label}: must be a JSON object with keys {', '.join(allowed)}")
    unknown = [key for key in raw if key not in allowed]
    if unknown:
        raise UserError(f'{label}: unknown key {_shown(unknown[0])}; the keys are {", ".join(allowed)}')


def _strings(value: Any, label: str) -> tuple[str, ...]:
    """Command-line words: strings a process can be given and a log can print."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise UserError(f'{label}: must be a list of strings (numbers too: "2"); got {_shown(value)}')
    for item in value:
        if _UNPASSABLE.search(item):
            raise UserError(f"{label}: {_shown(item)} cannot be passed on a command line (it holds a NUL "
                            f"character or a lone surrogate escape such as \\ud800); remove it")
    return tuple(value)


def _shown(value: Any) -> str:
    """A spec value for an error message: JSON on one line (ASCII, so nothing breaks the line), cut
    short if long."""
    try:
        text = json.dumps(value)
    except (ValueError, RecursionError):
        text = f"a {type(value).__name__} nested too deeply to show"
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def _printable(text: str) -> str:
    """`text` on one line: newlines and other unprintable characters escaped."""
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in text)


def _flags_in(args: Sequence[str]) -> set[str]:
    return {token.split("=", 1)[0] for token in args if token.startswith("--")}


def _check_fixed_flags(args: Sequence[str], grid_flags: set[str], label: str) -> None:
    """The runner's and the grid's flags must not be given again: argparse would keep the last silently."""
    flags = _flags_in(args)
    for flag in RUNNER_FLAGS:
        if flag in flags:
            raise UserError(f"{label}: sets {flag}, which roberta-sweep sets itself for every run; remove it")
    clashes = sorted(flags & grid_flags)
    if clashes:
        raise UserError(f"{label}: sets {clashes[0]}, which the grid varies; remove it from one of them")
    if "--disable-validation" in flags or not "".join(_flag_value(args, "--valid-subset", "valid").split(",")):
        raise UserError(f"{label}: --disable-validation or an empty --valid-subset leaves no score to compare")


def _settings(grid: Any, where: str) -> tuple[Setting, ...]:
    """Every combination of the grid's values, in the order written; one `default` for an empty grid."""
    if not isinstance(grid, dict):
        raise UserError(f'{where}: "grid" must be an object {{"--flag": ["value", ...]}}; got {_shown(grid)}')
    axes = []
    for flag, values in grid.items():
        label = f"{where}: grid {_shown(flag)}"
        if not _FLAG.fullmatch(flag):
            raise UserError(f'{label}: a grid key must be a flag such as "--lr"')
        if flag in RUNNER_FLAGS:
            where_instead = 'list the seeds in "seeds"' if flag == "--seed" else "remove it from the grid"
            raise UserError(f"{label}: roberta-sweep sets {flag} itself for every run; {where_instead}")
        if not isinstance(values, list) or not values:
            raise UserError(f'{label}: needs a non-empty list of values, e.g. ["1e-5", "2e-5"]; got {_shown(values)}')
        values = _strings(values, label)
        if not all(values) or len(set(values)) < len(values):
            raise UserError(f"{label}: values must be distinct and non-empty; got {_shown(list(values))}")
        axes.append([(flag, value) for value in values])
    settings: dict[str, Setting] = {}
    for combination in itertools.product(*axes):
        name = ".".join(f"{flag[2:]}_{_UNSAFE_CHARS.sub('_', value)}" for flag, value in combination) or "default"
        flags = tuple(token for pair in combination for token in pair)
        if name in settings:
            raise UserError(f"{where}: grid settings {_shown(settings[name].flags)} and {_shown(flags)} "
                            f"would share the folder {name}; make their values differ in letters or digits")
        if len(name) > _MAX_SETTING_NAME:
            raise UserError(f"{where}: the grid setting folder name {name[:60]}... is longer than "
                            f"{_MAX_SETTING_NAME} characters; use fewer or shorter grid flags")
        settings[name] = Setting(name=name, flags=flags)
    return tuple(settings.values())


def _tasks(raw_tasks: Any, spec: dict, where: str) -> tuple[TaskConfig, ...]:
    if not isinstance(raw_tasks, dict) or not raw_tasks:
        raise UserError(f'{where}: "tasks" must be a non-empty object {{"NAME": {{"data": DIR, ...}}}}')
    default_metric, default_maximize = _metric(spec, f"{where}: top level")
    tasks = []
    for name, raw in raw_tasks.items():
        label = f"{where}: task {_shown(name)}"
        if not _NAME.fullmatch(name):
            raise UserError(f"{label}: a task name is its folder name: letters, digits, '.', '_' and '-'")
        _check_keys(raw, _TASK_KEYS, label)
        data = raw.get("data")
        if not isinstance(data, str) or not data:
            raise UserError(f'{label}: "data" must be the path of its data-bin folder')
        _strings([data], f'{label} "data"')
        for folder in data.split(":"):
            if not Path(folder).is_dir():
                raise UserError(f"{label}: data folder {_printable(folder)} does not exist (relative paths are "
                                f"taken from the current directory, {Path.cwd()})")
        metric, maximize = _metric(raw, label)
        metric = metric or default_metric
        if metric is None:
            raise UserError(f'{label}: no "metric"; set it at the top level or in the task, e.g. "accuracy"')
        maximize = next((value for value in (maximize, default_maximize, True) if value is not None))
        if maximize and metric in _LOWER_IS_BETTER:
            raise UserError(f'{label}: metric "{metric}" is better when lower; say "maximize": false')
        tasks.append(TaskConfig(name=name, data=data, args=_strings(raw.get("args", []), f'{label} "args"'),
                                metric=metric, maximize=maximize))
    return tuple(tasks)


def _metric(raw: dict, label: str) -> tuple[str | None, bool | None]:
    metric, maximize = raw.get("metric"), raw.get("maximize")
    if metric is not None and (not isinstance(metric, str) or not _METRIC.fullmatch(metric)):
        raise UserError(f'{label}: "metric" must be a name such as "accuracy" (read as valid_accuracy); '
                        f'got {_shown(metric)}')
    if maximize is not None and not isinstance(maximize, bool):
        raise UserError(f'{label}: "maximize" must be true or false; got {_shown(maximize)}')
    return metric, maximize


@dataclass(frozen=True, slots=True)
class Run:
    """One training run; `train_args` (data, common, task and setting flags) identify it."""

    task: TaskConfig
    setting: Setting
    seed: int
    run_dir: Path
    train_args: tuple[str, ...]
    argv: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.task.name}/{self.setting.name}/seed{self.seed}"

    @property
    def subsets(self) -> list[str]:
        return [name for name in _flag_value(self.train_args, "--valid-subset", "valid").split(",") if name]


def _flag_value(args: Sequence[str], flag: str, default: str) -> str:
    """The value argparse would see for `flag` (the last one given wins)."""
    value = default
    for index, token in enumerate(args):
        if token == flag and index + 1 < len(args):
            value = args[index + 1]
        elif token.startswith(flag + "="):
            value = token[len(flag) + 1:]
    return value


def plan_runs(spec: SweepSpec, output_dir: Path) -> list[Run]:
    runs = []
    for task, setting, seed in itertools.product(spec.tasks, spec.settings, spec.seeds):
        run_dir = output_dir / task.name / setting.name / f"seed{seed}"
        train_args = (task.data, *spec.common, *task.args, *setting.flags)
        argv = (*spec.command, *train_args, "--seed", str(seed), "--save-dir", str(run_dir),
                "--log-format", "json", "--log-file", str(run_dir / "train.log"))
        runs.append(Run(task=task, setting=setting, seed=seed, run_dir=run_dir, train_args=train_args, argv=argv))
    return runs


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


@dataclass(slots=True)
class _Job:
    run: Run
    process: subprocess.Popen
    gpu: str | None
    started: float
    stderr_offset: int


def _start(run: Run, gpu: str | None, lock_fd: int) -> _Job:
    run.run_dir.mkdir(parents=True, exist_ok=True)
    _maybe_set_aside_log(run)
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    with open(run.run_dir / "stderr.log", "ab") as output:
        offset = output.tell()
        try:
            # The child inherits the output directory's lock, so a rerun waits for orphans of a killed sweep.
            process = subprocess.Popen(run.argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                       env=env, pass_fds=(lock_fd,))
        except OSError as error:
            reason = f"could not start {shlex.quote(run.argv[0])}: {error.strerror or error}"
            output.write(f"roberta-sweep: {reason}\n".encode())
            raise RunFailed(f"{reason}; see {run.run_dir / 'stderr.log'}") from error
    logger.info("started %s%s", run.name, f" on GPU {gpu}" if gpu is not None else "")
    return _Job(run=run, process=process, gpu=gpu, started=time.perf_counter(), stderr_offset=offset)


def _maybe_set_aside_log(run: Run) -> None:
    """roberta-train appends to --log-file; the scores of an attempt that a restart discards must not count."""
    log_path = run.run_dir / "train.log"
    suffix = _flag_value(run.train_args, "--checkpoint-suffix", "")
    resumes = (_flag_value(run.train_args, "--restore-file", "checkpoint_last.pt") == "checkpoint_last.pt"
               and (run.run_dir / f"checkpoint_last{suffix}.pt").is_file())
    if log_path.is_file() and not resumes:
        os.replace(log_path, run.run_dir / "train.log.abandoned")
        logger.info("%s starts from its beginning again: earlier log moved to train.log.abandoned", run.name)


def _stderr_tail(job: _Job, num_lines: int = 15) -> str:
    with open(job.run.run_dir / "stderr.log", "rb") as handle:
        handle.seek(job.stderr_offset)
        lines = handle.read().decode("utf-8", errors="replace").splitlines()
    return "\n".join("    " + line for line in lines[-num_lines:])


def _stop(jobs: Sequence[_Job]) -> None:
    for job in jobs:
        if job.process.poll() is None:
            job.process.terminate()
    for job in jobs:
        try:
            job.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            job.process.kill()
            job.process.wait()
    if jobs:
        logger.warning("stopped %d unfinished run(s): %s; run the same command again to continue them",
                       len(jobs), ", ".join(job.run.name for job in jobs))


class Sweep:
    """Runs the runs still to do, one per GPU slot, and keeps result.json files and tables current."""

    def __init__(self, spec: SweepSpec, runs: list[Run], output_dir: Path, *, finished: dict[str, dict]) -> None:
        self.spec = spec
        self.runs = runs
        self.output_dir = output_dir
        self.scores = {name: RunScore.from_result(result) for name, result in finished.items()}
        self.failed: list[str] = []

    def execute(self, todo: Sequence[Run], gpus: Sequence[str | None], lock_fd: int) -> None:
        pending, free, jobs = deque(todo), list(gpus), []
        # SIGTERM (a job scheduler, `kill`) stops the runs as Ctrl-C does.
        previous_handler = signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            while pending or jobs:
                while pending and free:
                    run, gpu = pending.popleft(), free.pop(0)
                    try:
                        jobs.append(_start(run, gpu, lock_fd))
                    except RunFailed as error:
                        free.append(gpu)
                        self._report_failure(run, 0.0, error)
                time.sleep(POLL_SECONDS)
                for job in [job for job in jobs if job.process.poll() is not None]:
                    jobs.remove(job)
                    free.append(job.gpu)
                    self._record(job)
        finally:
            _stop(jobs)
            signal.signal(signal.SIGTERM, previous_handler)

    def _record(self, job: _Job) -> None:
        wall_seconds = time.perf_counter() - job.started
        run = job.run
        try:
            if job.process.returncode != 0:
                raise RunFailed(f"exited with status {job.process.returncode}; the end of "
                                f"{run.run_dir / 'stderr.log'}:\n{_stderr_tail(job)}")
            result = write_result(run, score_run(run), wall_seconds=wall_seconds, gpu=job.gpu)
        except RunFailed as error:
            self._report_failure(run, wall_seconds, error)
            return
        self.scores[run.name] = RunScore.from_result(result)
        logger.info("[%d/%d] %s %s seed %d: %s %g (%.0f s)", len(self.scores) + len(self.failed), len(self.runs), run.task.name,
                    run.setting.name, run.seed, run.task.metric, result["score"], wall_seconds)
        self.write_tables()

    def _report_failure(self, run: Run, wall_seconds: float, error: RunFailed) -> None:
        self.failed.append(run.name)
        logger.error("[%d/%d] %s %s seed %d: FAILED (%.0f s): %s", len(self.scores) + len(self.failed), len(self.runs),
                     run.task.name, run.setting.name, run.seed, wall_seconds, error)

    def write_tables(self) -> str | None:
        """Rewrite results.md and results.csv from the runs finished so far and return the Markdown;
        None, and no files, before the first run has finished."""
        if not self.scores:
            return None
        tasks = [TaskMetric(task.name, task.metric, task.maximize) for task in self.spec.tasks]
        markdown, csv_text = render_tables(tasks, [setting.name for setting in self.spec.settings],
                                           seeds_planned=len(self.spec.seeds), runs=self.scores.values())
        for file_name, text in (("results.md", markdown), ("results.csv", csv_text)):
            with atomic_write(self.output_dir / file_name, "w", encoding="utf-8") as handle:
                handle.write(text)
        return markdown


def _parse_gpus(text: str | None) -> list[str | None]:
    gpus: list[str | None] = [None] if text is None else [part.strip() for part in text.split(",")]
    if text is not None and not all(gpus):
        raise UserError(f"--gpus {text}: expected comma-separated GPU ids such as 0,1,2,3")
    return gpus


def _locked(output_dir: Path) -> contextlib.AbstractContextManager[int]:
    """Hold DIR/.sweep.lock, so two sweeps never share an output directory; yields its descriptor,
    which the runs are started with, so a killed sweep's runs keep holding it until they end."""
    output_dir.mkdir(parents=True, exist_ok=True)
    return exclusive_directory(
        output_dir, ".sweep.lock", kept_by_children=True,
        in_use=lambda holder: f"--output-dir {output_dir}: another roberta-sweep, or a run it started, is still "
                              f"working there ({holder}); wait for it or stop its process group first")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roberta-sweep", allow_abbrev=False, description=__doc__.split("\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="the sweep spec, a JSON file (format above)")
    parser.add_argument("--output-dir", required=True, metavar="DIR",
                        help="DIR/<task>/<setting>/seed<seed>/ per run; DIR/results.md, results.csv, sweep.log")
    parser.add_argument("--gpus", metavar="IDS",
                        help="comma-separated GPU ids: up to that many runs at a time, each with "
                             "CUDA_VISIBLE_DEVICES set to its id (an id listed twice takes two runs); "
                             "default: one run at a time, environment unchanged")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the command lines of the runs still to do, and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    spec = load_spec(Path(args.spec))
    gpus = _parse_gpus(args.gpus)
    output_dir = Path(args.output_dir)
    runs = plan_runs(spec, output_dir)
    if args.dry_run:
        todo = [run for run in runs if load_result(run) is None]
        print(f"# {len(runs) - len(todo)} of {len(runs)} runs already finished; {len(todo)} to run")
        for run in todo:
            print(shlex.join(run.argv))
        return
    with _locked(output_dir) as lock_fd:
        setup_logging(str(output_dir / "sweep.log"))
        finished = {run.name: result for run in runs if (result := load_result(run)) is not None}
        todo = [run for run in runs if run.name not in finished]
        logger.info("%d of %d runs already finished, running the other %d", len(finished), len(runs), len(todo))
        sweep = Sweep(spec, runs, output_dir, finished=finished)
        sweep.write_tables()
        sweep.execute(todo, gpus, lock_fd)
    tables = sweep.write_tables()
    if tables is not None:
        print(tables, end="", flush=True)
        logger.info("tables in %s and %s", output_dir / "results.md", output_dir / "results.csv")
    if sweep.failed:
        shown = ", ".join(sweep.failed[:10]) + (", ..." if len(sweep.failed) > 10 else "")
        raise UserError(f"{len(sweep.failed)} of {len(runs)} runs failed ({shown}); their stderr.log says "
                        f"why, and running the same command again retries them")


def cli_main() -> None:
    run_cli(main, "roberta-sweep")


if __name__ == "__main__":
    cli_main()
