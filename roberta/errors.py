"""User-facing errors: one clear line, a non-zero exit, no traceback wall."""
from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (bad flag, missing or malformed file).

    The message must name the flag, file or value at fault and say what to do.
    The CLIs print it as one line and exit with status 1.
    """
