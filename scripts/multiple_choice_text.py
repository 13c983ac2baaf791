"""Multiple-choice examples as aligned text files; shared by preprocess_race.py and preprocess_cloze.py.

A split `<name>` is written as `<name>.input0` (the context), `<name>.input1` .. `<name>.input<N>`
(option k), `<name>.label` (the 0-based index of the right option) and `<name>.ids`
(`<source file relative to the input folder><TAB><question or blank number>`), one line per
example in every file, so line i of each file belongs to the same example. Questions and blanks
are numbered from 0, by their position in the source file's lists, in the `.ids` files and in
error messages alike.

The output folder is built under a temporary name beside it and renamed into place only when
every split is complete: a failed or interrupted run leaves no output folder. An existing output
folder is refused unless it is empty, so earlier results are never mixed with or lost to new ones.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from roberta.errors import UserError
from roberta.fileio import synced_text_file


@dataclass(frozen=True)
class Example:
    """One question (or blank): its context, its option lines, the right option, and its origin."""
    context: str
    options: tuple[str, ...]
    label: int
    source: str
    number: int


def collapse_whitespace(text: str) -> str:
    """Every run of whitespace (line breaks included) becomes one space, and the ends are trimmed.

    fairseq only collapses the runs; trimming as well changes no token, because the BPE encoder
    strips each line before encoding it.
    """
    return " ".join(text.split())


def bad_file(path: Path, problem: str) -> UserError:
    """The error for a malformed input file: names the file, the problem and the fix."""
    return UserError(f"{path}: {problem}; fix or remove this file")


def list_files(directory: Path, suffix: str, recursive: bool = False) -> list[Path]:
    """The `*<suffix>` files of `directory`, numbered names in numeric order ("2" before "10").

    The order must not depend on the filesystem (fairseq's os.listdir order does), so that the
    same release always gives the same example order on every machine.
    """
    pattern = f"**/*{suffix}" if recursive else f"*{suffix}"
    files = [path for path in directory.glob(pattern) if path.is_file()]
    for path in files:
        # A tab or line break in a name would break the one-line-per-example .ids file.
        if any(char in str(path.relative_to(directory)) for char in "\t\n\r"):
            raise UserError(f"{str(path)!r}: file name contains a tab or line break; rename the file")
    return sorted(files, key=lambda path: tuple(_name_key(part)
                                                for part in path.relative_to(directory).parts))


def _name_key(name: str) -> tuple[int, int, str]:
    stem = name.split(".", 1)[0]
    return (0, int(stem), name) if stem.isdigit() else (1, 0, name)


def load_json_object(path: Path, keys: Iterable[str]) -> dict:
    """The JSON object in `path`, checked to have every key in `keys`."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except UnicodeDecodeError:
        raise bad_file(path, "not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise bad_file(path, f"not valid JSON ({error.msg} at line {error.lineno} "
                             f"column {error.colno})") from None
    except OSError as error:
        raise UserError(f"{path}: cannot read the file ({error.strerror})") from None
    if not isinstance(data, dict):
        raise bad_file(path, f"expected a JSON object, found {type(data).__name__}")
    missing = [key for key in keys if key not in data]
    if missing:
        raise bad_file(path, f"missing key(s) {', '.join(missing)}")
    return data


def check_string(value: object, key: str, path: Path) -> str:
    if not isinstance(value, str):
        raise bad_file(path, f"'{key}' must be a string, found {type(value).__name__}")
    return value


def check_list(value: object, key: str, path: Path) -> list:
    if not isinstance(value, list):
        raise bad_file(path, f"'{key}' must be a list, found {type(value).__name__}")
    return value


def check_string_list(value: object, key: str, path: Path) -> list[str]:
    items = check_list(value, key, path)
    for number, item in enumerate(items):
        if not isinstance(item, str):
            raise bad_file(path, f"'{key}' entry {number} must be a string, "
                                 f"found {type(item).__name__}")
    return items


def check_same_length(path: Path, unit: str, counts: Mapping[str, int]) -> None:
    """Every list in `counts` must have one entry per `unit` (question or blank)."""
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{name} {count}" for name, count in counts.items())
        raise bad_file(path, f"counts differ ({listed}); there must be one options list and "
                             f"one answer per {unit}")


def check_option_lists(options: list, num_options: int, unit: str, path: Path) -> list[tuple[str, ...]]:
    """Each entry of `options` must be a list of exactly `num_options` strings."""
    checked = []
    for number, choices in enumerate(options):
        if not isinstance(choices, list):
            raise bad_file(path, f"the options of {unit} {number} must be a list, "
                                 f"found {type(choices).__name__}")
        if len(choices) != num_options:
            raise bad_file(path, f"{unit} {number} has {len(choices)} options, expected {num_options}")
        if not all(isinstance(choice, str) for choice in choices):
            raise bad_file(path, f"an option of {unit} {number} is not a string")
        checked.append(tuple(choices))
    return checked


def answer_labels(answers: list[str], num_options: int, unit: str, path: Path) -> list[int]:
    """Answer letters ("A" for the first option) as 0-based option indices."""
    letters = [chr(ord("A") + index) for index in range(num_options)]
    for number, answer in enumerate(answers):
        if answer not in letters:
            raise bad_file(path, f"{unit} {number} has answer {answer!r}, expected one of "
                                 f"{', '.join(letters)}")
    return [letters.index(answer) for answer in answers]


def check_output_dir(output_dir: Path) -> None:
    """Refuse an existing output that is not an empty folder, before anything is written."""
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise UserError(f"--output-dir {output_dir} already exists and is not an empty folder; "
                        f"remove it or choose another --output-dir")


def write_splits(output_dir: Path, splits: Mapping[str, Iterable[Example]],
                 num_options: int) -> dict[str, int]:
    """Write each split's examples (the iterables may raise UserError midway) and return the
    number of examples per split. Nothing appears under `output_dir` unless all went well."""
    check_output_dir(output_dir)
    try:
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=f".{output_dir.name}.tmp-"))
        try:
            # The folder renamed into place is made by mkdir, not mkdtemp, so that it gets the
            # usual permissions (umask) rather than mkdtemp's owner-only ones.
            staging = scratch / output_dir.name
            staging.mkdir()
            counts = {name: _write_split(staging, name, examples, num_options)
                      for name, examples in splits.items()}
            # rename(2) is atomic and replaces an empty folder but never a non-empty one.
            os.replace(staging, output_dir)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    except OSError as error:
        raise UserError(f"cannot write {output_dir} ({error.strerror}); check that its parent "
                        f"folder is writable and has free space") from None
    return counts


def _write_split(folder: Path, name: str, examples: Iterable[Example], num_options: int) -> int:
    suffixes = [f"input{index}" for index in range(num_options + 1)] + ["label", "ids"]
    count = 0
    with ExitStack() as stack:
        files = [stack.enter_context(synced_text_file(folder / f"{name}.{suffix}"))
                 for suffix in suffixes]
        for example in examples:
            lines = [example.context, *example.options, str(example.label),
                     f"{example.source}\t{example.number}"]
            for handle, line in zip(files, lines):
                handle.write(line + "\n")
            count += 1
    return count
