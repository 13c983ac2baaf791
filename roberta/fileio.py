"""Crash-safe file writes: atomic renames and fsynced staging files."""
from __future__ import annotations

import contextlib
import errno
import os
import re
from pathlib import Path
from typing import IO, Iterator

from roberta.process_lifetime import process_is_alive

# Disk or directory failures the user can fix; any other error while writing is a bug (traceback kept).
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS,
                          errno.EIO, errno.ENOENT, errno.ENOTDIR, errno.EEXIST})
_TEMPORARY = re.compile(r".+\.tmp\.(\d+)")


def temporary_path(path: str | os.PathLike) -> Path:
    """Where this process stages `path` before renaming it into place: `<name>.tmp.<pid>`. The pid
    keeps two processes writing the same name apart, and tells a later run whether the writer of a
    temporary it finds is still alive."""
    final = Path(path)
    return final.with_name(f"{final.name}.tmp.{os.getpid()}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Write to `temporary_path(path)`, fsync, then rename over `path`.

    On any exception (a full disk, a file-size limit, Ctrl-C) the temporary file is removed and
    `path` is left as it was.
    """
    final = Path(path)
    tmp = temporary_path(final)
    handle = open(tmp, mode, encoding=encoding if "b" not in mode else None)
    try:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        os.replace(tmp, final)
    except BaseException:
        _discard(handle, tmp)
        raise
    _fsync_directory(final.parent)


def _discard(handle: IO, tmp: Path) -> None:
    """Close and remove a temporary file whose write failed, whatever closing it raises."""
    try:
        # Closing flushes what is still buffered, which fails again on a full disk or past a size limit.
        with contextlib.suppress(Exception):
            handle.close()
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def remove_orphaned_temporaries(directory: Path, pattern: str) -> list[Path]:
    """Remove the temporaries (`temporary_path` names) matching the glob `pattern` in `directory`
    whose writing process is gone; returns them. A temporary of a live process (another run, or a
    reused pid) is kept: removing it would break that process's rename."""
    removed = []
    for path in directory.glob(pattern):
        match = _TEMPORARY.fullmatch(path.name)
        if match and path.is_file() and not process_is_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


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


def failed_write_cause(error: BaseException | None) -> OSError | None:
    """The disk or directory failure behind `error`, if any. torch.save reports a failed write as a
    RuntimeError of its zip writer raised while handling the OSError, so the chain is searched."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in _DISK_ERRNOS:
            return error
        error = error.__cause__ or error.__context__
    return None
