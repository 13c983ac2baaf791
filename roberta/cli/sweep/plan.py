"""The runs of a sweep: one per task, setting and seed, each with its folder and command line, and
whether starting one now would resume its own earlier attempt."""
from __future__ import annotations

import argparse
import itertools
from dataclasses import dataclass
from pathlib import Path

from roberta.cli.settings import settings_from_flags
from roberta.cli.sweep.spec import Setting, SweepSpec, TaskConfig, flag_value


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
        return [name for name in flag_value(self.train_args, "--valid-subset", "valid").split(",") if name]


def plan_runs(spec: SweepSpec, output_dir: Path) -> list[Run]:
    runs = []
    for task, setting, seed in itertools.product(spec.tasks, spec.settings, spec.seeds):
        run_dir = output_dir / task.name / setting.name / f"seed{seed}"
        train_args = (task.data, *spec.common, *task.args, *setting.flags)
        argv = (*spec.command, *train_args, "--seed", str(seed), "--save-dir", str(run_dir),
                "--log-format", "json", "--log-file", str(run_dir / "train.log"))
        runs.append(Run(task=task, setting=setting, seed=seed, run_dir=run_dir, train_args=train_args, argv=argv))
    return runs


def starts_over(run: Run) -> bool:
    """Whether roberta-train, started on `run` now, begins afresh instead of going on from the run's
    own last checkpoint: read with the checkpoint code's own flags, so the two cannot disagree.

    Restoring flags that argparse refuses (`--restore-file` without a value) count as not starting
    over: roberta-train stops on them before it writes anything.
    """
    # Here, not at the top: the checkpoint code imports torch (seconds), which --help, --dry-run and
    # a bad spec should not wait for.
    from roberta.checkpoint.restore import RestoreSettings, add_restore_args

    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    add_restore_args(parser)
    parser.add_argument("--checkpoint-suffix", default="")
    try:
        flags, _ = parser.parse_known_args(run.train_args)
    except argparse.ArgumentError:
        return False
    return not settings_from_flags(RestoreSettings, flags, {"save_dir": run.run_dir}).resumes_own_run
