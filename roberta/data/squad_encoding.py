"""Encoding SQuAD paragraphs: the context is GPT-2 BPE-encoded once with the characters each token
covers, then every question becomes its windows and answer positions, in one process or several
(the output does not depend on how many)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from roberta.data.dictionary import Dictionary
from roberta.data.gpt2_bpe import GPT2BPE
from roberta.data.squad_alignment import Alignment, answer_tokens
from roberta.data.squad_json import Paragraph, Question
from roberta.data.squad_windows import Window, WindowSettings, build_window, doc_windows
from roberta.process_lifetime import worker_pool

QUESTION_PREFIX = "Q: "


@dataclass(frozen=True)
class EncodedQuestion:
    question: Question
    alignment: Alignment
    windows: list[Window]


@dataclass(frozen=True)
class EncodedParagraph:
    offsets: np.ndarray  # int32 [2 * passage tokens]: start, end characters of each token
    questions: list[EncodedQuestion]


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
        alignment, target = answer_tokens(question, context, spans)
        bos, eos = self.dictionary.bos(), self.dictionary.eos()
        windows = [build_window(passage, query, doc_start, doc_length, target, bos=bos, eos=eos,
                                question_first=self.settings.question_first)
                   for doc_start, doc_length in doc_windows(len(passage), self.settings.max_doc(len(query)),
                                                            self.settings.doc_stride)]
        return EncodedQuestion(question, alignment, windows)

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
    assert _WORKER_ENCODER is not None  # set in each worker process by _start_worker
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
