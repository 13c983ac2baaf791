"""A --user-dir whose code fails to import: first one line that says the failure came from
--user-dir, then the traceback of the user's own code (none of ours), exit status 1."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from roberta.cli import train
from roberta.cli.common import run_cli

# name -> (files of the package, the exception, the last line of the user's traceback)
PLUGINS = {
    "raises_at_import": ({"__init__.py": "from . import heads\n",
                          "heads.py": "def register():\n    raise RuntimeError('no head for you')\n\nregister()\n"},
                         "RuntimeError", "RuntimeError: no head for you"),
    "syntax_error": ({"__init__.py": "x = 1\ndef broken(:\n    pass\n"}, "SyntaxError", "SyntaxError: invalid syntax"),
    "missing_dependency": ({"__init__.py": "import a_dependency_nobody_installed\n"}, "ModuleNotFoundError",
                           "ModuleNotFoundError: No module named 'a_dependency_nobody_installed'"),
}


def write_plugin(root: Path, name: str, files: dict[str, str]) -> Path:
    package = root / f"plugin_{name}"  # one module name per test: the import machinery caches by name
    package.mkdir()
    for file_name, text in files.items():
        (package / file_name).write_text(text, encoding="utf-8")
    return package


@pytest.mark.parametrize("name", PLUGINS)
def test_user_code_failing_at_import_is_named_then_shown(name: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    files, error_name, last_line = PLUGINS[name]
    package = write_plugin(tmp_path, name, files)
    argv = [str(tmp_path), "--arch", "roberta_tiny", "--max-tokens", "64", "--cpu", "--user-dir", str(package)]
    for _attempt in range(2):  # a failed import is not left half-registered for the next one
        with pytest.raises(SystemExit) as exit_info:
            run_cli(train.main, "roberta-train", argv)
        assert exit_info.value.code == 1
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines[0] == (f"roberta-train: error: --user-dir {package}: importing it raised {error_name}; "
                            f"the traceback from its code follows")
        assert lines[-1] == last_line
        shown = "\n".join(lines[1:])
        assert str(package) in shown
        assert "roberta/" not in shown and "importlib" not in shown, shown
        assert package.name not in sys.modules


def test_the_traceback_points_at_the_line_that_raised(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    package = write_plugin(tmp_path, "deep", PLUGINS["raises_at_import"][0])
    with pytest.raises(SystemExit):
        run_cli(train.main, "roberta-train", [str(tmp_path), "--arch", "roberta_tiny", "--user-dir", str(package)])
    err = capsys.readouterr().err
    assert f'File "{package / "heads.py"}", line 2, in register' in err
    assert "raise RuntimeError('no head for you')" in err
