"""Real full disks and read-only folders for tests, not mocks: a command runs in its own mount
namespace (`unshare --mount`), where a folder is covered by a tiny tmpfs (the kernel answers
ENOSPC) or a read-only bind mount (EROFS, which binds even root). Where mount namespaces are not
available the tests that need them skip.
"""
from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from support.paths import REPO


def require_mount_namespace() -> None:
    """Skip the calling test where `unshare --mount` is not allowed (no root, no user namespaces)."""
    if shutil.which("unshare") is None:
        pytest.skip("needs `unshare --mount` to mount a tiny or read-only folder")
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("needs `unshare --mount` (root or user namespaces) to mount a tiny or read-only folder")


def run_in_namespace(setup: str, command: list[str], mounted: Path, copy_to: Path,
                     timeout: float = 240) -> subprocess.CompletedProcess:
    """Run `setup` (mounts over `mounted`) and `command` in a private mount namespace, then copy what
    `mounted` holds to `copy_to`, since the mounts vanish with the namespace."""
    script = (f"set -e; {setup}; set +e; {shlex.join(command)}; status=$?; "
              f"cp -a {shlex.quote(str(mounted))}/. {shlex.quote(str(copy_to))}/; exit $status")
    copy_to.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
