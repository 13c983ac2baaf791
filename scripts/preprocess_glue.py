"""Cut the GLUE tsv files of one task into aligned text files (the first step of fairseq's
examples/roberta/preprocess_GLUE_tasks.sh; scripts/preprocess_glue.sh runs the whole recipe).

    python scripts/preprocess_glue.py --glue-dir GLUE_DIR --task TASK --output-dir OUT \\
        [--splits train,dev,test] [--allow-empty] [--drop-malformed]

Reads GLUE_DIR/<TASK>/<split>.tsv (splits train, dev, test; MNLI: train, dev_matched,
dev_mismatched, test_matched, test_mismatched) and writes, one line per row in file order:
  OUT/<split>.raw.input0   the first sentence
  OUT/<split>.raw.input1   the second sentence (sentence-pair tasks: all but CoLA and SST-2)
  OUT/<split>.label        the label string (train and dev only: GLUE test files have none);
                           for STS-B the score divided by 5.0, printed as awk's print does
                           (%.6g), so the targets lie in [0, 1] as in fairseq.
Fields are split on tabs only (no CSV quoting: RTE and MRPC sentences hold raw quotes); a UTF-8
byte-order mark is dropped; a missing newline at the end of the file is fine. Every file has a
header line, which is skipped, except CoLA's train and dev files, which have none.

Of the split kinds named by --splits, a missing train file is an error and missing dev or test
files are skipped with a note; MNLI's dev_mismatched (test_mismatched) needs dev_matched
(test_matched), since the pairs become valid/valid1 (test/test1). A malformed row (wrong number
of fields, empty sentence, label not in the task's set, STS-B score not a number in [0, 5]) stops
the run with `<file>:<line>: <problem>`. OUT must not exist (or be empty); it appears only once
every file is written.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator, Sequence

from roberta.cli.common import run_cli
from roberta.errors import UserError
from roberta.fileio import synced_text_file

KINDS = ("train", "dev", "test")
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Layout:
    """Where the fields of one kind of GLUE file are (0-based tab-separated columns)."""
    columns: int
    inputs: tuple[int, ...]
    label: int | None = None
    header: bool = True


@dataclass(frozen=True)
class Task:
    """A GLUE task: its file layouts per split kind, its labels (None: an STS-B score) and,
    where they differ from the kind's name, its file names per kind."""
    train: Layout
    dev: Layout
    test: Layout
    labels: tuple[str, ...] | None
    files: tuple[tuple[str, ...], ...] = (("train",), ("dev",), ("test",))

    def layout(self, kind: str) -> Layout:
        return getattr(self, kind)

    def stems(self, kind: str) -> tuple[str, ...]:
        return self.files[KINDS.index(kind)]


BINARY = ("0", "1")
NLI2 = ("entailment", "not_entailment")


def _same(layout: Layout, test: Layout, labels: tuple[str, ...] | None) -> Task:
    return Task(layout, layout, test, labels)


# Columns as fairseq's script cuts them, checked against the released files.
TASKS = {
    "CoLA": _same(Layout(4, (3,), 1, header=False), Layout(2, (1,)), BINARY),
    "SST-2": _same(Layout(2, (0,), 1), Layout(2, (1,)), BINARY),
    "MRPC": _same(Layout(5, (3, 4), 0), Layout(5, (3, 4)), BINARY),
    "QQP": _same(Layout(6, (3, 4), 5), Layout(3, (1, 2)), BINARY),
    "STS-B": _same(Layout(10, (7, 8), 9), Layout(9, (7, 8)), None),
    "MNLI": Task(Layout(12, (8, 9), 11), Layout(16, (8, 9), 15), Layout(10, (8, 9)),
                 ("contradiction", "entailment", "neutral"),
                 (("train",), ("dev_matched", "dev_mismatched"), ("test_matched", "test_mismatched"))),
    "QNLI": _same(Layout(4, (1, 2), 3), Layout(3, (1, 2)), NLI2),
    "RTE": _same(Layout(4, (1, 2), 3), Layout(3, (1, 2)), NLI2),
    "WNLI": _same(Layout(4, (1, 2), 3), Layout(3, (1, 2)), BINARY),
}


@dataclass(frozen=True)
class Options:
    allow_empty: bool
    drop_malformed: bool


