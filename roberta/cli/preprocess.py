"""roberta-preprocess: binarize text into fairseq's mmap format (`fairseq-preprocess --only-source`).

Each line of an input file becomes one sequence of dictionary indices ending in `</s>`.
Writes `dict.txt`, `preprocess.log` and `<split>.bin`/`.idx` into `--destdir`, where a
comma-separated `--validpref a,b` gives the splits `valid` and `valid1` (likewise `--testpref`).
The outputs are written into a staging folder inside `--destdir` and moved into place at the end,
so a run killed at any moment leaves each split complete or absent, never beside a `dict.txt` it
was not binarized with; the next run removes the staging folder a killed one left. A write that
fails (a full disk) removes the staging folder and leaves `--destdir` as it was; worker processes
die with the run, even a SIGKILLed one.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from roberta.cli.common import run_cli
from roberta.data.dictionary import Dictionary, build_dictionary, find_line_offsets, iter_lines
from roberta.data.indexed_dataset import MMapIndexedDatasetBuilder, best_fitting_dtype
from roberta.dir_lock import exclusive_directory
from roberta.errors import UserError
from roberta.logging import DATE_FORMAT, LINE_FORMAT, open_log_file, setup_logging
from roberta.process_lifetime import worker_pool

logger = logging.getLogger("roberta.preprocess")

STAGING_PREFIX = ".staging-"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="roberta-preprocess", description=__doc__.split("\n")[0])
    parser.add_argument("--only-source", action="store_true",
                        help="binarize source text only (always the case here; accepted so "
                             "fairseq command lines run unchanged)")
    parser.add_argument("--trainpref", metavar="FP", help="train file (also builds the dictionary "
                                                          "when --srcdict is not given)")
    parser.add_argument("--validpref", metavar="FP",
                        help="comma-separated valid files -> splits valid, valid1, ...")
    parser.add_argument("--testpref", metavar="FP",
                        help="comma-separated test files -> splits test, test1, ...")
    parser.add_argument("--destdir", metavar="DIR", default="data-bin", help="output folder")
    parser.add_argument("--srcdict", metavar="FP", help="reuse this dict.txt instead of building one")
    parser.add_argument("--thresholdsrc", metavar="N", type=int, default=0,
                        help="when building the dictionary, map words seen fewer than N times "
                             "to <unk>")
    parser.add_argument("--nwordssrc", metavar="N", type=int, default=-1,
                        help="when building the dictionary, keep only the N most frequent "
                             "symbols (-1: all)")
    parser.add_argument("--padding-factor", metavar="N", type=int, default=8,
                        help="pad a built dictionary to a multiple of N entries")
    parser.add_argument("--workers", metavar="N", type=int, default=1,
                        help="number of parallel processes")
    parser.add_argument("--dataset-impl", metavar="FORMAT", default="mmap",
                        help="output format; only 'mmap' (fairseq's default) is supported")
    parser.add_argument("--dict-only", action="store_true",
                        help="only build and save dict.txt, binarize nothing")
    return parser


@dataclass
class BinarizeStats:
    """What a binarized file contained, for the log line fairseq prints."""
    sentences: int = 0
    tokens: int = 0
    replaced: Counter = field(default_factory=Counter)

    def add(self, other: BinarizeStats) -> None:
        self.sentences += other.sentences
        self.tokens += other.tokens
        self.replaced.update(other.replaced)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    splits = _check_args(args)
    destdir = Path(args.destdir)
    try:
        destdir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"--destdir {destdir}: cannot create it ({error.strerror}); choose "
                        f"another --destdir") from None
    with _sole_run_in(destdir):
        log_file = _open_preprocess_log(destdir)
        logger.addHandler(log_file)
        logger.setLevel(logging.INFO)
        try:
            logger.info(args)
            dictionary = _dictionary(args)
            same_dictionary = _holds_dictionary(destdir / "dict.txt", dictionary)
            if not same_dictionary:
                _check_no_other_splits(destdir, [split for split, _ in splits])
            _write_outputs(destdir, dictionary, splits, args.workers,
                           keep_old_dictionary=same_dictionary)
            if not args.dict_only:
                logger.info("Wrote preprocessed data to %s", destdir)
        finally:
            logger.removeHandler(log_file)
            log_file.close()


def _open_preprocess_log(destdir: Path) -> logging.Handler:
    """fairseq's `preprocess.log` in `destdir`, appended to; opening it also finds a full or
    read-only `destdir` before any work."""
    path = destdir / "preprocess.log"
    try:
        handler = open_log_file(path, str(path))
    except OSError as error:
        raise UserError(f"--destdir {destdir}: cannot write there ({error.strerror}); free some "
                        f"space or choose another --destdir") from None
    handler.setFormatter(logging.Formatter(LINE_FORMAT, DATE_FORMAT))
    return handler


LOCK_FILE = ".preprocess.lock"


def _sole_run_in(destdir: Path) -> contextlib.AbstractContextManager[int]:
    """Hold a lock on `destdir` for the run: two runs would interleave their outputs, and while it
    is held every staging folder in `destdir` is one that a killed run left behind. The worker
    processes hold it too, so it stays held until a killed run's last worker is gone."""
    return exclusive_directory(
        destdir, LOCK_FILE, kept_by_children=True,
        in_use=lambda holder: f"--destdir {destdir}: another roberta-preprocess (or a worker process it "
                              f"started) is still writing there ({holder}); wait for it to finish or stop it, "
                              f"or choose another --destdir")


