"""Reading a SQuAD (1.1 or 2.0) JSON file into paragraphs and questions, checking its whole
layout first, so that a malformed file fails with one line naming the place, before any work."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roberta.errors import UserError

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
    is_impossible = _field(qa, "is_impossible", bool, path, where) if isinstance(qa, dict) and "is_impossible" in qa else not answers
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
