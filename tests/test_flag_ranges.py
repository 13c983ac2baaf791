"""Every number flag of roberta-train and roberta-validate, found by introspecting their real
parsers with each task, criterion and LR scheduler: NaN, +-inf and a meaningless negative value
stop the command with one line naming the flag before any data is read, and every default parses.

roberta-train runs in this process on an empty data folder, so a flag checked only once data (or
a dictionary) is read fails these tests with that file's error instead of the flag's, and one
checked once the run has started fails them with the lines the run logged first.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Iterator

import pytest

from roberta import logging as roberta_logging
from roberta.cli import options
from roberta.cli import train
from roberta.cli.common import exit_on_user_error, import_user_modules, run_cli
from roberta.flag_types import MAX_SEED, NumberFlag
from roberta.optim.adam import betas_flag
from roberta.optim.lr_scheduler.tri_stage import phase_ratio_flag
from roberta.optim.options import parse_lr, parse_lr_decay, parse_update_freq
from roberta.registry import CRITERIONS, LR_SCHEDULERS, TASKS

import_user_modules()

# Parsers of number flags declared as functions rather than roberta.flag_types, by value kind.
KNOWN_PARSERS: dict[Callable, str] = {float: "float", int: "int", parse_lr: "float", parse_lr_decay: "float",
                                      parse_update_freq: "int", roberta_logging._positive_int: "int"}
TUPLE_LENGTHS = {betas_flag: 2, phase_ratio_flag: 3}
# Flags whose negative values mean something; every other number flag refuses -7.
MEANINGFUL_NEGATIVE = {
    "--warmup-init-lr": "negative: start the warmup at --min-lr (cosine) or at 0 (inverse_sqrt)",
    "--lr-period-updates": "negative: --max-update minus the warmup",
    "--stop-min-lr": "fairseq's default -1: never stop on a small LR",
    "--null-score-diff-threshold": "a logit, often negative",
}


def component_choices(train_parser: bool) -> Iterator[list[str]]:
    """The argv that declares each task's, criterion's and LR scheduler's flags."""
    for task in TASKS.names():
        if train_parser:
            for scheduler in LR_SCHEDULERS.names():
                yield ["--task", task, "--lr-scheduler", scheduler]
        else:
            yield ["--task", task]
    for criterion in CRITERIONS.names():
        yield ["--criterion", criterion]


def fixed_args(data: Path, train_parser: bool) -> list[str]:
    if train_parser:
        return [str(data), "--arch", "roberta_tiny", "--max-tokens", "1024", "--num-workers", "0", "--cpu",
                "--save-dir", str(data / "ckpt")]
    return [str(data), "--path", str(data / "model.pt"), "--max-tokens", "1024", "--cpu"]


def number_kind(action: argparse.Action) -> str | None:
    """"int", "float" or "tuple" for a number flag; None for any other flag."""
    if action.type is None or action.type is str:
        return None
    if isinstance(action.type, NumberFlag):
        return action.type.kind.__name__
    if action.type in TUPLE_LENGTHS:
        return "tuple"
    return KNOWN_PARSERS.get(action.type, "unknown")


def number_flags(train_parser: bool) -> dict[str, tuple[argparse.Action, list[str]]]:
    """Flag -> (its action, component choices that declare it), over every component."""
    flags = {}
    for choices in component_choices(train_parser):
        parser = options.full_parser(["data", "--arch", "roberta_tiny", *choices], train=train_parser)
        for action in parser._actions:
            if action.option_strings and number_kind(action) is not None:
                flags.setdefault(action.option_strings[0], (action, choices))
    return flags


def bad_values(flag: str, action: argparse.Action) -> Iterator[object]:
    kind = number_kind(action)
    if kind == "tuple":
        rest = ", 0.5" * (TUPLE_LENGTHS[action.type] - 1)
        values = [f"({bad}{rest})" for bad in ("1e999", "-1e999", "-7")]
    else:
        values = ["nan", "inf", "-inf", "-7"] if kind == "float" else ["-7", "1.5"]
    for value in values:
        if value == "-7" and flag in MEANINGFUL_NEGATIVE:
            continue
        yield pytest.param(value, id=f"{flag}={value}")


