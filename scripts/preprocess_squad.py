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
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Sequence

import numpy as np

from roberta.cli.common import run_cli
from roberta.data.dictionary import Dictionary
from roberta.data.gpt2_bpe import ENCODER_JSON, VOCAB_BPE, GPT2BPE
from roberta.data.indexed_dataset import MMapIndexedDatasetBuilder, best_fitting_dtype
from roberta.errors import UserError
from roberta.fileio import atomic_write
from roberta.process_lifetime import remove_leftovers_of_dead_runs, worker_pool

BPE_FILES = (ENCODER_JSON, VOCAB_BPE, "dict.txt")
QUESTION_PREFIX = "Q: "
LAYOUT_HINT = ('expected the SQuAD layout {"data": [{"paragraphs": [{"context", "qas": [{"id", '
               '"question", "answers": [{"text", "answer_start"}], "is_impossible"}]}]}]}')


@dataclass(frozen=True)
class Question:
    qid: str
    text: str
    answers: tuple[tuple[str, int], ...]  # (text, answer_start) of every gold answer
    is_impossible: bool


@dataclass(frozen=True)
class Paragraph:
    context: str
    questions: tuple[Question, ...]


@dataclass(frozen=True, kw_only=True)
class WindowSettings:
    max_positions: int
    doc_stride: int
    max_query_length: int
    question_first: bool

    @property
    def num_special(self) -> int:
        return 4 if self.question_first else 3


@dataclass(frozen=True)
class Window:
    tokens: np.ndarray  # dictionary indices; an array pickles compactly back from a worker
    passage_position: int
    doc_start: int
    doc_length: int
    start: int
    end: int


@dataclass(frozen=True)
class EncodedQuestion:
    question: Question
    alignment: str  # "exact", "realigned", "mismatched" or "impossible"
    windows: list[Window]


@dataclass(frozen=True)
class EncodedParagraph:
    offsets: np.ndarray  # int32 [2 * passage tokens]: start, end characters of each token
    questions: list[EncodedQuestion]


@dataclass
class SplitCounts:
    questions: int = 0
    windows: int = 0
    answerable: int = 0
    unanswerable: int = 0
    realigned: int = 0
    mismatched: int = 0
    dropped: int = 0


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
    settings = settings_from_args(args)
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    data_bin = Path(args.data_bin)
    if data_bin.exists() and (not data_bin.is_dir() or any(data_bin.iterdir())):
        raise UserError(f"{data_bin} already exists; remove it or choose another output folder")
    bpe_dir = check_bpe_dir(Path(args.bpe_dir))
    splits = {"train": read_squad(Path(args.train_json)), "valid": read_squad(Path(args.dev_json))}
    dictionary = Dictionary.load(bpe_dir / "dict.txt")
    GPT2BPE.from_dir(bpe_dir)  # a broken encoder.json or vocab.bpe fails here, not in a worker
    scratch = data_bin.with_name(f"{data_bin.name}.tmp.{os.getpid()}")
    try:
        scratch.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers_of_dead_runs(scratch.parent, f"{data_bin.name}.tmp")
        scratch.mkdir()
        with open(bpe_dir / "dict.txt", "rb") as source, atomic_write(scratch / "dict.txt") as copy:
            shutil.copyfileobj(source, copy)
        for name, paragraphs in splits.items():
            encoded = encode_paragraphs(paragraphs, bpe_dir, settings, args.workers)
            counts = write_split(scratch, name, paragraphs, encoded, settings,
                                 drop_mismatched=name == "train",
                                 dtype=best_fitting_dtype(len(dictionary)))
            print(f"{name}: {counts.questions} questions, {counts.windows} windows, "
                  f"{counts.answerable} answerable, {counts.unanswerable} unanswerable, "
                  f"{counts.realigned} realigned, {counts.mismatched} mismatched "
                  f"({counts.dropped} dropped)", flush=True)
        # rmdir succeeds only on an empty folder; the rename is then atomic.
        if data_bin.is_dir():
            data_bin.rmdir()
        os.rename(scratch, data_bin)
    except OSError as error:
        raise UserError(f"cannot write {data_bin} ({error.strerror}); check that its parent "
                        f"folder is writable and has free space") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"wrote {data_bin}")


