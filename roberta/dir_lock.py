"""One run per directory: a lock file, `DIR/.<name>.lock`, held for the run and naming its holder.

Two runs writing one directory (two `roberta-train` on one --save-dir, two `roberta-preprocess`
on one --destdir, two sweeps) would silently replace each other's files, and a starting run
would remove the other's temporaries. The second run is refused at once instead, with a line
naming the holder's pid. The lock is advisory and non-blocking; the kernel drops it when the
holder dies, however it dies, so a killed run never leaves a directory locked.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
from pathlib import Path
from typing import Callable, Iterator

from roberta.errors import UserError

logger = logging.getLogger(__name__)

# What flock/lockf raise on file systems without locks (NFS without a lock daemon, Lustre mounted
# without -o flock, some FUSE file systems).
_NO_LOCKS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})
_HELD = frozenset({errno.EAGAIN, errno.EACCES})


@contextlib.contextmanager
def exclusive_directory(directory: Path, lock_name: str, in_use: Callable[[str], str], *,
                        kept_by_children: bool) -> Iterator[int]:
    """Hold `directory/lock_name` while inside; yields the lock file's descriptor.

    `in_use(holder)` is the one-line error when another process holds it; `holder` reads like
    "pid 1234". With `kept_by_children` (flock) the processes this one forks, or starts with the
    descriptor in `pass_fds`, hold the lock too until they end, so a killed parent's workers keep
    the directory; without it (a POSIX lock) only this process holds it, so a forked helper that
    outlives it (a data-loading worker) cannot keep the next run out. On a file system without
    locks a warning says that concurrent runs are not detected, and the block runs anyway.
    """
    path = directory / lock_name
    # A POSIX lock (lockf) is dropped when this process closes any descriptor of the file: nothing
    # but this function may open it while it is held.
    fd = _open_and_lock(path, in_use, fcntl.flock if kept_by_children else fcntl.lockf)
    try:
        _record_holder(fd)
        yield fd
    finally:
        try:
            # Removed while still held: a process that opened it meanwhile sees it replaced and retries.
            with contextlib.suppress(OSError):
                os.unlink(path)
        finally:
            os.close(fd)


def _open_and_lock(path: Path, in_use: Callable[[str], str], lock: Callable[[int, int], None]) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            lock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in _HELD:
                holder = _read_holder(fd)
                os.close(fd)
                raise UserError(in_use(holder)) from None
            if error.errno not in _NO_LOCKS:
                os.close(fd)
                raise
            logger.warning("cannot lock %s (%s): this file system has no file locks, so a second run "
                           "using %s at the same time is not detected; make sure only one does",
                           path, os.strerror(error.errno), path.parent)
            return fd
        if _still_named(fd, path):
            return fd
        os.close(fd)  # its holder removed it between our open and our lock: lock the new one


def _still_named(fd: int, path: Path) -> bool:
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _record_holder(fd: int) -> None:
    # Only for the message a second run prints; a full disk must not stop the run for it.
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)


def _read_holder(fd: int) -> str:
    """"pid N" (with the host when it is another machine sharing the file system)."""
    try:
        pid, host = os.pread(fd, 512, 0).decode("utf-8", "replace").split()
    except (OSError, ValueError):
        return "pid not recorded yet"
    return f"pid {pid}" if host == socket.gethostname() else f"pid {pid} on {host}"
