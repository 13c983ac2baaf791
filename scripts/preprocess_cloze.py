"""Convert cloze exams (CLOTH-style JSON) into the multiple-choice text layout of preprocess_race.py.

    python scripts/preprocess_cloze.py --input-dir CLOTH --output-dir EXTRACTED --mode passage
    python scripts/preprocess_cloze.py --input-dir CLOTH --output-dir EXTRACTED \\
        --mode window --window-words 32

Reads `{train,dev,test}/**/*.json` (sorted, numeric names by number), each one JSON object with
`article` (every blank written as a lone `_` word), `options` (one list of 4 per blank, in the
order of the blanks) and `answers` (one letter A-D per blank). Every blank becomes one example:
`input0` is an empty line (there is no separate context), and option line k is the text around
the blank with the blank filled by option k: the whole passage, other blanks left as `_`
(`--mode passage`), or the N words on either side of the blank (`--mode window`). Splits `train`,
`dev` and `test`; `.ids` lines name the file and the blank's number (from 0).
`--output-dir` must not exist (or be empty); it appears only once everything is written.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterator, Sequence

from multiple_choice_text import (Example, answer_labels, check_list, check_option_lists,
                                  check_same_length, check_string,
                                  check_string_list, collapse_whitespace, list_files,
                                  load_json_object, write_splits)
from roberta.cli.common import run_cli
from roberta.errors import UserError

NUM_OPTIONS = 4
SPLITS = ("train", "dev", "test")
BLANK = "_"
REQUIRED_KEYS = ("article", "options", "answers")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="preprocess_cloze.py", description=__doc__.split("\n")[0])
    parser.add_argument("--input-dir", required=True, metavar="DIR",
                        help="folder holding train/, dev/ and test/ with the *.json exams")
    parser.add_argument("--output-dir", required=True, metavar="DIR",
                        help="folder to create for the text files (must not exist, or be empty)")
    parser.add_argument("--mode", choices=["passage", "window"], default="passage",
                        help="option lines hold the whole passage, or a window around the blank")
    parser.add_argument("--window-words", type=int, metavar="N",
                        help="--mode window: words kept on each side of the blank")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    window = _window(args.mode, args.window_words)
    input_dir, output_dir = Path(args.input_dir), Path(args.output_dir)
    if not input_dir.is_dir():
        raise UserError(f"--input-dir {input_dir}: folder not found; pass the folder holding "
                        f"train/, dev/ and test/")
    files = {split: split_files(input_dir / split) for split in SPLITS}
    counts = write_splits(output_dir, {split: iter_examples(input_dir, paths, window)
                                       for split, paths in files.items()}, NUM_OPTIONS)
    for split, count in counts.items():
        print(f"{split}: {count} blanks")
    print(f"wrote {output_dir}")


def _window(mode: str, window_words: int | None) -> int | None:
    """Words kept on each side of the blank; None for the whole passage."""
    if mode == "passage":
        if window_words is not None:
            raise UserError("--window-words only applies to --mode window; drop it or pass "
                            "--mode window")
        return None
    if window_words is None or window_words < 1:
        raise UserError(f"--mode window needs --window-words N with N >= 1, got {window_words}")
    return window_words


def split_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise UserError(f"{directory}: expected split directory not found; --input-dir must hold "
                        f"train/, dev/ and test/ folders of *.json files")
    files = list_files(directory, ".json", recursive=True)
    if not files:
        raise UserError(f"{directory}: no .json files found (subfolders included)")
    return files


def iter_examples(input_dir: Path, paths: Sequence[Path], window: int | None) -> Iterator[Example]:
    for path in paths:
        yield from file_examples(path, path.relative_to(input_dir).as_posix(), window)


def file_examples(path: Path, source: str, window: int | None) -> list[Example]:
    """The examples of one exam, one per blank, after checking its structure."""
    data = load_json_object(path, REQUIRED_KEYS)
    words = check_string(data["article"], "article", path).split()
    blanks = [position for position, word in enumerate(words) if word == BLANK]
    answers = check_string_list(data["answers"], "answers", path)
    options = check_list(data["options"], "options", path)
    check_same_length(path, "blank", {"blanks in article": len(blanks), "options": len(options),
                                      "answers": len(answers)})
    option_lists = check_option_lists(options, NUM_OPTIONS, "blank", path)
    labels = answer_labels(answers, NUM_OPTIONS, "blank", path)
    return [Example("", tuple(fill_blank(words, position, option, window) for option in choices),
                    label, source, number)
            for number, (position, choices, label)
            in enumerate(zip(blanks, option_lists, labels))]


def fill_blank(words: Sequence[str], position: int, option: str, window: int | None) -> str:
    """The words around the blank at `position` (all of them when `window` is None), with that
    blank replaced by `option`."""
    start, end = (0, len(words)) if window is None else (max(position - window, 0),
                                                          position + window + 1)
    return collapse_whitespace(" ".join([*words[start:position], option,
                                         *words[position + 1:end]]))


if __name__ == "__main__":
    run_cli(main, "preprocess_cloze.py")