def settings_from_args(args: argparse.Namespace) -> WindowSettings:
    for flag in ("max_positions", "doc_stride", "max_query_length"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be a positive integer, "
                            f"got {getattr(args, flag)}")
    settings = WindowSettings(max_positions=args.max_positions, doc_stride=args.doc_stride,
                              max_query_length=args.max_query_length,
                              question_first=args.question_first)
    if settings.max_positions - settings.max_query_length - settings.num_special < 1:
        raise UserError(f"--max-positions {settings.max_positions} leaves no passage token "
                        f"beside --max-query-length {settings.max_query_length} and "
                        f"{settings.num_special} special tokens; raise --max-positions or lower "
                        f"--max-query-length")
    return settings


def check_bpe_dir(bpe_dir: Path) -> Path:
    for name in BPE_FILES:
        if not (bpe_dir / name).is_file():
            raise UserError(f"{bpe_dir / name} not found; --bpe-dir must hold the GPT-2 "
                            f"encoder.json, vocab.bpe and dict.txt (fairseq's RoBERTa files)")
    return bpe_dir


# ----------------------------------------------------------------------------- reading SQuAD

def read_squad(path: Path) -> list[Paragraph]:
    """Every paragraph of a SQuAD file, in file order, after checking its whole layout."""
    data = _load_json(path)
    articles = _field(data, "data", list, path, "top level")
    paragraphs, seen = [], set()
    for article_number, article in enumerate(articles):
        where = f"data[{article_number}]"
        for number, paragraph in enumerate(_field(article, "paragraphs", list, path, where)):
            where = f"data[{article_number}].paragraphs[{number}]"
            context = _field(paragraph, "context", str, path, where)
            questions = tuple(_question(qa, path, f"{where}.qas[{qa_number}]")
                              for qa_number, qa in enumerate(_field(paragraph, "qas", list, path, where)))
            for question in questions:
                if question.qid in seen:
                    raise _layout_error(path, where, f"question id {question.qid!r} appears "
                                                     f"twice; ids must be unique")
                seen.add(question.qid)
            paragraphs.append(Paragraph(context, questions))
    return paragraphs


def _load_json(path: Path) -> object:
    try:
        with open(path, encoding="utf-8-sig") as handle:
            return json.load(handle)
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; pass a SQuAD JSON file") from None
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not valid JSON ({error.msg} at line {error.lineno} column "
                        f"{error.colno}); pass a SQuAD JSON file") from None
    except OSError as error:
        raise UserError(f"{path}: cannot read the file ({error.strerror})") from None


def _question(qa: object, path: Path, where: str) -> Question:
    qid = _field(qa, "id", str, path, where)
    text = _field(qa, "question", str, path, where)
    answers = []
    for number, answer in enumerate(_field(qa, "answers", list, path, where)):
        answers.append((_field(answer, "text", str, path, f"{where}.answers[{number}]"),
                        _field(answer, "answer_start", int, path, f"{where}.answers[{number}]")))
    # SQuAD 1.1 has no is_impossible; there a question without answers is the only kind there is.
    is_impossible = _field(qa, "is_impossible", bool, path, where) if "is_impossible" in qa else not answers
    if is_impossible == bool(answers):
        problem = "has answers" if answers else "has no answers"
        raise _layout_error(path, where, f"question {qid!r} {problem} but is_impossible is "
                                         f"{str(is_impossible).lower()}")
    return Question(qid, text, tuple(answers), is_impossible)


def _field(container: object, key: str, kind: type, path: Path, where: str) -> Any:
    if not isinstance(container, dict):
        raise _layout_error(path, where, f"expected a JSON object, found {type(container).__name__}")
    if key not in container:
        raise _layout_error(path, where, f"missing key {key!r}")
    value = container[key]
    # bool is an int to Python, but never an answer_start.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _layout_error(path, where, f"{key!r} must be {kind.__name__}, "
                                         f"found {type(value).__name__}")
    return value


def _layout_error(path: Path, where: str, problem: str) -> UserError:
    return UserError(f"{path}: {where}: {problem}; {LAYOUT_HINT}")


# ----------------------------------------------------------------------------- windows and targets

