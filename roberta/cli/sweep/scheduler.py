"""Running a sweep's runs: one roberta-train process per GPU slot, started with its GPU and the
output folder's lock, recorded as it ends, and all stopped together on Ctrl-C or SIGTERM."""
from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from roberta.cli.sweep.plan import Run, starts_over
from roberta.cli.sweep.result_files import RunFailed, score_run, write_result, write_tables
from roberta.cli.sweep.spec import SweepSpec
from roberta.sweep_results import RunScore

logger = logging.getLogger("roberta.sweep")

POLL_SECONDS = 0.2


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
    if log_path.is_file() and starts_over(run):
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
        pending, free = deque(todo), list(gpus)
        jobs: list[_Job] = []
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
        logger.info("[%d/%d] %s %s seed %d: %s %g (%.0f s)", len(self.scores) + len(self.failed), len(self.runs),
                    run.task.name, run.setting.name, run.seed, run.task.metric, result["score"], wall_seconds)
        self.write_tables()

    def _report_failure(self, run: Run, wall_seconds: float, error: RunFailed) -> None:
        self.failed.append(run.name)
        logger.error("[%d/%d] %s %s seed %d: FAILED (%.0f s): %s", len(self.scores) + len(self.failed), len(self.runs),
                     run.task.name, run.setting.name, run.seed, wall_seconds, error)

    def write_tables(self) -> str | None:
        """Rewrite results.md and results.csv (see `write_tables`) and return the Markdown, or None."""
        return write_tables(self.output_dir, self.spec, self.scores.values())
