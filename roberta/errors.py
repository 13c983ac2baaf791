"""User-facing errors: one clear line, a non-zero exit, no traceback wall."""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator

from roberta.stop_signals import StoppedBySignal


class UserError(Exception):
    """A mistake the user can fix (bad flag, missing or malformed file).

    The message must name the flag, file or value at fault and say what to do.
    The CLIs print it as one line and exit with status 1.
    """

    # Printed after the one line when set: e.g. the traceback from a --user-dir plugin's own code,
    # which says what in the user's code failed.
    details: str = ""


@contextlib.contextmanager
def exit_on_user_error(prog: str) -> Iterator[None]:
    """A UserError becomes `prog: error: ...` and exit status 1; Ctrl-C exit status 130; a run
    stopped at a safe point by a signal (it said so itself) exits with 128 + the signal's number."""
    try:
        yield
    except StoppedBySignal as stop:
        sys.exit(stop.exit_code)
    except UserError as error:
        print(f"{prog}: error: {error}", file=sys.stderr, flush=True)
        if error.details:
            print(error.details, end="", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
