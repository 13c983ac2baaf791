"""Where a SQuAD question's gold answer sits in its passage: from the answer's characters to the
first and last passage tokens covering them, moving an answer whose text is not at its
answer_start to the nearest place the text occurs."""
from __future__ import annotations

from typing import Literal, Sequence

from roberta.data.squad_json import Question

Alignment = Literal["exact", "realigned", "mismatched", "impossible"]


def answer_tokens(question: Question, context: str,
                  spans: Sequence[tuple[int, int]]) -> tuple[Alignment, tuple[int, int] | None]:
    """The alignment of the first gold answer and its first and last passage tokens; `spans` are
    the [start, end) characters of each passage token."""
    if question.is_impossible:
        return "impossible", None
    text, answer_start = question.answers[0]
    located = locate_answer(context, text, answer_start)
    tokens = None if located is None else token_span(spans, located[0], located[0] + len(text))
    if located is None or tokens is None:  # not in the context, or only whitespace
        return "mismatched", None
    return ("realigned" if located[1] else "exact"), tokens


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