def locate_answer(context: str, text: str, answer_start: int) -> tuple[int, bool] | None:
    """The character where the answer starts and whether it was moved there: `answer_start`
    when the text is there, else the nearest occurrence of the text; None if there is none."""
    if not text:
        return None
    if 0 <= answer_start and context[answer_start:answer_start + len(text)] == text:
        return answer_start, False
    nearest = None
    position = context.find(text)
    while position != -1:
        if nearest is None or abs(position - answer_start) < abs(nearest - answer_start):
            nearest = position
        position = context.find(text, position + 1)
    return None if nearest is None else (nearest, True)


def token_span(spans: Sequence[tuple[int, int]], char_start: int, char_end: int) -> tuple[int, int] | None:
    """First and last token whose characters overlap `[char_start, char_end)`."""
    covering = [index for index, (start, end) in enumerate(spans) if start < char_end and end > char_start]
    return (covering[0], covering[-1]) if covering else None


def doc_windows(num_tokens: int, max_doc: int, doc_stride: int) -> list[tuple[int, int]]:
    """(doc_start, doc_length) of each window, as BERT's run_squad.py: starts `doc_stride` apart
    (never more than a window, so no token is skipped), up to the one reaching the end. An
    empty passage still gets one window, so that its questions get a prediction."""
    windows = []
    start = 0
    while True:
        length = min(max_doc, num_tokens - start)
        windows.append((start, length))
        if start + length >= num_tokens:
            return windows
        start += min(length, doc_stride)


class SquadEncoder:
    """Turns paragraphs into windows and targets with one BPE, dictionary and window settings."""

    def __init__(self, bpe: GPT2BPE, dictionary: Dictionary, settings: WindowSettings) -> None:
        self.bpe = bpe
        self.dictionary = dictionary
        self.settings = settings
        self._indices: dict[int, int] = {}

    @classmethod
    def load(cls, bpe_dir: Path, settings: WindowSettings) -> SquadEncoder:
        return cls(GPT2BPE.from_dir(bpe_dir), Dictionary.load(bpe_dir / "dict.txt"), settings)

    def paragraph(self, paragraph: Paragraph) -> EncodedParagraph:
        ids, spans = self.bpe.encode_with_offsets(paragraph.context)
        passage = self._to_indices(ids)
        questions = [self._question(question, paragraph.context, passage, spans)
                     for question in paragraph.questions]
        return EncodedParagraph(np.asarray(spans, dtype=np.int32).reshape(-1), questions)

    def _question(self, question: Question, context: str, passage: list[int],
                  spans: list[tuple[int, int]]) -> EncodedQuestion:
        query = self._to_indices(self.bpe.encode_ids(QUESTION_PREFIX + question.text.strip()))
        query = query[:self.settings.max_query_length]
        alignment, target = self._target(question, context, spans)
        max_doc = self.settings.max_positions - len(query) - self.settings.num_special
        windows = [self._window(passage, query, doc_start, doc_length, target)
                   for doc_start, doc_length in doc_windows(len(passage), max_doc,
                                                            self.settings.doc_stride)]
        return EncodedQuestion(question, alignment, windows)

    def _target(self, question: Question, context: str,
                spans: list[tuple[int, int]]) -> tuple[str, tuple[int, int] | None]:
        """The alignment of the first gold answer and its first and last passage tokens."""
        if question.is_impossible:
            return "impossible", None
        text, answer_start = question.answers[0]
        located = locate_answer(context, text, answer_start)
        tokens = None if located is None else token_span(spans, located[0], located[0] + len(text))
        if tokens is None:  # not in the context, or only whitespace
            return "mismatched", None
        return ("realigned" if located[1] else "exact"), tokens

    def _window(self, passage: list[int], query: list[int], doc_start: int, doc_length: int,
                target: tuple[int, int] | None) -> Window:
        bos, eos = self.dictionary.bos(), self.dictionary.eos()
        chunk = passage[doc_start:doc_start + doc_length]
        if self.settings.question_first:
            tokens = [bos, *query, eos, eos, *chunk, eos]
            passage_position = len(query) + 3
        else:
            tokens = [bos, *chunk, eos, *query, eos]
            passage_position = 1
        start = end = 0
        if target is not None and doc_start <= target[0] and target[1] < doc_start + doc_length:
            start = passage_position + target[0] - doc_start
            end = passage_position + target[1] - doc_start
        return Window(np.asarray(tokens, dtype=np.int32), passage_position, doc_start, doc_length,
                      start, end)

    def _to_indices(self, ids: list[int]) -> list[int]:
        indices = self._indices
        for token in ids:
            if token not in indices:
                indices[token] = self.dictionary.index(str(token))
        return [indices[token] for token in ids]


