"""SQuAD 2.0 JSON -> the data folder that `--task squad2` reads (passage windows, targets, offsets).

    python scripts/preprocess_squad.py TRAIN_JSON DEV_JSON DATA_BIN --bpe-dir BPE_DIR \\
        [--max-positions 512] [--doc-stride 128] [--max-query-length 128] [--question-first]
        [--workers N]

The recipe of the roberta-squad fairseq fork. Each paragraph's context is GPT-2 BPE-encoded once,
with the characters each token covers. Each question becomes one or more windows
`<s> passage-window </s> Q: question </s>` (with --question-first:
`<s> Q: question </s> </s> passage-window </s>`); the question is "Q: " + the question text
(stripped) and keeps at most --max-query-length tokens. A window holds up to
`--max-positions - question tokens - special tokens` passage tokens (3 special tokens, 4 with
--question-first), and --doc-stride is the STEP between the starts of consecutive windows (as in
BERT's run_squad.py, not the overlap of Hugging Face's run_qa.py); the last window ends at the
passage end.

Targets use a question's first gold answer: the first and last passage tokens overlapping its
characters, as positions in the window, or 0 0 (the `<s>` position) for an unanswerable question
or an answer not wholly inside the window. An answer whose text is not at its answer_start is
moved to the nearest place the text occurs ("realigned"); a text found nowhere in the context is
"mismatched": such a question is dropped from train and kept, without target, in valid, so that
every dev question gets a prediction.

DATA_BIN (splits: train from TRAIN_JSON, valid from DEV_JSON):
    dict.txt                          copied from BPE_DIR
    <split>.bin/.idx                  one window per item, dictionary indices
    <split>.windows.tsv               per window: question_index passage_position doc_start
                                      doc_length start end (tab-separated)
    <split>.offsets.bin/.idx          per question: int32 [start, end) characters of each passage
                                      token in its context, flattened pairs
    <split>.questions.jsonl           per question: {"id", "paragraph", "answers", "is_impossible"}
    <split>.contexts.jsonl            per paragraph: the context, as a JSON string
    <split>.meta.json                 settings and counts
DATA_BIN is built as DATA_BIN.tmp.<pid> and renamed at the end (the next run removes one that a
killed run left; worker processes die with this one); an existing DATA_BIN that is not an empty
folder is refused.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from roberta.cli.common import run_cli
from roberta.cli.settings import settings_from_flags
from roberta.data.gpt2_bpe import ENCODER_JSON, VOCAB_BPE
from roberta.data.squad_data_bin import SplitCounts, write_data_bin
from roberta.data.squad_json import read_squad
from roberta.data.squad_windows import WindowSettings
from roberta.errors import UserError

BPE_FILES = (ENCODER_JSON, VOCAB_BPE, "dict.txt")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="preprocess_squad.py", description=__doc__.split("\n")[0])
    parser.add_argument("train_json", help="SQuAD train file (train-v2.0.json) -> split train")
    parser.add_argument("dev_json", help="SQuAD dev file (dev-v2.0.json) -> split valid")
    parser.add_argument("data_bin", help="folder to create (must not exist, or be empty)")
    parser.add_argument("--bpe-dir", required=True, metavar="DIR",
                        help="folder holding the GPT-2 encoder.json, vocab.bpe and fairseq's dict.txt")
    parser.add_argument("--max-positions", type=int, default=512,
                        help="tokens per window, special tokens and question included")
    parser.add_argument("--doc-stride", type=int, default=128,
                        help="passage tokens between the starts of consecutive windows (a step, "
                             "as BERT's run_squad.py; not an overlap)")
    parser.add_argument("--max-query-length", type=int, default=128,
                        help="question tokens kept (\"Q: \" included); the rest is cut")
    parser.add_argument("--question-first", action="store_true",
                        help="windows are <s> question </s> </s> passage </s> instead of "
                             "<s> passage </s> question </s>")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes encoding paragraphs (the output does not depend on it)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    settings = settings_from_flags(WindowSettings, args)
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    data_bin = Path(args.data_bin)
    if data_bin.exists() and (not data_bin.is_dir() or any(data_bin.iterdir())):
        raise UserError(f"{data_bin} already exists; remove it or choose another output folder")
    bpe_dir = check_bpe_dir(Path(args.bpe_dir))
    splits = {"train": read_squad(Path(args.train_json)), "valid": read_squad(Path(args.dev_json))}
    write_data_bin(data_bin, bpe_dir, splits, settings, args.workers, print_counts)
    print(f"wrote {data_bin}")


def check_bpe_dir(bpe_dir: Path) -> Path:
    for name in BPE_FILES:
        if not (bpe_dir / name).is_file():
            raise UserError(f"{bpe_dir / name} not found; --bpe-dir must hold the GPT-2 "
                            f"encoder.json, vocab.bpe and dict.txt (fairseq's RoBERTa files)")
    return bpe_dir


def print_counts(split: str, counts: SplitCounts) -> None:
    print(f"{split}: {counts.questions} questions, {counts.windows} windows, "
          f"{counts.answerable} answerable, {counts.unanswerable} unanswerable, "
          f"{counts.realigned} realigned, {counts.mismatched} mismatched "
          f"({counts.dropped} dropped)", flush=True)


if __name__ == "__main__":
    run_cli(main, "preprocess_squad.py")