TRAIN_FLAGS = number_flags(train_parser=True)
VALIDATE_FLAGS = number_flags(train_parser=False)
TRAIN_CASES = [pytest.param(flag, choices, *case.values, marks=case.marks, id=case.id)
               for flag, (action, choices) in TRAIN_FLAGS.items() for case in bad_values(flag, action)]
VALIDATE_CASES = [pytest.param(flag, choices, *case.values, marks=case.marks, id=case.id)
                  for flag, (action, choices) in VALIDATE_FLAGS.items() for case in bad_values(flag, action)]


@pytest.fixture(scope="module")
def empty_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """No dictionary, no split: reading anything there fails with a message about the file."""
    return tmp_path_factory.mktemp("empty-data")


def assert_one_line_naming(err: str, prog: str, flag: str) -> None:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    assert flag in lines[0], lines[0]


def test_every_number_flag_has_a_known_parser() -> None:
    unknown = [flag for flags in (TRAIN_FLAGS, VALIDATE_FLAGS) for flag, (action, _) in flags.items()
               if number_kind(action) == "unknown"]
    assert unknown == [], "declare these with a roberta.flag_types parser"
    # The introspection found the flags the issue names, from every kind of component.
    assert {"--lr", "--weight-decay", "--adam-eps", "--clip-norm", "--dropout", "--mask-prob", "--seed",
            "--leave-unmasked-prob", "--warmup-init-lr", "--end-learning-rate", "--power", "--total-num-update",
            "--stop-min-lr", "--min-loss-scale", "--fp16-init-scale", "--threshold-loss-scale", "--lr-decay",
            "--null-score-diff-threshold", "--adam-betas", "--phase-ratio", "--t-mult"} <= set(TRAIN_FLAGS)
    assert {"--seed", "--dropout", "--n-best-size", "--num-classes", "--max-tokens"} <= set(VALIDATE_FLAGS)


@pytest.mark.parametrize("flag, choices, value", TRAIN_CASES)
def test_a_bad_number_stops_roberta_train_before_any_data(flag: str, choices: list[str], value: str,
                                                          empty_data: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(train.main, "roberta-train", [*fixed_args(empty_data, True), *choices, f"{flag}={value}"])
    assert exit_info.value.code in (1, 2)  # a UserError, or argparse's own usage error
    # One line and nothing else: a run that had started would have logged its arguments first.
    assert_one_line_naming(capsys.readouterr().err, "roberta-train", flag)


@pytest.mark.parametrize("flag, choices, value", VALIDATE_CASES)
def test_a_bad_number_stops_roberta_validate_parsing(flag: str, choices: list[str], value: str,
                                                     empty_data: Path, capsys: pytest.CaptureFixture) -> None:
    # roberta-validate reads the checkpoint for its defaults first; these flags' parsing is the same.
    with pytest.raises(SystemExit) as exit_info, exit_on_user_error("roberta-validate"):
        options.parse_args([*fixed_args(empty_data, False), *choices, f"{flag}={value}"], train=False)
    assert exit_info.value.code in (1, 2)
    assert_one_line_naming(capsys.readouterr().err, "roberta-validate", flag)


@pytest.mark.parametrize("train_parser", [True, False], ids=["train", "validate"])
def test_every_default_parses(train_parser: bool, tmp_path: Path) -> None:
    for choices in component_choices(train_parser):
        options.parse_args([*fixed_args(tmp_path, train_parser), *choices], train=train_parser)


@pytest.mark.parametrize("value, accepted", [("0", True), (str(MAX_SEED), True), ("-1", False),
                                             (str(MAX_SEED + 1), False)])
def test_seed_takes_numpys_range(value: str, accepted: bool, tmp_path: Path,
                                 capsys: pytest.CaptureFixture) -> None:
    argv = [*fixed_args(tmp_path, True), "--seed", value]
    if accepted:
        assert options.parse_args(argv, train=True).seed == int(value)
        return
    with pytest.raises(SystemExit), exit_on_user_error("roberta-train"):
        options.parse_args(argv, train=True)
    assert_one_line_naming(capsys.readouterr().err, "roberta-train", f"--seed must be in [0, {MAX_SEED}]")