_WORKER_ENCODER: SquadEncoder | None = None


def _start_worker(bpe_dir: Path, settings: WindowSettings) -> None:
    global _WORKER_ENCODER
    _WORKER_ENCODER = SquadEncoder.load(bpe_dir, settings)


def _encode_in_worker(paragraph: Paragraph) -> EncodedParagraph:
    return _WORKER_ENCODER.paragraph(paragraph)


def encode_paragraphs(paragraphs: Sequence[Paragraph], bpe_dir: Path, settings: WindowSettings,
                      workers: int) -> Iterator[EncodedParagraph]:
    """The encoded paragraphs in input order, whatever the number of processes."""
    if workers == 1:
        encoder = SquadEncoder.load(bpe_dir, settings)
        yield from map(encoder.paragraph, paragraphs)
        return
    with worker_pool(workers, _start_worker, (bpe_dir, settings)) as pool:
        yield from pool.imap(_encode_in_worker, paragraphs, chunksize=8)


# ----------------------------------------------------------------------------- writing a split

def write_split(folder: Path, name: str, paragraphs: Sequence[Paragraph],
                encoded: Iterable[EncodedParagraph], settings: WindowSettings, *,
                drop_mismatched: bool, dtype: type[np.generic]) -> SplitCounts:
    counts = SplitCounts()
    with MMapIndexedDatasetBuilder(folder / f"{name}.bin", dtype) as windows_bin, \
            MMapIndexedDatasetBuilder(folder / f"{name}.offsets.bin", np.int32) as offsets_bin, \
            atomic_write(folder / f"{name}.windows.tsv", "w", encoding="utf-8") as windows_tsv, \
            atomic_write(folder / f"{name}.questions.jsonl", "w", encoding="utf-8") as questions, \
            atomic_write(folder / f"{name}.contexts.jsonl", "w", encoding="utf-8") as contexts:
        for paragraph_number, (paragraph, result) in enumerate(zip(paragraphs, encoded)):
            contexts.write(json.dumps(paragraph.context, ensure_ascii=False) + "\n")
            for item in result.questions:
                if item.alignment == "mismatched":
                    counts.mismatched += 1
                    if drop_mismatched:
                        counts.dropped += 1
                        continue
                _write_question(item, paragraph_number, counts, result.offsets, windows_bin,
                                offsets_bin, windows_tsv, questions)
        windows_bin.finalize(folder / f"{name}.idx")
        offsets_bin.finalize(folder / f"{name}.offsets.idx")
    meta = {"max_positions": settings.max_positions, "doc_stride": settings.doc_stride,
            "max_query_length": settings.max_query_length,
            "question_first": settings.question_first, **asdict(counts)}
    with atomic_write(folder / f"{name}.meta.json", "w", encoding="utf-8") as handle:
        json.dump(meta, handle, indent=2)
        handle.write("\n")
    return counts


def _write_question(item: EncodedQuestion, paragraph_number: int, counts: SplitCounts,
                    offsets: np.ndarray, windows_bin: MMapIndexedDatasetBuilder,
                    offsets_bin: MMapIndexedDatasetBuilder, windows_tsv: IO[str],
                    questions: IO[str]) -> None:
    question = item.question
    question_index = counts.questions
    counts.questions += 1
    counts.unanswerable += question.is_impossible
    counts.answerable += not question.is_impossible
    counts.realigned += item.alignment == "realigned"
    record = {"id": question.qid, "paragraph": paragraph_number,
              "answers": [text for text, _ in question.answers],
              "is_impossible": question.is_impossible}
    questions.write(json.dumps(record, ensure_ascii=False) + "\n")
    offsets_bin.add_item(offsets)
    for window in item.windows:
        windows_bin.add_item(window.tokens)
        windows_tsv.write(f"{question_index}\t{window.passage_position}\t{window.doc_start}\t"
                          f"{window.doc_length}\t{window.start}\t{window.end}\n")
    counts.windows += len(item.windows)


if __name__ == "__main__":
    run_cli(main, "preprocess_squad.py")
