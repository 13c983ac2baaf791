"""Crash-safe file writes: atomic renames and fsynced staging files."""
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
        # Closing flushes what is still buffered, which fails again on a full disk.
        with contextlib.suppress(OSError):
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


@contextlib.contextmanager
def synced_text_file(path: str | os.PathLike) -> Iterator[IO[str]]:
    """A UTF-8 text file with `\n` line ends, fsynced on close: for files of a staging folder that
    is renamed into place afterwards, so a crash cannot leave a complete-looking folder holding
    truncated files."""
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
