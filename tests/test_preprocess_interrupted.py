"""roberta-preprocess stopped at any moment never leaves a split that loads but is wrong.

Real `python -m roberta.cli.preprocess` processes are SIGKILLed together with their pool workers:
at seeded-random moments, and the moment `dict.txt` changes, in a fresh folder and in one that
already holds a complete run made with another dictionary. After each kill, every split that loads
must be, byte for byte, the split an uninterrupted run writes with the dictionary `dict.txt` holds
then, and every other split must be absent (UserError on loading). The same command run again
must remove what the killed runs left and write the uninterrupted run's bytes.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from roberta.cli import preprocess
from roberta.data.dictionary import Dictionary, iter_lines
from roberta.data.indexed_dataset import MMapIndexedDataset, load_indexed_dataset
from roberta.errors import UserError

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
SPLITS = ("train", "valid", "test")
Outputs = dict[str, bytes]  # file name -> bytes, for every file of a data folder but preprocess.log


@dataclass(frozen=True)
class Corpus:
    folder: Path
    lines: dict[str, int]
    built: Outputs  # an uninterrupted run with the dictionary built from train.txt
    other: Outputs  # an uninterrupted run with --srcdict other_dict.txt
    seconds: float  # how long the uninterrupted run with the built dictionary took

    def args(self, destdir: Path, *, workers: int, other_dict: bool) -> list[str]:
        return command_args(self.folder, destdir, workers=workers, other_dict=other_dict)


def command_args(folder: Path, destdir: Path, *, workers: int, other_dict: bool) -> list[str]:
    args = ["--only-source", "--trainpref", str(folder / "train.txt"),
            "--validpref", str(folder / "valid.txt"), "--testpref", str(folder / "test.txt"),
            "--destdir", str(destdir), "--workers", str(workers)]
    return args + (["--srcdict", str(folder / "other_dict.txt")] if other_dict else [])


def make_corpus(root: Path, lines: dict[str, int], num_words: int, seed: int) -> Corpus:
    """Whitespace-separated words, few enough that train.txt has them all, and other_dict.txt:
    the words of the built dictionary in reverse order, so that every word has another id in it."""
    folder = root / "corpus"
    folder.mkdir()
    rng = random.Random(seed)
    words = [f"w{number}" for number in range(num_words)]
    for split, count in lines.items():
        rows = (" ".join(rng.choices(words, k=rng.randint(0, 30))) for _ in range(count))
        (folder / f"{split}.txt").write_text("".join(row + "\n" for row in rows), encoding="utf-8")
    (folder / "other_dict.txt").write_text("".join(f"{word} 1\n" for word in reversed(words)),
                                           encoding="utf-8")
    start = time.monotonic()
    preprocess.main(command_args(folder, root / "built", workers=1, other_dict=False))
    seconds = time.monotonic() - start
    preprocess.main(command_args(folder, root / "other", workers=1, other_dict=True))
    for destdir in (root / "built", root / "other"):
        check_decodes_to_text(destdir, folder)
    return Corpus(folder, lines, outputs(root / "built"), outputs(root / "other"), seconds)


def outputs(destdir: Path) -> Outputs:
    return {path.name: path.read_bytes() for path in sorted(destdir.iterdir())
            if path.name != "preprocess.log"}


def check_decodes_to_text(destdir: Path, text_folder: Path) -> None:
    """Decoding each split with the dict.txt beside it gives back the lines of its input."""
    dictionary = Dictionary.load(destdir / "dict.txt")
    assert dictionary.unk_word not in "".join(dictionary.symbols[dictionary.nspecial:])
    symbols = np.array(dictionary.symbols, dtype=object)
    for split in SPLITS:
        dataset = MMapIndexedDataset(destdir / split)
        ends = np.cumsum(dataset.sizes.astype(np.int64))
        tokens = np.fromfile(destdir / f"{split}.bin", dtype=dataset.dtype)
        lines = list(iter_lines(text_folder / f"{split}.txt"))
        assert len(dataset) == len(lines) and (tokens[ends - 1] == dictionary.eos()).all()
        for line, start, end in zip(lines, ends - dataset.sizes, ends):
            assert " ".join(symbols[tokens[start:end - 1]]) == " ".join(line.split())


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    # Big enough that binarizing takes about half a second (after ~1.5 s of imports) on one core.
    return make_corpus(tmp_path_factory.mktemp("large"),
                       {"train": 40_000, "valid": 5_000, "test": 5_000}, num_words=2000, seed=0)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return make_corpus(tmp_path_factory.mktemp("small"), {"train": 300, "valid": 40, "test": 30},
                       num_words=100, seed=1)


def assert_consistent(destdir: Path, corpus: Corpus, running: Outputs) -> None:
    """Each split present is the complete split of the dictionary in dict.txt (while dict.txt is
    absent: of the dictionary of the run that was stopped); each other split is absent."""
    dict_path = destdir / "dict.txt"
    expected = running
    if dict_path.exists():
        present = dict_path.read_bytes()
        assert present in (corpus.built["dict.txt"], corpus.other["dict.txt"]), "half-written"
        expected = corpus.built if present == corpus.built["dict.txt"] else corpus.other
    for split in SPLITS:
        if (destdir / f"{split}.idx").exists():
            assert len(load_indexed_dataset(destdir / split)) == corpus.lines[split]
            for name in (f"{split}.idx", f"{split}.bin"):
                assert (destdir / name).read_bytes() == expected[name], f"{name} mismatches"
        else:
            with pytest.raises(UserError, match=f"dataset {destdir / split} not found"):
                load_indexed_dataset(destdir / split)


# SIGKILLed processes ---------------------------------------------------------------------------

Moment = Callable[[], bool]


def run_until(args: list[str], moment: Moment, stderr_path: Path) -> bool:
    """Run roberta-preprocess and SIGKILL its process group once `moment` holds; False when the
    run finished first."""
    with open(stderr_path, "ab") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "roberta.cli.preprocess", *args],
                                   cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr,
                                   start_new_session=True)
    deadline = time.monotonic() + 60
    while process.poll() is None and not moment():
        assert time.monotonic() < deadline, "the awaited moment never came"
        time.sleep(0.002)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    wait_for_group_gone(process.pid)
    assert process.returncode in (0, -signal.SIGKILL), stderr_path.read_text()
    return process.returncode == -signal.SIGKILL


def wait_for_group_gone(pgid: int, timeout: float = 30) -> None:
    """Killed pool workers die asynchronously; the next run must not meet them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)
    raise AssertionError(f"process group {pgid} still alive")


