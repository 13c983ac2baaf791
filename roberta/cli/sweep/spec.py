"""The sweep spec file: its schema, every check of its keys and values (each failure one line that
names the field), and the settings grid it expands to. Nothing here touches the output folder."""
from __future__ import annotations

import itertools
import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from roberta.errors import UserError
from roberta.flag_types import MAX_SEED

# Set by the runner for every run (plan.py), so a spec must not give them.
RUNNER_FLAGS = ("--seed", "--save-dir", "--log-file", "--log-format")
DEFAULT_COMMAND = (sys.executable, "-m", "roberta.cli.train")
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
    if "--disable-validation" in flags or not "".join(flag_value(args, "--valid-subset", "valid").split(",")):
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


def flag_value(args: Sequence[str], flag: str, default: str) -> str:
    """The value argparse would see for `flag` (the last one given wins)."""
    value = default
    for index, token in enumerate(args):
        if token == flag and index + 1 < len(args):
            value = args[index + 1]
        elif token.startswith(flag + "="):
            value = token[len(flag) + 1:]
    return value
