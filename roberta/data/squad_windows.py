"""Cutting a SQuAD passage into the token windows a question is asked on, as the roberta-squad
fairseq fork and BERT's run_squad.py do: the window settings, where each window starts, and the
tokens and answer positions of one window."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from roberta.errors import UserError


@dataclass(frozen=True, kw_only=True)
class WindowSettings:
    max_positions: int
    doc_stride: int
    max_query_length: int
    question_first: bool

    def __post_init__(self) -> None:
        for flag in ("max_positions", "doc_stride", "max_query_length"):
            if getattr(self, flag) < 1:
                raise UserError(f"--{flag.replace('_', '-')} must be a positive integer, "
                                f"got {getattr(self, flag)}")
        if self.max_positions - self.max_query_length - self.num_special < 1:
            raise UserError(f"--max-positions {self.max_positions} leaves no passage token "
                            f"beside --max-query-length {self.max_query_length} and "
                            f"{self.num_special} special tokens; raise --max-positions or lower "
                            f"--max-query-length")

    @property
    def num_special(self) -> int:
        return 4 if self.question_first else 3

    def max_doc(self, query_length: int) -> int:
        """Passage tokens that fit in a window beside a question of `query_length` tokens."""
        return self.max_positions - query_length - self.num_special


@dataclass(frozen=True)
class Window:
    tokens: np.ndarray  # dictionary indices; an array pickles compactly back from a worker
    passage_position: int
    doc_start: int
    doc_length: int
    start: int
    end: int


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


def build_window(passage: Sequence[int], query: Sequence[int], doc_start: int, doc_length: int,
                 target: tuple[int, int] | None, *, bos: int, eos: int, question_first: bool) -> Window:
    """`<s> passage-window </s> query </s>` (or `<s> query </s> </s> passage-window </s>`), with
    the answer's passage tokens `target` as window positions; 0 0 (`<s>`) when the question has
    no answer or the answer is not wholly inside the window."""
    chunk = passage[doc_start:doc_start + doc_length]
    if question_first:
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
