"""SQuAD 2.0 post-processing: window logits -> n-best answer spans, null odds and predictions.

Per window the criterion keeps the top-k start and end positions and the no-answer logit of the
`<s>` head. Spans are scored by start + end logit and kept when they lie in the passage part of
the window, end >= start, are at most `max_answer_length` tokens long, and start where this
window has the most context around the token (BERT's rule, so a token seen by two overlapping
windows is judged by the one where it sits most centrally). A question pools the spans of all
its windows, sorted by score and de-duplicated by text. Its null odds are the no-answer logit
of the window that produced the best span (the roberta-squad recipe): larger means more likely
unanswerable, in logit units, usable as the official evaluator's na_prob. The prediction is ""
when the null odds exceed `null_score_diff_threshold`.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np


@dataclass
class Windows:
    """Where each window's passage tokens come from (the `<split>.windows.tsv` columns)."""

    question: np.ndarray          # question index of each window
    passage_position: np.ndarray  # index in the window of its first passage token
    doc_start: np.ndarray         # index of that token in the question's passage tokens
    doc_length: np.ndarray        # passage tokens in the window


@dataclass
class Answers:
    predictions: dict[str, str]
    null_odds: dict[str, float]
    nbest: dict[str, list[dict]]


def postprocess(records: list[dict], windows: Windows, questions: list[dict], contexts: list[str],
                offsets, *, n_best_size: int = 20, max_answer_length: int = 30,
                null_score_diff_threshold: float = 0.0) -> Answers:
    """`offsets[q]` is the flat (start, end) character span of each passage token of question q."""
    by_question: dict[int, list[dict]] = defaultdict(list)
    for record in records:
        by_question[int(windows.question[record["id"]])].append(record)
    siblings: dict[int, list[int]] = defaultdict(list)
    for window, question in enumerate(windows.question.tolist()):
        siblings[question].append(window)
    answers = Answers({}, {}, {})
    for index, question in enumerate(questions):
        qid = question["id"]
        window_records = by_question.get(index, [])
        spans = np.asarray(offsets[index]).reshape(-1, 2)
        candidates = []
        for record in window_records:
            candidates += _window_candidates(record, windows, siblings[index], spans,
                                             contexts[question["paragraph"]], max_answer_length)
        nbest = _top_distinct(candidates, n_best_size)
        if nbest:
            null_odds = nbest[0]["no_answer_logit"]
        else:
            null_odds = max((record["no_answer_logit"] for record in window_records), default=math.inf)
        answers.null_odds[qid] = null_odds
        answers.predictions[qid] = "" if not nbest or null_odds > null_score_diff_threshold else nbest[0]["text"]
        answers.nbest[qid] = _with_probabilities(nbest)
    return answers


def _window_candidates(record: dict, windows: Windows, siblings: list[int], spans: np.ndarray, context: str,
                       max_answer_length: int) -> list[dict]:
    window = record["id"]
    first = int(windows.passage_position[window])
    doc_start, doc_length = int(windows.doc_start[window]), int(windows.doc_length[window])
    starts, ends = np.asarray(record["start_index"]), np.asarray(record["end_index"])
    start_logits, end_logits = np.asarray(record["start_logit"]), np.asarray(record["end_logit"])
    start_grid, end_grid = starts[:, None], ends[None, :]
    valid = ((start_grid >= first) & (end_grid < first + doc_length) & (end_grid >= start_grid)
             & (end_grid - start_grid + 1 <= max_answer_length))
    valid &= _max_context(windows, window, siblings, starts - first + doc_start)[:, None]
    rows, cols = np.nonzero(valid)
    candidates = []
    for row, col in zip(rows.tolist(), cols.tolist()):
        start_token = int(starts[row]) - first + doc_start
        end_token = int(ends[col]) - first + doc_start
        candidates.append({
            "text": context[spans[start_token, 0]: spans[end_token, 1]],
            "score": float(start_logits[row] + end_logits[col]),
            "start_logit": float(start_logits[row]), "end_logit": float(end_logits[col]),
            "no_answer_logit": float(record["no_answer_logit"]),
        })
    return candidates


def _max_context(windows: Windows, window: int, siblings: list[int], tokens: np.ndarray) -> np.ndarray:
    """For passage tokens of `window`: is this, among the question's windows (`siblings`), the one
    where they have the most context?"""
    if len(siblings) == 1:
        return np.ones(len(tokens), dtype=bool)

    def score(w: int) -> np.ndarray:
        start, length = windows.doc_start[w], windows.doc_length[w]
        inside = (tokens >= start) & (tokens < start + length)
        context = np.minimum(tokens - start, start + length - 1 - tokens) + 0.01 * length
        return np.where(inside, context, -np.inf)

    best = np.max([score(w) for w in siblings], axis=0)
    return score(window) >= best


def _top_distinct(candidates: list[dict], n_best_size: int) -> list[dict]:
    kept, seen = [], set()
    for candidate in sorted(candidates, key=lambda c: c["score"], reverse=True):
        if candidate["text"] in seen:
            continue
        seen.add(candidate["text"])
        kept.append(candidate)
        if len(kept) == n_best_size:
            break
    return kept


def _with_probabilities(nbest: list[dict]) -> list[dict]:
    if not nbest:
        return []
    scores = np.array([candidate["score"] for candidate in nbest])
    weights = np.exp(scores - scores.max())
    probabilities = weights / weights.sum()
    return [{"text": c["text"], "probability": float(p), "start_logit": c["start_logit"],
             "end_logit": c["end_logit"], "no_answer_logit": c["no_answer_logit"]}
            for c, p in zip(nbest, probabilities)]
