"""The layering the code relies on: flags stop at the command layer, the engine never imports it,
and criterions never import tasks. Checked on the source, so a new module cannot slip past."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLI = REPO / "roberta" / "cli"
BELOW_CLI = sorted(path for folder in ("roberta", "tasks", "criterions") for path in (REPO / folder).rglob("*.py")
                   if CLI not in path.parents)
# `args` or `flags` (the command layer's name for it) read as a namespace, not as a dict.
NAMESPACE_READ = re.compile(r"\b(?:args|flags)\.(?!(?:get|items|keys|values|update|pop)\b)[a-z_]\w*"
                            r"|getattr\((?:args|flags)\b|vars\((?:args|flags)\)")


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def namespace_parameters(path: Path) -> list[str]:
    """Parameters annotated as an argparse namespace."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for arg in [*node.args.args, *node.args.kwonlyargs]:
                if arg.annotation is not None and ast.unparse(arg.annotation).endswith("Namespace"):
                    found.append(f"{node.name}({arg.arg})")
    return found


def test_there_is_code_below_the_command_layer() -> None:
    assert len(BELOW_CLI) > 50 and REPO / "roberta" / "trainer.py" in BELOW_CLI


@pytest.mark.parametrize("path", BELOW_CLI, ids=lambda path: str(path.relative_to(REPO)))
def test_below_the_command_layer_nothing_reads_flags_or_imports_it(path: Path) -> None:
    source = path.read_text()
    assert not NAMESPACE_READ.findall(source), "reads the argparse namespace"
    assert not namespace_parameters(path), "takes the argparse namespace"
    assert not [name for name in imported_modules(path) if name == "roberta.cli" or name.startswith("roberta.cli.")]


@pytest.mark.parametrize("path", sorted((REPO / "criterions").glob("*.py")), ids=lambda path: path.name)
def test_criterions_never_import_tasks(path: Path) -> None:
    assert not [name for name in imported_modules(path) if name == "tasks" or name.startswith("tasks.")]


def test_the_checks_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import argparse\nfrom roberta.cli.common import run_cli\n"
                   "def f(args: argparse.Namespace) -> int:\n    return args.max_tokens\n")
    assert NAMESPACE_READ.findall(bad.read_text()) == ["args.max_tokens"]
    assert namespace_parameters(bad) == ["f(args)"]
    assert "roberta.cli.common" in imported_modules(bad)
