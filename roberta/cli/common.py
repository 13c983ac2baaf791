"""What every command line shares: error reporting and loading the task/criterion plug-ins."""
from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import traceback
from pathlib import Path
from typing import Callable, Sequence

from roberta.errors import UserError, exit_on_user_error

logger = logging.getLogger(__name__)


class UserCodeError(UserError):
    """The code of --user-dir raised: the one line names the flag; the user's own traceback, which
    says what in their code failed, follows it."""

    def __init__(self, message: str, user_traceback: str) -> None:
        super().__init__(message)
        self.details = user_traceback


def run_cli(main: Callable[[Sequence[str] | None], None], prog: str,
            argv: Sequence[str] | None = None) -> None:
    """Run `main`, turning a UserError into one line on stderr and exit status 1."""
    with exit_on_user_error(prog):
        main(argv)


def import_user_modules(user_dir: str | None = None) -> None:
    """Fill the registries: the built-in `tasks`/`criterions` packages, then `--user-dir`.

    `roberta` itself never imports these at import time, so a foreign package called
    `tasks` is caught here with a clear message instead of shadowing ours silently.
    """
    for package in ("tasks", "criterions"):
        module = importlib.import_module(package)
        if not getattr(module, "ROBERTA_PLUGIN_PACKAGE", False):
            raise UserError(f"the installed package '{package}' ({module.__file__}) is not this "
                            f"toolkit's; reinstall with `pip install -e .` or fix PYTHONPATH")
    if user_dir:
        _import_user_dir(Path(user_dir))


def _import_user_dir(path: Path) -> None:
    if not (path / "__init__.py").is_file():
        raise UserError(f"--user-dir {path}: not a Python package (no __init__.py)")
    module_name = path.resolve().name
    if module_name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(module_name, path / "__init__.py",
                                                  submodule_search_locations=[str(path)])
    assert spec is not None and spec.loader is not None  # a .py file always gets a source loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        # A half-imported package must not count as loaded by a later call in this process.
        del sys.modules[module_name]
        raise UserCodeError(f"--user-dir {path}: importing it raised {type(error).__name__}; the traceback "
                            f"from its code follows", _user_traceback(error, path)) from error
    logger.info("loaded user modules from %s", path)


def _user_traceback(error: Exception, path: Path) -> str:
    """The traceback of `error` from the first frame in the user's files on (none for a SyntaxError,
    whose own lines show the file and the line): the frames of importlib before it say nothing."""
    user_files = path.resolve()
    tb = error.__traceback__
    while tb is not None and not Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(user_files):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(error), error, tb))
