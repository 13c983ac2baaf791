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
# This module is the command; the package's other modules each own one part of a sweep: spec.py
# (the spec file's schema and checks), plan.py (the runs, and whether a start resumes one),
# result_files.py (result.json and the tables' files), scheduler.py (the processes on the GPUs).
from __future__ import annotations

import argparse
import contextlib
import logging
import shlex
from pathlib import Path
from typing import Sequence

from roberta.cli.common import run_cli
from roberta.cli.sweep.plan import plan_runs
from roberta.cli.sweep.result_files import load_result
from roberta.cli.sweep.scheduler import Sweep
from roberta.cli.sweep.spec import load_spec
from roberta.dir_lock import exclusive_directory
from roberta.errors import UserError
from roberta.logging import setup_logging

logger = logging.getLogger("roberta.sweep")


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