def layout_table() -> str:
    """The column table for --help, generated from TASKS so that it cannot drift."""
    rows = ["task layouts (0-based columns; 'N cols' = fields per row):"]
    for name, task in TASKS.items():
        labels = "|".join(task.labels) if task.labels else "score 0-5"
        rows.append(f"  {name} ({labels})")
        for kind in KINDS:
            layout = task.layout(kind)
            label = f", label {layout.label}" if layout.label is not None else ""
            header = "" if layout.header else ", no header"
            inputs = ",".join(map(str, layout.inputs))
            rows.append(f"    {'/'.join(task.stems(kind))}: {layout.columns} cols{header}, "
                        f"inputs {inputs}{label}")
    return "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="preprocess_glue.py", description=__doc__,
                                     epilog=layout_table(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--glue-dir", required=True, metavar="DIR",
                        help="the GLUE folder, holding one folder per task (CoLA/, MRPC/, ...)")
    parser.add_argument("--task", required=True, choices=list(TASKS), help="the task to cut")
    parser.add_argument("--output-dir", required=True, metavar="DIR",
                        help="folder to create for the text files (must not exist, or be empty)")
    parser.add_argument("--splits", default=",".join(KINDS), metavar="KINDS",
                        help="comma-separated split kinds to cut, of train, dev, test "
                             "(default: all; e.g. 'dev' when there is no train.tsv)")
    parser.add_argument("--allow-empty", action="store_true",
                        help="keep rows with an empty sentence as empty inputs (fairseq does; "
                             "QQP's train.tsv has two) instead of stopping")
    parser.add_argument("--drop-malformed", action="store_true",
                        help="drop rows with the wrong number of fields instead of stopping, "
                             "counting them in the summary (fairseq does so for QQP train/dev, "
                             "whose older releases have rows broken across lines)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    task_dir = Path(args.glue_dir) / args.task
    if not task_dir.is_dir():
        raise UserError(f"--glue-dir {args.glue_dir}: no {args.task} folder found; pass the GLUE "
                        f"folder that holds one folder per task ({', '.join(TASKS)})")
    task = TASKS[args.task]
    files = split_files(task_dir, task, parse_kinds(args.splits))
    options = Options(args.allow_empty, args.drop_malformed)
    output_dir = Path(args.output_dir)
    counts = write_output(output_dir, task, files, options)
    for stem, (rows, dropped) in counts.items():
        note = f" (dropped {dropped} with the wrong number of fields)" if dropped else ""
        print(f"{args.task} {stem}: {rows} rows{note}")
    print(f"wrote {output_dir}")


def parse_kinds(value: str) -> list[str]:
    kinds = [kind.strip() for kind in value.split(",") if kind.strip()]
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown or not kinds:
        raise UserError(f"--splits {value!r}: expected a comma-separated list of "
                        f"{', '.join(KINDS)}")
    return [kind for kind in KINDS if kind in kinds]


def split_files(task_dir: Path, task: Task, kinds: Sequence[str]) -> list[tuple[str, str, Path]]:
    """The (kind, split name, path) of every file to cut, after the presence rules above."""
    found = []
    for kind in kinds:
        present = [(task_dir / f"{stem}.tsv").is_file() for stem in task.stems(kind)]
        for number, stem in enumerate(task.stems(kind)):
            path = task_dir / f"{stem}.tsv"
            if present[number]:
                if number and not present[0]:
                    first = task.stems(kind)[0]
                    raise UserError(f"{path} found but {task_dir / first}.tsv is missing; the "
                                    f"first becomes the unnumbered split, so add {first}.tsv or "
                                    f"remove {stem}.tsv")
                found.append((kind, stem, path))
            elif kind == "train":
                raise UserError(f"{path} not found; pass the GLUE folder that holds it, or "
                                f"--splits without train (e.g. --splits dev) to cut only the rest")
            else:
                print(f"{task_dir.name} {stem}: {path} not found; skipped")
    if not found:
        raise UserError(f"{task_dir}: none of the {'/'.join(kinds)} tsv files found; pass the "
                        f"GLUE folder that holds them")
    return found


def write_output(output_dir: Path, task: Task, files: Sequence[tuple[str, str, Path]],
                 options: Options) -> dict[str, tuple[int, int]]:
    """Cut every file into a staging folder renamed to `output_dir` once all succeeded; return
    (rows written, rows dropped) per split."""
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise UserError(f"--output-dir {output_dir} already exists and is not an empty folder; "
                        f"remove it or choose another --output-dir")
    counts = {}
    try:
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=f".{output_dir.name}.tmp-"))
        try:
            # mkdir (not mkdtemp) gives the renamed folder the usual umask permissions.
            staging = scratch / output_dir.name
            staging.mkdir()
            for kind, stem, path in files:
                layout = task.layout(kind)
                names = [f"{stem}.raw.input{k}" for k in range(len(layout.inputs))]
                if layout.label is not None:
                    names.append(f"{stem}.label")
                with ExitStack() as stack:
                    sinks = [stack.enter_context(synced_text_file(staging / name)) for name in names]
                    counts[stem] = cut_file(path, stem, layout, task.labels, options, sinks)
            # rename(2) is atomic and replaces an empty folder but never a non-empty one.
            os.replace(staging, output_dir)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    except OSError as error:
        raise UserError(f"cannot write {output_dir} ({error.strerror}); check that its parent "
                        f"folder is writable and has free space") from None
    return counts