def seconds_after_start(destdir: Path, seconds: float) -> Moment:
    """`seconds` after the run logged its first line (so after its imports)."""
    log = destdir / "preprocess.log"
    size = log.stat().st_size if log.exists() else 0
    started: list[float] = []

    def reached() -> bool:
        if not started and log.exists() and log.stat().st_size > size:
            started.append(time.monotonic())
        return bool(started) and time.monotonic() - started[0] >= seconds
    return reached


def binarized_bytes(destdir: Path, num_bytes: int) -> Moment:
    """Once the data written so far holds `num_bytes`: a moment surely inside the binarizing of
    train. It counts the files still being written (`*.bin.tmp`) and the worker shards, finished
    (`part<n>.bin`) or not, since a shard that a worker finished stops being a `.tmp`."""
    def reached() -> bool:
        total = 0
        for path in destdir.rglob("*.bin*"):
            if path.name.endswith(".bin.tmp") or path.name.startswith("part"):
                try:
                    total += path.stat().st_size
                except FileNotFoundError:  # renamed or removed meanwhile
                    pass
        return total >= num_bytes
    return reached


def dict_changed(destdir: Path) -> Moment:
    """Once dict.txt is no longer the one there was at the start."""
    path = destdir / "dict.txt"
    old = path.read_bytes() if path.exists() else None

    def reached() -> bool:
        try:
            return path.read_bytes() != old
        except FileNotFoundError:
            return old is not None
    return reached


@pytest.mark.parametrize("workers, redo, seed", [(1, False, 1), (2, False, 2), (1, True, 3),
                                                  (2, True, 4)])
