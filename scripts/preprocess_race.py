"""Extract the RACE release into aligned multiple-choice text files (fairseq's preprocess_RACE.py).

    python scripts/preprocess_race.py --input-dir RACE --output-dir EXTRACTED

Reads `RACE/{train,dev,test}/{middle,high}/*.txt`, each file one JSON object with `article`,
`questions`, `options` (4 per question) and `answers` (letters A-D). Writes the splits `train`
and `dev` (middle then high), `test-middle` and `test-high` as `<split>.input0` (the article),
`<split>.input1..input4` (question joined with option k), `<split>.label` and `<split>.ids`
(layout: scripts/multiple_choice_text.py). Unlike fairseq, files are read in sorted order
(numeric names by number), so the example order is the same on every machine.
`--output-dir` must not exist (or be empty); it appears only once everything is written.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterator, Sequence

from multiple_choice_text import (Example, answer_labels, check_list,
                                  check_option_lists, check_same_length,
                                  check_string, check_string_list, collapse_whitespace,
                                  list_files, load_json_object, write_splits)
from roberta.cli.common import run_cli
from roberta.errors import UserError

NUM_OPTIONS = 4
LEVELS = ("middle", "high")
# Output split -> (release folder, levels read in this order), as fairseq's preprocess_RACE.py.
SPLITS = {
    "train": ("train", LEVELS),
    "dev": ("dev", LEVELS),
    "test-middle": ("test", ("middle",)),
    "test-high": ("test", ("high",)),
}
REQUIRED_KEYS = ("article", "questions", "options", "answers")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="preprocess_race.py", description=__doc__.split("\n")[0])
    parser.add_argument("--input-dir", required=True, metavar="DIR",
                        help="the RACE release folder, holding train/, dev/ and test/")
    parser.add_argument("--output-dir", required=True, metavar="DIR",
                        help="folder to create for the text files (must not exist, or be empty)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    input_dir, output_dir = Path(args.input_dir), Path(args.output_dir)
    if not input_dir.is_dir():
        raise UserError(f"--input-dir {input_dir}: folder not found; pass the RACE release "
                        f"folder (the one holding train/, dev/ and test/)")
    files = {split: split_files(input_dir, folder, levels)
             for split, (folder, levels) in SPLITS.items()}
    counts = write_splits(output_dir, {split: iter_examples(input_dir, paths)
                                       for split, paths in files.items()}, NUM_OPTIONS)
    for split, count in counts.items():
        print(f"{split}: {count} questions")
    print(f"wrote {output_dir}")


def split_files(input_dir: Path, folder: str, levels: Sequence[str]) -> list[Path]:
    """All question files of one split, level by level; checked before anything is written."""
    files = []
    for level in levels:
        directory = input_dir / folder / level
        if not directory.is_dir():
            raise UserError(f"{directory}: expected split directory not found; --input-dir must "
                            f"hold the RACE release layout {{train,dev,test}}/{{middle,high}}/*.txt")
        found = list_files(directory, ".txt")
        if not found:
            raise UserError(f"{directory}: no .txt files; is --input-dir the unpacked RACE release?")
        files.extend(found)
    return files


def iter_examples(input_dir: Path, paths: Sequence[Path]) -> Iterator[Example]:
    for path in paths:
        yield from file_examples(path, path.relative_to(input_dir).as_posix())


def file_examples(path: Path, source: str) -> list[Example]:
    """The examples of one RACE file, one per question, after checking its structure."""
    data = load_json_object(path, REQUIRED_KEYS)
    context = collapse_whitespace(check_string(data["article"], "article", path))
    questions = check_string_list(data["questions"], "questions", path)
    answers = check_string_list(data["answers"], "answers", path)
    options = check_list(data["options"], "options", path)
    check_same_length(path, "question", {"questions": len(questions), "options": len(options),
                                         "answers": len(answers)})
    option_lists = check_option_lists(options, NUM_OPTIONS, "question", path)
    labels = answer_labels(answers, NUM_OPTIONS, "question", path)
    return [Example(context, tuple(join_option(question, option) for option in choices),
                    label, source, number)
            for number, (question, choices, label)
            in enumerate(zip(questions, option_lists, labels))]


def join_option(question: str, option: str) -> str:
    """fairseq's rule: a question containing `_` is a sentence with blanks, and every blank takes
    the option; any other question is followed by the option."""
    if "_" in question:
        return collapse_whitespace(question.replace("_", option))
    return collapse_whitespace(f"{question} {option}")


if __name__ == "__main__":
    run_cli(main, "preprocess_race.py")
