"""Every command's flags, frozen in tests/snapshots/flags.json.

For roberta-train (each task with its criterion, each optimizer, each lr-scheduler),
roberta-validate (each task), roberta-preprocess, roberta-bpe (each subcommand), roberta-convert,
roberta-sweep and roberta-plot (each subcommand), each flag's names, dest, default, action, type,
choices and nargs, from the parsers the commands build. A refactoring must leave them all as they
are, so a difference is a bug unless the change was meant; then regenerate the file and commit it
with the change:

    ROBERTA_UPDATE_SNAPSHOT=1 python -m pytest tests/test_flag_snapshot.py
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
from pathlib import Path
from typing import Iterator

import pytest

from roberta.cli import bpe, convert, options, plot, preprocess, sweep
from roberta.cli.fairseq_flags import compat_kind
from roberta.flag_types import NumberFlag
from roberta.registry import LR_SCHEDULERS, OPTIMIZERS, TASKS, Registry

SNAPSHOT = Path(__file__).resolve().parent / "snapshots" / "flags.json"
UPDATE = "ROBERTA_UPDATE_SNAPSHOT"
REGENERATE = f"{UPDATE}=1 python -m pytest tests/test_flag_snapshot.py"
TRAIN = ["DATA", "--arch", "roberta_base"]  # roberta-train needs an --arch; no flag depends on which
VALIDATE = ["DATA"]
TOOLKIT = ("roberta", "tasks", "criterions")


def describe(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    parts = ["/".join(action.option_strings) or action.dest, f"dest={action.dest}",
             f"default={action.default!r}", f"action={_action_kind(parser, action)}"]
    if action.type is not None:
        parts.append(f"type={_type_name(action.type)}")
    if action.choices is not None:
        parts.append(f"choices={list(action.choices)}")
    if action.nargs is not None:
        parts.append(f"nargs={action.nargs!r}")
    if action.required:
        parts.append("required")
    return " ".join(parts)


def _action_kind(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    fairseq_kind = compat_kind(action)
    if fairseq_kind == "default-only":
        return f"fairseq-default-only{list(action.reason[0])}"
    if fairseq_kind is not None:
        return f"fairseq-{fairseq_kind}"
    names = {cls: name for name, cls in parser._registries["action"].items() if name is not None}
    return names.get(type(action), type(action).__name__)


def _type_name(parse: object) -> str:
    if isinstance(parse, NumberFlag):
        return f"{parse.kind.__name__}({parse.requirement})"
    return getattr(parse, "__name__", repr(parse))


def flag_lines(parser: argparse.ArgumentParser) -> list[str]:
    header = f"(parser) prog={parser.prog} allow_abbrev={parser.allow_abbrev}"
    return sorted([header, *(describe(parser, action) for action in parser._actions)])


def with_subcommands(name: str, parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, subparser in action.choices.items():
                yield from with_subcommands(f"{name} {command}", subparser)


def difference(base: list[str], variant: list[str]) -> list[str]:
    """What a component choice adds to and drops from the command's default flags: stored this way,
    a flag every choice shares appears once in the snapshot."""
    return sorted([f"drops {line}" for line in set(base) - set(variant)] +
                  [f"adds {line}" for line in set(variant) - set(base)])


def built_in(registry: Registry) -> list[str]:
    """The names this toolkit registers; a --user-dir plugin that another test loaded is not frozen."""
    return [name for name in registry.names() if registry.get(name).__module__.split(".")[0] in TOOLKIT]


def current_flags() -> dict[str, list[str]]:
    snapshot = {}
    for train, prog, base_argv in ((True, "roberta-train", TRAIN), (False, "roberta-validate", VALIDATE)):
        # The first parser imports the built-in tasks and criterions, so TASKS lists them after it.
        base = flag_lines(options.full_parser(base_argv, train=train))
        snapshot[prog] = base
        choices = [("--task", name) for name in built_in(TASKS)]
        if train:
            choices += [("--optimizer", name) for name in built_in(OPTIMIZERS)]
            choices += [("--lr-scheduler", name) for name in built_in(LR_SCHEDULERS)]
        for flag, name in choices:
            variant = flag_lines(options.full_parser([*base_argv, flag, name], train=train))
            snapshot[f"{prog} {flag} {name}"] = difference(base, variant)
    for module in (preprocess, bpe, convert, sweep, plot):
        root = module.build_parser()
        for name, parser in with_subcommands(root.prog, root):
            snapshot[name] = flag_lines(parser)
    return snapshot


def snapshot_diff(stored: dict[str, list[str]], current: dict[str, list[str]]) -> str:
    chunks = []
    for name in sorted(stored.keys() | current.keys()):
        before, after = stored.get(name), current.get(name)
        if before == after:
            continue
        if before is None or after is None:
            chunks.append(f"{name}: {'new command' if before is None else 'command gone'}")
        lines = difflib.unified_diff(before or [], after or [], f"{name} (snapshot)", f"{name} (now)",
                                     lineterm="", n=0)
        chunks.extend(line for line in lines if not line.startswith("@@"))
    return "\n".join(chunks)


def test_every_commands_flags_match_the_snapshot() -> None:
    current = current_flags()
    if os.environ.get(UPDATE) == "1":
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        return
    assert SNAPSHOT.is_file(), f"{SNAPSHOT} is missing; write it with: {REGENERATE}"
    stored = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    diff = snapshot_diff(stored, current)
    if diff:
        pytest.fail(f"the command-line flags differ from {SNAPSHOT} (- snapshot, + now; a variant's "
                    f"lines say what it adds to or drops from the command's default flags):\n{diff}\n"
                    f"A refactoring must not change flags. If this change is meant, regenerate with "
                    f"{REGENERATE} and commit the file with it.", pytrace=False)