def cut_file(path: Path, stem: str, layout: Layout, labels: tuple[str, ...] | None,
             options: Options, sinks: Sequence[IO[str]]) -> tuple[int, int]:
    """Write the fields of every data row of `path` to `sinks` (inputs, then the label)."""
    rows = dropped = 0
    for number, fields in read_rows(path):
        where = f"{path}:{number}"
        if number == 1 and layout.header:
            check_header(where, fields, layout, labels, stem)
            continue
        if len(fields) != layout.columns:
            if options.drop_malformed:
                dropped += 1
                continue
            raise malformed(where, fields, layout, stem)
        for sink, value in zip(sinks, row_values(where, fields, layout, labels, options)):
            sink.write(value + "\n")
        rows += 1
    if rows == 0:
        raise UserError(f"{path}: no data rows; is this the GLUE {stem}.tsv file?")
    return rows, dropped


def read_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(1-based line number, tab-separated fields) of every line of `path`.

    Lines end at `\\n` only; a `\\r` left inside a field becomes a space, because the BPE
    encoder and the binarizer would read it as a line break and misalign the files."""
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise UserError(f"{path}: cannot read the file ({error.strerror})") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(BOM):
                raw = raw[len(BOM):]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise UserError(f"{path}:{number}: not UTF-8 text ({error.reason}); re-encode "
                                f"the file as UTF-8") from None
            line = line.rstrip("\n").removesuffix("\r").replace("\r", " ")
            yield number, line.split("\t")


def check_header(where: str, fields: list[str], layout: Layout, labels: tuple[str, ...] | None,
                 stem: str) -> None:
    if len(fields) != layout.columns:
        raise UserError(f"{where}: the header has {len(fields)} tab-separated fields, expected "
                        f"{layout.columns}; is this the GLUE {stem}.tsv file of this task?")
    # A file whose header was lost would otherwise silently lose its first example.
    if layout.label is not None and _valid_label(fields[layout.label].strip(), labels):
        raise UserError(f"{where}: expected a header line, found a data row (label "
                        f"{fields[layout.label].strip()!r}); restore the header line")


def malformed(where: str, fields: list[str], layout: Layout, stem: str) -> UserError:
    found = "an empty line" if fields == [""] else f"{len(fields)} tab-separated fields"
    return UserError(f"{where}: {found}, expected {layout.columns} fields as in GLUE's "
                     f"{stem}.tsv; fix the row (a tab or line break inside a sentence splits "
                     f"it), or pass --drop-malformed to drop such rows as fairseq does for QQP")


def row_values(where: str, fields: list[str], layout: Layout, labels: tuple[str, ...] | None,
               options: Options) -> list[str]:
    """The row's input fields, then its label (STS-B: the score / 5.0), after checking them."""
    values = []
    for k, column in enumerate(layout.inputs):
        if not fields[column].strip() and not options.allow_empty:
            raise UserError(f"{where}: input{k} (column {column}) is empty; fix the row, or pass "
                            f"--allow-empty to keep it as an empty input as fairseq does")
        values.append(fields[column])
    if layout.label is None:
        return values
    label = fields[layout.label].strip()
    if labels is not None:
        if label not in labels:
            raise UserError(f"{where}: label {label!r} (column {layout.label}) is not one of "
                            f"{', '.join(labels)}; fix the row")
        return values + [label]
    if not _valid_label(label, labels):
        raise UserError(f"{where}: score {label!r} (column {layout.label}) is not a number "
                        f"from 0 to 5; fix the row")
    # %.6g is what awk's print gives for fairseq's `$1 / 5.0`: same bytes as its label files.
    return values + [f"{float(label) / 5.0:.6g}"]


def _valid_label(label: str, labels: tuple[str, ...] | None) -> bool:
    if labels is not None:
        return label in labels
    try:
        score = float(label)
    except ValueError:
        return False
    return math.isfinite(score) and 0.0 <= score <= 5.0


if __name__ == "__main__":
    run_cli(main, "preprocess_glue.py")