def test_killed_runs_leave_only_complete_splits_and_the_rerun_finishes(
        large: Corpus, tmp_path: Path, workers: int, redo: bool, seed: int) -> None:
    destdir = tmp_path / "data-bin"
    destdir.mkdir()
    if redo:  # a finished run with the built dictionary is re-done with the other one
        for name, data in large.built.items():
            (destdir / name).write_bytes(data)
    args = large.args(destdir, workers=workers, other_dict=redo)
    expected = large.other if redo else large.built
    rng = random.Random(seed)
    if redo:
        moments = [lambda: dict_changed(destdir),
                   lambda: seconds_after_start(destdir, rng.uniform(0, 1.2) * large.seconds)]
    else:
        num_bytes = int(rng.uniform(0.05, 0.9) * len(expected["train.bin"]))
        moments = [lambda: binarized_bytes(destdir, num_bytes)]
    kills = 0
    for make_moment in moments:
        if not run_until(args, make_moment(), tmp_path / "stderr.txt"):
            break  # it finished: there is nothing left to interrupt
        kills += 1
        assert_consistent(destdir, large, running=expected)
    assert kills >= 1

    if not redo:  # killed while binarizing train: its staging folder, with a *.bin.tmp, is left
        assert list(destdir.glob(".staging-*/**/*.bin.tmp"))
    # Neither that nor the staging folder of a run killed before may disturb the rerun, which
    # removes them.
    (destdir / ".staging-earlier").mkdir()
    (destdir / ".staging-earlier" / "train.bin").write_bytes(b"stale")
    preprocess.main(args)
    assert outputs(destdir) == expected
    log = (destdir / "preprocess.log").read_text(encoding="utf-8")
    assert log.rstrip().endswith(f"Wrote preprocessed data to {destdir}")


# Dying at every step of the run --------------------------------------------------------------

class Died(BaseException):
    """The process is gone: nothing after this runs (not even cleanup, which a kill skips)."""


@pytest.mark.parametrize("redo", [False, True])
def test_dying_before_any_rename_or_unlink_leaves_only_complete_splits(
        small: Corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redo: bool) -> None:
    """Every change of a name in the folder is a rename or an unlink; a run dying just before the
    n-th of them, for every n, in a fresh folder or re-doing a finished run with another
    dictionary. The same command run again must then succeed."""
    real = {name: getattr(os, name) for name in ("replace", "rename", "unlink")}
    expected = small.other if redo else small.built
    step = 0
    while True:
        destdir = tmp_path / f"died{step}"
        destdir.mkdir()
        for name, data in small.built.items() if redo else ():
            (destdir / name).write_bytes(data)
        args = small.args(destdir, workers=1, other_dict=redo)
        calls = 0

        def dying(name: str) -> Callable[..., None]:
            def call(*call_args: object, **kwargs: object) -> None:
                nonlocal calls
                if Path(call_args[0]).name == preprocess.LOCK_FILE:  # not an output: the run's lock
                    return real[name](*call_args, **kwargs)
                calls += 1
                if calls > step:
                    raise Died()
                real[name](*call_args, **kwargs)
            return call

        for name in real:
            monkeypatch.setattr(os, name, dying(name))
        try:
            preprocess.main(args)
            finished = True
        except Died:
            finished = False
        finally:
            monkeypatch.undo()
        assert_consistent(destdir, small, running=expected)
        if not finished:
            preprocess.main(args)
        assert outputs(destdir) == expected
        if finished:
            break
        step += 1
    assert step > 10  # the run made that many renames and unlinks, each one a place to die


def test_other_dictionary_is_refused_while_splits_it_would_not_rewrite_remain(
        small: Corpus, tmp_path: Path) -> None:
    """Those splits were binarized with the old dict.txt: beside a new one they would be wrong."""
    destdir = tmp_path / "data-bin"
    destdir.mkdir()
    for name, data in small.built.items():
        (destdir / name).write_bytes(data)
    only_train = ["--only-source", "--trainpref", str(small.folder / "train.txt"), "--srcdict",
                  str(small.folder / "other_dict.txt"), "--destdir", str(destdir)]
    with pytest.raises(UserError, match=r"split\(s\) test, valid binarized with another dict\.txt"):
        preprocess.main(only_train)
    assert outputs(destdir) == small.built
    shutil.copy(destdir / "dict.txt", tmp_path / "same_dict.txt")
    preprocess.main([*only_train[:4], str(tmp_path / "same_dict.txt"), *only_train[5:]])
    assert outputs(destdir) == small.built  # the same dictionary: the other splits still fit


def test_second_run_into_the_same_folder_is_refused(small: Corpus, tmp_path: Path) -> None:
    destdir = tmp_path / "data-bin"
    destdir.mkdir()
    (destdir / ".staging-running").mkdir()  # the folder of the run that holds the lock
    with preprocess._sole_run_in(destdir):
        with pytest.raises(UserError, match=rf"another roberta-preprocess .* still writing there \(pid {os.getpid()}\)"):
            preprocess.main(small.args(destdir, workers=1, other_dict=False))
    assert [path.name for path in destdir.iterdir()] == [".staging-running"]
