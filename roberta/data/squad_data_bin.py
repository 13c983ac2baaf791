"""Writing the data folder that `--task squad2` reads, whole or not at all: dict.txt and, per
split, `<split>.bin/.idx` (windows), `<split>.windows.tsv`, `<split>.offsets.bin/.idx`,
`<split>.questions.jsonl`, `<split>.contexts.jsonl` and `<split>.meta.json` (the layout is
described in scripts/preprocess_squad.py)."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Callable, Iterable, Mapping, Sequence

import numpy as np

from roberta.data.dictionary import Dictionary
from roberta.data.gpt2_bpe import GPT2BPE
from roberta.data.indexed_dataset import MMapIndexedDatasetBuilder, best_fitting_dtype
from roberta.data.squad_encoding import EncodedParagraph, EncodedQuestion, encode_paragraphs
from roberta.data.squad_json import Paragraph
from roberta.data.squad_windows import WindowSettings
from roberta.errors import UserError
from roberta.fileio import atomic_write, temporary_path
from roberta.process_lifetime import remove_leftovers_of_dead_runs


@dataclass
class SplitCounts:
    questions: int = 0
    windows: int = 0
    answerable: int = 0
    unanswerable: int = 0
    realigned: int = 0
    mismatched: int = 0
    dropped: int = 0


def write_data_bin(data_bin: Path, bpe_dir: Path, splits: Mapping[str, Sequence[Paragraph]],
                   settings: WindowSettings, workers: int,
                   report: Callable[[str, SplitCounts], None]) -> None:
    """Build `data_bin` (absent, or an empty folder) from `splits` with the GPT-2 BPE files of
    `bpe_dir`, calling `report` as each split is done. Split "train" drops the questions whose
    answer is nowhere in the context: they cannot train, but every dev question needs a prediction.

    The folder is built as `data_bin.tmp.<pid>` and renamed at the end; a killed run's leftover
    is removed by the next run."""
    dtype = best_fitting_dtype(len(Dictionary.load(bpe_dir / "dict.txt")))
    GPT2BPE.from_dir(bpe_dir)  # a broken encoder.json or vocab.bpe fails here, not in a worker
    scratch = temporary_path(data_bin)
    try:
        scratch.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers_of_dead_runs(scratch.parent, f"{data_bin.name}.tmp")
        scratch.mkdir()
        with open(bpe_dir / "dict.txt", "rb") as source, atomic_write(scratch / "dict.txt") as copy:
            shutil.copyfileobj(source, copy)
        for name, paragraphs in splits.items():
            encoded = encode_paragraphs(paragraphs, bpe_dir, settings, workers)
            report(name, write_split(scratch, name, paragraphs, encoded, settings,
                                     drop_mismatched=name == "train", dtype=dtype))
        # rmdir succeeds only on an empty folder; the rename is then atomic.
        if data_bin.is_dir():
            data_bin.rmdir()
        os.rename(scratch, data_bin)
    except OSError as error:
        raise UserError(f"cannot write {data_bin} ({error.strerror}); check that its parent "
                        f"folder is writable and has free space") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write_split(folder: Path, name: str, paragraphs: Sequence[Paragraph],
                encoded: Iterable[EncodedParagraph], settings: WindowSettings, *,
                drop_mismatched: bool, dtype: type[np.generic]) -> SplitCounts:
    """The files of split `name` in `folder`, one window per item, and what they hold."""
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
