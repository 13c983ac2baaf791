"""A write that fails (a full disk, an I/O error, a file-size limit, lost permissions) ends every
writer with one line, leaves no temporary behind and the previous output intact; a failing log
file is reported once and the run goes on.

Each test records the write operations of a successful run (opening a file for writing, write,
flush, close, mkdir), then fails them in turn, the first and the last of each kind on each file,
the way a disk fails: a failing write writes part of its data first.
tests/test_full_disk_writes.py does the same on a real full disk.
"""
from __future__ import annotations

import builtins
import errno
import io
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from roberta.cli import bpe, convert, preprocess
from roberta.cli.common import run_cli
from roberta.errors import UserError
from roberta.data.bpe import train_byte_level_bpe
from roberta.logging import setup_logging
from roberta.models import ModelConfig, RobertaModel
from roberta.models.hf_export import save_our_checkpoint

ERRNOS = (errno.ENOSPC, errno.EIO, errno.EFBIG, errno.EACCES)
REAL_OPEN = builtins.open
REAL_MKDIR = os.mkdir


class FaultyDisk:
    """Records the write operations made while installed and fails the `fail_at`-th (1-based; 0:
    none) with `error_number`; `failed` then names the operation and its file."""

    def __init__(self, fail_at: int = 0, error_number: int = errno.ENOSPC) -> None:
        self.fail_at, self.error_number = fail_at, error_number
        self.operations: list[tuple[str, str]] = []
        self.failed: tuple[str, str] | None = None

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(builtins, "open", self.open)
        monkeypatch.setattr(io, "open", self.open)
        monkeypatch.setattr(os, "mkdir", self.mkdir)

    def check(self, operation: str, name: Any) -> OSError | None:
        self.operations.append((operation, str(name)))
        if len(self.operations) != self.fail_at:
            return None
        self.failed = self.operations[-1]
        return OSError(self.error_number, os.strerror(self.error_number), name)

    def fault_points(self) -> list[int]:
        """The first and the last operation of each kind on each file (1-based)."""
        points: dict[tuple[str, str], list[int]] = {}
        for number, operation in enumerate(self.operations, start=1):
            points.setdefault(operation, []).append(number)
        return sorted({number for numbers in points.values() for number in (numbers[0], numbers[-1])})

    def open(self, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if not set(mode) & set("wax+"):
            return REAL_OPEN(file, mode, *args, **kwargs)
        error = self.check("open", file)
        if error:
            raise error
        return FaultyFile(REAL_OPEN(file, mode, *args, **kwargs), self, file)

    def mkdir(self, path: Any, *args: Any, **kwargs: Any) -> None:
        if os.path.lexists(path):  # refused before any space is needed
            REAL_MKDIR(path, *args, **kwargs)
        error = self.check("mkdir", path)
        if error:
            raise error
        REAL_MKDIR(path, *args, **kwargs)


class FaultyFile:
    """A file whose writes, flushes and closes go through a `FaultyDisk`."""

    def __init__(self, real: Any, disk: FaultyDisk, name: Any) -> None:
        self._real, self._disk, self._name = real, disk, name

    def write(self, data: Any) -> int:
        error = self._disk.check("write", self._name)
        if error:
            self._real.write(data[:len(data) // 2])
            raise error
        return self._real.write(data)

    def flush(self) -> None:
        error = self._disk.check("flush", self._name)
        if error:
            raise error
        self._real.flush()

    def close(self) -> None:
        self._real.close()
        error = self._disk.check("close", self._name)
        if error:
            raise error

    def __enter__(self) -> FaultyFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def tree(root: Path, skip: frozenset[str] = frozenset()) -> dict[str, bytes | None]:
    """Every path under `root` with its content (None for a folder)."""
    return {path.relative_to(root).as_posix(): path.read_bytes() if path.is_file() else None
            for path in sorted(root.rglob("*")) if path.name not in skip}


def run_faulty(monkeypatch: pytest.MonkeyPatch, disk: FaultyDisk, main: Callable, prog: str,
               argv: list[str]) -> int:
    """Run a CLI in-process with `disk` installed; its exit status."""
    with monkeypatch.context() as patch:
        disk.install(patch)
        try:
            run_cli(main, prog, argv)
        except SystemExit as exit_:
            return exit_.code
    return 0


def console_lines(capsys: pytest.CaptureFixture) -> list[str]:
    """stderr without the INFO lines; never a traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Logging error" not in err, err
    return [line for line in err.splitlines() if " | INFO | " not in line]


def replace_tree(source: Path, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)


# ------------------------------------------------------------------------------ roberta-preprocess

def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def preprocess_inputs(tmp_path: Path) -> dict[str, Path]:
    words = ["a", "b", "c", "d"]
    return {"dict": write_lines(tmp_path / "dict.txt", [f"{word} 1" for word in words]),
            "old": write_lines(tmp_path / "old.txt", ["a b", "c"]),
            "new": write_lines(tmp_path / "new.txt", ["d c b a", "a a", "b"])}


def preprocess_argv(inputs: dict[str, Path], text: str, destdir: Path) -> list[str]:
    return ["--only-source", "--srcdict", str(inputs["dict"]), "--trainpref", str(inputs[text]),
            "--validpref", str(inputs[text]), "--destdir", str(destdir), "--workers", "1"]


@pytest.mark.parametrize("error_number", ERRNOS, ids=errno.errorcode.get)
def test_preprocess_a_failed_write_publishes_nothing_and_says_so_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
        preprocess_inputs: dict[str, Path], error_number: int) -> None:
    setup_logging()
    previous, destdir, expected = tmp_path / "previous", tmp_path / "data-bin", tmp_path / "expected"
    preprocess.main(preprocess_argv(preprocess_inputs, "old", previous))
    replace_tree(previous, expected)
    counting = FaultyDisk()
    assert run_faulty(monkeypatch, counting, preprocess.main, "roberta-preprocess",
                      preprocess_argv(preprocess_inputs, "new", expected)) == 0
    log = frozenset({"preprocess.log"})
    before, after = tree(previous, log), tree(expected, log)
    assert before != after
    capsys.readouterr()
    strerror = os.strerror(error_number)
    for fail_at in counting.fault_points():
        replace_tree(previous, destdir)
        disk = FaultyDisk(fail_at, error_number)
        status = run_faulty(monkeypatch, disk, preprocess.main, "roberta-preprocess",
                            preprocess_argv(preprocess_inputs, "new", destdir))
        lines = console_lines(capsys)
        operation, name = disk.failed
        if status == 0 and operation == "open":
            # A folder that refuses new files while preprocess.log itself is writable: nothing to
            # check the free space with, so the run goes on.
            assert name.startswith(f"{destdir / 'preprocess.log'}.tmp.") and error_number == errno.EACCES
            assert lines == [] and tree(destdir, log) == after
        elif status == 0:
            # Only appending to preprocess.log may fail without failing the run.
            assert name == str(destdir / "preprocess.log"), disk.failed
            assert len(lines) == 1 and lines[0].endswith(
                f"{destdir / 'preprocess.log'}: write failed ({strerror}); logging to the console "
                f"only from now"), lines
            assert tree(destdir, log) == after
        else:
            assert status == 1, disk.failed
            assert len(lines) == 1 and lines[0].startswith("roberta-preprocess: error: "), (disk.failed, lines)
            assert str(destdir) in lines[0] and strerror in lines[0], lines
            assert tree(destdir, log) == before, disk.failed


# ---------------------------------------------------------------------------------- roberta-convert

@pytest.fixture
def model_checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=24, encoder_layers=1, encoder_embed_dim=8, encoder_ffn_embed_dim=16,
                         encoder_attention_heads=2, max_positions=16)
    return save_our_checkpoint(tmp_path / "input" / "model.pt", RobertaModel(config).state_dict(), config)


OUTPUTS = {"ours": "model.pt", "fairseq": "model.pt", "huggingface": "hf"}


@pytest.mark.parametrize("existing", [False, True], ids=["new output", "existing output"])
@pytest.mark.parametrize("target", list(OUTPUTS))
def test_convert_a_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture, model_checkpoint: Path,
                                                      target: str, existing: bool) -> None:
    setup_logging()
    pristine, out = tmp_path / "pristine", tmp_path / "out"
    pristine.mkdir()
    # A new output goes in folders that do not exist yet; an existing one is overwritten.
    relative = OUTPUTS[target] if existing else f"new/folders/{OUTPUTS[target]}"
    if existing:
        convert.main([str(model_checkpoint), str(pristine / relative), "--to", target])
        if target == "huggingface":
            (pristine / relative / "vocab.json").write_text("{}", encoding="utf-8")
    replace_tree(pristine, out)
    counting = FaultyDisk()
    argv = [str(model_checkpoint), str(out / relative), "--to", target]
    assert run_faulty(monkeypatch, counting, convert.main, "roberta-convert", argv) == 0
    before = tree(pristine)
    capsys.readouterr()
    for fail_at in counting.fault_points():
        error_number = ERRNOS[fail_at % len(ERRNOS)]
        replace_tree(pristine, out)
        disk = FaultyDisk(fail_at, error_number)
        assert run_faulty(monkeypatch, disk, convert.main, "roberta-convert", argv) == 1, disk.failed
        left = "the previous one is intact" if existing else "nothing was left behind"
        assert console_lines(capsys) == [
            f"roberta-convert: error: could not write {out / relative}: {os.strerror(error_number)}; "
            f"{left}; free some space or choose another OUTPUT"], disk.failed
        assert tree(out) == before, disk.failed


# ------------------------------------------------------------------------------ roberta-bpe encode

@pytest.mark.parametrize("error_number", ERRNOS, ids=errno.errorcode.get)
def test_bpe_encode_a_failed_write_replaces_no_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture, error_number: int) -> None:
    texts = [write_lines(tmp_path / f"input{k}.txt", [f"line {n} of file {k}" for n in range(3)]) for k in range(2)]
    train_byte_level_bpe(texts, 300, tmp_path / "bpe")
    out = tmp_path / "out"
    out.mkdir()
    outputs = [out / f"output{k}.bpe" for k in range(2)]
    for output in outputs:
        output.write_text("previous\n", encoding="utf-8")
    argv = ["encode", "--encoder-json", str(tmp_path / "bpe" / "encoder.json"), "--vocab-bpe",
            str(tmp_path / "bpe" / "vocab.bpe"), "--inputs", *map(str, texts), "--outputs", *map(str, outputs),
            "--workers", "1"]
    before = tree(out)
    counting = FaultyDisk()
    assert run_faulty(monkeypatch, counting, bpe.main, "roberta-bpe", argv) == 0
    assert tree(out) != before
    capsys.readouterr()
    for fail_at in counting.fault_points():
        for output in outputs:
            output.write_text("previous\n", encoding="utf-8")
        disk = FaultyDisk(fail_at, error_number)
        assert run_faulty(monkeypatch, disk, bpe.main, "roberta-bpe", argv) == 1, disk.failed
        assert console_lines(capsys) == [
            f"roberta-bpe: error: could not write --outputs {' '.join(map(str, outputs))}: "
            f"{os.strerror(error_number)}; none of them was replaced"], disk.failed
        assert tree(out) == before, disk.failed


# ----------------------------------------------------------------------------------------- --log-file

RECORDS = [f"record {number}" for number in range(5)]


def log_records() -> None:
    for record in RECORDS:
        logging.getLogger("roberta.test").info(record)


@pytest.mark.parametrize("error_number", ERRNOS, ids=errno.errorcode.get)
def test_log_file_a_failed_write_is_reported_once_and_the_run_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
        error_number: int) -> None:
    counting = FaultyDisk()
    with monkeypatch.context() as patch:
        counting.install(patch)
        setup_logging(str(tmp_path / "counting" / "train.log"))
        log_records()
    capsys.readouterr()
    strerror = os.strerror(error_number)
    for fail_at in counting.fault_points():
        log_file = tmp_path / f"run{fail_at}" / "train.log"
        disk = FaultyDisk(fail_at, error_number)
        with monkeypatch.context() as patch:
            disk.install(patch)
            try:
                setup_logging(str(log_file))
            except UserError as error:
                # Found at the start: the file cannot be written now.
                assert str(error) == (f"--log-file {log_file}: cannot write ({strerror}); pick a "
                                      f"writable path on a disk with free space"), disk.failed
                continue
            log_records()
        err = capsys.readouterr().err
        assert "Traceback" not in err and "Logging error" not in err, err
        warnings = [line for line in err.splitlines() if " | WARNING | " in line]
        if disk.failed[0] == "open":
            # A folder that refuses new files while the log file itself is writable: nothing to
            # check the free space with, so the run goes on.
            assert error_number == errno.EACCES and warnings == []
            continue
        assert len(warnings) == 1 and warnings[0].endswith(
            f"--log-file {log_file}: write failed ({strerror}); logging to the console only from now"), err
        assert [line.rsplit(" | ", 1)[1] for line in err.splitlines() if " | INFO | " in line] == RECORDS
        # What the file holds is the lines before the failure (the last one maybe cut short).
        complete = [line.rsplit(" | ", 1)[1] for line in log_file.read_text(encoding="utf-8").split("\n")[:-1]]
        assert complete == RECORDS[:len(complete)], disk.failed