def _write_outputs(destdir: Path, dictionary: Dictionary, splits: list[tuple[str, str]],
                   workers: int, *, keep_old_dictionary: bool) -> None:
    """Write dict.txt and every split into a fresh staging folder, then publish them."""
    staging = _new_staging_folder(destdir)
    try:
        with _failed_write_reported(destdir / "dict.txt"):
            dictionary.save(staging / "dict.txt")
        logger.info("Dictionary: %d types", len(dictionary))
        for split, path in splits:
            with _failed_write_reported(destdir / f"{split}.bin", source=path):
                stats = binarize_file(path, staging / split, dictionary, workers)
            percent = 100 * sum(stats.replaced.values()) / max(stats.tokens, 1)
            logger.info(f"{path}: {stats.sentences} sents, {stats.tokens} tokens, "
                        f"{percent:.3}% replaced (by {dictionary.unk_word})")
        try:
            _publish(staging, destdir, [split for split, _ in splits],
                     keep_old_dictionary=keep_old_dictionary)
        except OSError as error:
            raise UserError(f"could not publish {error.filename2 or error.filename}: "
                            f"{error.strerror}; each split in {destdir} is complete or absent "
                            f"(no .idx), rerun to finish") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _new_staging_folder(destdir: Path) -> Path:
    """A fresh staging folder in `destdir`, after removing those killed runs left."""
    for stale in destdir.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    try:
        return Path(tempfile.mkdtemp(dir=destdir, prefix=STAGING_PREFIX))
    except OSError as error:
        raise UserError(f"--destdir {destdir}: cannot create a staging folder there "
                        f"({error.strerror}); free some space or choose another --destdir") from None


@contextlib.contextmanager
def _failed_write_reported(output: Path, source: str | None = None) -> Iterator[None]:
    """An OSError while staging `output` becomes one line; nothing is published yet, so
    `--destdir` holds what it held (a failure to read `source`, the input, is named as such)."""
    try:
        yield
    except OSError as error:
        if source is not None and error.filename is not None and \
                os.fspath(error.filename) == os.fspath(source):
            raise UserError(f"could not read {source}: {error.strerror}") from None
        raise UserError(f"could not write {output}: {error.strerror or error}; nothing was "
                        f"published, the previous output in {output.parent} is intact") from None


def _publish(staging: Path, destdir: Path, split_names: list[str], *,
             keep_old_dictionary: bool) -> None:
    """Move dict.txt and the splits from `staging` into `destdir` in an order that is safe to be
    killed at any point: each split stays complete or absent, and is never beside a dict.txt it
    was not binarized with (the old one goes before any new split arrives, the new one comes last,
    so a fresh run that was killed can be rerun unchanged: its dict.txt is not there yet)."""
    # Without its index a split is absent: the loader needs both files, and the new .bin then
    # overwrites the old one.
    for split in split_names:
        (destdir / f"{split}.idx").unlink(missing_ok=True)
    if not keep_old_dictionary:
        (destdir / "dict.txt").unlink(missing_ok=True)
    for split in split_names:
        os.replace(staging / f"{split}.bin", destdir / f"{split}.bin")
        os.replace(staging / f"{split}.idx", destdir / f"{split}.idx")
    os.replace(staging / "dict.txt", destdir / "dict.txt")


