"""Atomic file writes: a crash never leaves a truncated file under the final name."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO, Iterator


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Write to `<path>.tmp` in the same directory, fsync, then rename over `path`.

    On any exception the temporary file is removed and `path` is left as it was.
    """
    final = Path(path)
    tmp = final.with_name(final.name + ".tmp")
    handle = open(tmp, mode, encoding=encoding if "b" not in mode else None)
    try:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        os.replace(tmp, final)
    except BaseException:
        handle.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(final.parent)


def _fsync_directory(directory: Path) -> None:
    # The rename itself is only durable once the directory entry is flushed.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
