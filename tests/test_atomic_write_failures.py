"""Every failed atomic write leaves the target as it was and no temporary file behind.

A write can fail at any point: the data (a full disk, a file-size limit: EFBIG), the flush, the
fsync, the close (which flushes again and fails again), the rename, or Ctrl-C in between. The
writers of the project (checkpoints, dictionaries, BPE files, ...) all stage through
`roberta.fileio.atomic_write`, so it is tried directly, then through the writers, then under a
real RLIMIT_FSIZE.
"""
from __future__ import annotations

import builtins
import errno
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from roberta import fileio
from roberta.checkpoint.manager import CheckpointManager, SaveSettings
from roberta.data.bpe import train_byte_level_bpe
from roberta.data.dictionary import Dictionary
from roberta.errors import UserError
from roberta.fileio import atomic_write, temporary_path

REPO = Path(__file__).resolve().parent.parent
STAGES = ("write", "flush", "fsync", "close", "replace", "interrupt")


class FailingFile:
    """A real file whose `stage` fails as past a file-size limit (EFBIG); "close" fails at every call,
    as a buffered file's close does when the flush inside it fails; "interrupt" is Ctrl-C in a write."""

    def __init__(self, handle, stage: str) -> None:
        self._handle, self._stage = handle, stage

    def _fail(self, stage: str) -> None:
        if self._stage == stage == "interrupt":
            raise KeyboardInterrupt
        if self._stage == stage:
            raise OSError(errno.EFBIG, "File too large")

    def write(self, data):
        self._fail("write")
        self._fail("interrupt")
        return self._handle.write(data)

    def flush(self) -> None:
        self._fail("flush")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()
        self._fail("close")

    def __getattr__(self, name: str):
        return getattr(self._handle, name)


def failing_at(stage: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every atomic write fail at `stage`."""
    def fake_open(path, mode="r", encoding=None):
        return FailingFile(builtins.open(path, mode, encoding=encoding), stage)

    def fail(*args):
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(fileio, "open", fake_open, raising=False)
    if stage == "fsync":
        monkeypatch.setattr(fileio.os, "fsync", fail)
    if stage == "replace":
        monkeypatch.setattr(fileio.os, "replace", fail)


def leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.rglob("*.tmp*"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stage=st.sampled_from(STAGES), binary=st.booleans(), existing=st.booleans(),
       chunks=st.lists(st.text(min_size=0, max_size=2000), min_size=0, max_size=5))
def test_a_failed_write_leaves_the_target_and_no_temporary(stage, binary, existing, chunks):
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as monkeypatch:
        target = Path(folder) / "out.txt"
        if existing:
            target.write_bytes(b"old")
        failing_at(stage, monkeypatch)
        failures = (OSError, KeyboardInterrupt)
        try:
            with atomic_write(target, "wb" if binary else "w", encoding=None if binary else "utf-8") as handle:
                for chunk in chunks:
                    handle.write(chunk.encode() if binary else chunk)
        except failures:
            pass
        else:
            # Only a body that never writes gets past a failing write; every other stage always fails.
            assert stage in ("write", "interrupt") and not chunks
        monkeypatch.undo()
        assert leftovers(Path(folder)) == []
        if stage in ("write", "interrupt") and not chunks:
            assert target.read_bytes() == b""
        else:
            assert target.read_bytes() == b"old" if existing else not target.exists()


def test_an_exception_in_the_body_and_ctrl_c_while_closing_still_remove_the_temporary(tmp_path, monkeypatch):
    with pytest.raises(ValueError):
        with atomic_write(tmp_path / "a.txt", "w") as handle:
            handle.write("half")
            raise ValueError("a bug in the writer")

    class InterruptedClose(FailingFile):
        def close(self) -> None:
            self._handle.close()
            raise KeyboardInterrupt
    monkeypatch.setattr(fileio, "open", lambda path, mode, encoding=None: InterruptedClose(open(path, mode), ""),
                        raising=False)
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(tmp_path / "b.txt", "w") as handle:
            handle.write("whole")
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_temporary_names_carry_the_writer_pid(tmp_path):
    seen = []
    with atomic_write(tmp_path / "x.bin") as handle:
        seen = [path.name for path in tmp_path.iterdir()]
        handle.write(b"1")
    assert seen == [f"x.bin.tmp.{os.getpid()}"] == [temporary_path(tmp_path / "x.bin").name]
    assert [path.name for path in tmp_path.iterdir()] == ["x.bin"]


def save_dictionary(folder: Path) -> None:
    dictionary = Dictionary()
    dictionary.add_symbol("hello")
    dictionary.save(folder / "dict.txt")


def save_bpe(folder: Path) -> None:
    corpus = folder / "corpus.txt"
    corpus.write_text("low lower lowest\n" * 5, encoding="utf-8")
    train_byte_level_bpe([corpus], 270, folder / "bpe")


def save_checkpoint(folder: Path) -> None:
    CheckpointManager(SaveSettings(folder / "ckpt")).save({"model": {"w": torch.zeros(4)}}, epoch=1, num_updates=1,
                                            end_of_epoch=True, val_metric=1.0)


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("writer", [save_dictionary, save_bpe, save_checkpoint])
def test_every_writer_cleans_up_wherever_its_write_fails(writer, stage, tmp_path, monkeypatch):
    failing_at(stage, monkeypatch)
    with pytest.raises((OSError, UserError, RuntimeError, KeyboardInterrupt)):
        writer(tmp_path)
    monkeypatch.undo()
    assert leftovers(tmp_path) == []
    written = [path.name for path in tmp_path.rglob("*") if path.is_file() and path.name != "corpus.txt"]
    assert written == [], "a failed write published a file"


FSIZE_SCRIPT = r'''
import json, resource, signal, sys
from pathlib import Path
import torch
from roberta.checkpoint.manager import CheckpointManager, SaveSettings
from roberta.errors import UserError
from roberta.fileio import atomic_write

folder = Path(sys.argv[1])
(folder / "checkpoint_best.pt").write_bytes(b"old")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails with EFBIG instead of a kill
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
errors = {}
for mode in ("wb", "w"):
    try:
        with atomic_write(folder / f"plain_{mode}", mode) as handle:
            handle.write(b"x" * (3 << 20) if mode == "wb" else "x" * (3 << 20))
    except OSError as error:
        errors[mode] = error.errno
try:
    CheckpointManager(SaveSettings(folder)).save({"model": {"w": torch.zeros(1 << 20)}}, epoch=1, num_updates=1,
                                   end_of_epoch=True, val_metric=1.0)
except UserError as error:
    errors["checkpoint"] = str(error)
print(json.dumps(errors))
'''


@pytest.mark.reliability
def test_a_save_cut_by_a_file_size_limit_leaves_no_temporary(tmp_path):
    result = subprocess.run([sys.executable, "-c", FSIZE_SCRIPT, str(tmp_path)], cwd=REPO, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-3000:]
    errors = json.loads(result.stdout.splitlines()[-1])
    assert errors["wb"] == errors["w"] == errno.EFBIG
    assert errors["checkpoint"] == (f"could not write checkpoint to {tmp_path / 'checkpoint1.pt'}: File too large; "
                                    f"previous checkpoints are intact")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint_best.pt"]
    assert (tmp_path / "checkpoint_best.pt").read_bytes() == b"old"