def _check_args(args: argparse.Namespace) -> list[tuple[str, str]]:
    """Validate every flag before any work; return the (split name, input file) pairs."""
    if args.dataset_impl != "mmap":
        raise UserError(f"--dataset-impl {args.dataset_impl} is not supported; only 'mmap' "
                        f"(fairseq's default) is, so drop the flag")
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    if args.srcdict is None and not args.trainpref:
        raise UserError("--trainpref is needed to build a dictionary; pass it, or pass "
                        "--srcdict with an existing dict.txt")
    dict_path = Path(args.destdir) / "dict.txt"
    if args.srcdict is None and dict_path.exists():
        raise UserError(f"{dict_path} already exists; pass it as --srcdict to reuse it, or "
                        f"choose another --destdir")
    splits = []
    if args.trainpref:
        splits.append(("train", args.trainpref))
    for name, prefixes in (("valid", args.validpref), ("test", args.testpref)):
        for number, path in enumerate(prefixes.split(",") if prefixes else []):
            splits.append((f"{name}{number or ''}", path))
    missing = [path for _, path in splits if not os.path.isfile(path)]
    if args.srcdict is not None and not os.path.isfile(args.srcdict):
        missing.insert(0, args.srcdict)
    if missing:
        raise UserError(f"input file(s) not found: {', '.join(missing)}")
    return [] if args.dict_only else splits


def _dictionary(args: argparse.Namespace) -> Dictionary:
    if args.srcdict is not None:
        return Dictionary.load(args.srcdict)
    return build_dictionary([args.trainpref], workers=args.workers, threshold=args.thresholdsrc,
                            nwords=args.nwordssrc, padding_factor=args.padding_factor)


def _holds_dictionary(dict_path: Path, dictionary: Dictionary) -> bool:
    """Whether `dict_path` gives every symbol the index `dictionary` gives it (the counts may
    differ: they do not change a binarized split)."""
    return dict_path.exists() and Dictionary.load(dict_path) == dictionary


def _check_no_other_splits(destdir: Path, split_names: list[str]) -> None:
    """Splits in `destdir` that this run does not rewrite were binarized with the dict.txt there
    now; beside this run's other dictionary they would still load, and decode to other words."""
    others = sorted({path.name[:-len(path.suffix)] for path in destdir.iterdir()
                     if path.suffix in (".bin", ".idx")} - set(split_names))
    if others:
        raise UserError(f"--destdir {destdir} holds split(s) {', '.join(others)} binarized with "
                        f"another dict.txt than this run's, and this run would not rewrite them; "
                        f"binarize them too (--trainpref/--validpref/--testpref), remove them, or "
                        f"choose another --destdir")


def binarize_file(path: str, out_prefix: Path, dictionary: Dictionary, workers: int) -> BinarizeStats:
    """Binarize `path` into `<out_prefix>.bin/.idx`: the file is cut at line boundaries into
    `workers` byte ranges, each written as a shard by its own process, then the shards are
    concatenated in order (so the output does not depend on `workers`)."""
    dtype = best_fitting_dtype(len(dictionary))
    if workers == 1:
        return binarize_range(dictionary, path, 0, -1, str(out_prefix), dtype)
    offsets = find_line_offsets(path, workers)
    scratch = tempfile.mkdtemp(dir=out_prefix.parent, prefix=f".{out_prefix.name}-")
    try:
        jobs = [(dictionary, path, start, end, os.path.join(scratch, f"part{number}"), dtype)
                for number, (start, end) in enumerate(zip(offsets, offsets[1:]))]
        with worker_pool(workers) as pool:
            results = pool.starmap(binarize_range, jobs)
        stats = BinarizeStats()
        with MMapIndexedDatasetBuilder(f"{out_prefix}.bin", dtype) as builder:
            for job, part_stats in zip(jobs, results):
                builder.merge_file_(job[4])
                stats.add(part_stats)
            builder.finalize(f"{out_prefix}.idx")
        return stats
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def binarize_range(dictionary: Dictionary, path: str, start: int, end: int, out_prefix: str,
                   dtype: type[np.generic]) -> BinarizeStats:
    """Binarize the lines starting in bytes `[start, end)` of `path` (`end=-1`: to the end)."""
    stats = BinarizeStats()

    def count_replaced(word: str, index: int) -> None:
        if index == dictionary.unk_index and word != dictionary.unk_word:
            stats.replaced[word] += 1

    with MMapIndexedDatasetBuilder(f"{out_prefix}.bin", dtype) as builder:
        for line in iter_lines(path, start, end):
            ids = dictionary.encode_line(line, consumer=count_replaced)
            builder.add_item(ids)
            stats.sentences += 1
            stats.tokens += len(ids)
        builder.finalize(f"{out_prefix}.idx")
    return stats


def cli_main() -> None:
    setup_logging()
    run_cli(main, "roberta-preprocess")


if __name__ == "__main__":
    cli_main()
