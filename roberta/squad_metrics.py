"""SQuAD 2.0 evaluation with the semantics of the official `evaluate-v2.0.py`, in our own code.

Per question, EM and F1 are each the best over the gold answers (texts that normalise to
nothing are dropped; none left means the gold is `""`, i.e. "no answer"). `squad2_metrics`
thresholds the scores with `na_probs` (strict `>`) and, when `na_probs` is given, adds the
oracle best thresholds found by the official sweep. All scores are percentages.

The official `best_*_thresh` does not always reproduce its `best_*` when given back as the
threshold: its sweep starts at 0.0, so where abstaining everywhere is best it reports 0.0, which
answers every question whose na_prob is at most 0 (with logits, often all of them). After the official
keys come `best_exact_null_score_diff_threshold` and `best_f1_null_score_diff_threshold`: a
threshold that, given back (as `na_prob_thresh`, `-t`, or roberta-validate's
--null-score-diff-threshold, all "abstain where the score exceeds it"), gives the best score any
threshold can. That is `best_*` itself unless na_probs tie at the official cut or a non-empty
answer to an unanswerable question normalises to nothing (e.g. "the").

Where the official script is loose we are strict, and say so: a question without a prediction
(the official script prints a message, then fails with a KeyError) or without an na_prob is a
`UserError`; predictions and na_probs for question ids outside the dataset are ignored as the
official script does, but counted in a logged warning. A duplicated question id keeps its last
occurrence, as in the official script.
"""
from __future__ import annotations

import itertools
import logging
import math
import re
import string
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

from roberta.errors import UserError

logger = logging.getLogger(__name__)

_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_SHOWN_IDS = 3  # how many offending question ids a message lists


def normalize_answer(text: str) -> str:
    """Lower-case, drop ASCII punctuation, drop the words a/an/the, collapse whitespace.

    The order matters: punctuation goes first, so `"the-end"` becomes `"theend"`.
    """
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_score(gold: str, pred: str) -> int:
    """1 if the two answers are equal after normalisation, else 0."""
    return int(normalize_answer(gold) == normalize_answer(pred))


def f1_score(gold: str, pred: str) -> float:
    """Token-overlap F1 of the normalised answers; both empty scores 1, one empty scores 0."""
    return _token_f1(Counter(normalize_answer(gold).split()), Counter(normalize_answer(pred).split()))


def has_answer(answers: Sequence[str]) -> bool:
    """Whether a question is answerable: its raw gold list is non-empty (nothing normalised)."""
    return len(answers) > 0


def gold_answers(dataset_json: Mapping[str, Any], source: str = "dataset") -> dict[str, list[str]]:
    """Question id -> raw gold answer texts, from the official `data/paragraphs/qas` layout.

    An empty list marks an unanswerable question (see `has_answer`). `is_impossible` and
    `plausible_answers` are ignored, as in the official script. `source` names the data in
    error messages (e.g. the file it was read from).
    """
    gold: dict[str, list[str]] = {}
    for a, article in enumerate(_list_field(dataset_json, "data", source)):
        for p, paragraph in enumerate(_list_field(article, "paragraphs", f"{source}: data[{a}]")):
            where = f"{source}: data[{a}].paragraphs[{p}]"
            for q, qa in enumerate(_list_field(paragraph, "qas", where)):
                qid, texts = _question(qa, f"{where}.qas[{q}]")
                gold[qid] = texts
    return gold


def squad2_metrics(gold: Mapping[str, Sequence[str]], predictions: Mapping[str, str],
                   na_probs: Mapping[str, float] | None = None,
                   na_prob_thresh: float = 1.0) -> dict[str, float]:
    """The official SQuAD 2.0 metrics, keys in the official order.

    `exact, f1, total`, then `HasAns_*` and `NoAns_*` (each only if that class occurs), then
    `best_exact, best_exact_thresh, best_f1, best_f1_thresh` and our
    `best_{exact,f1}_null_score_diff_threshold` when `na_probs` is given.
    A question whose na_prob is greater than `na_prob_thresh` counts as an abstention. Without
    `na_probs` every na_prob is 0.0, as in the official script (so a negative threshold makes
    every question abstain). Raises `UserError` if a question lacks a prediction or an na_prob.
    """
    if not gold:
        raise UserError("the dataset holds no questions; evaluate a SQuAD file with at least one")
    if math.isnan(na_prob_thresh):
        raise UserError("na_prob_thresh is NaN; give a number")
    _check_covered(gold, predictions, "prediction", 'predict "" for no answer')
    if na_probs is not None:
        _check_covered(gold, na_probs, "na_prob", "give every question a no-answer score")
        _check_numbers(na_probs, gold)
    answerable = {qid: has_answer(texts) for qid, texts in gold.items()}
    exact_raw, f1_raw = _raw_scores(gold, predictions)
    probs = na_probs if na_probs is not None else dict.fromkeys(gold, 0.0)
    exact = _thresholded(exact_raw, probs, answerable, na_prob_thresh)
    f1 = _thresholded(f1_raw, probs, answerable, na_prob_thresh)
    metrics = _block(exact, f1, list(gold), "")
    for prefix, wanted in (("HasAns_", True), ("NoAns_", False)):
        qids = [qid for qid, answers in answerable.items() if answers == wanted]
        if qids:
            metrics.update(_block(exact, f1, qids, prefix))
    if na_probs is not None:
        raw_scores = (("exact", exact_raw), ("f1", f1_raw))
        for name, raw in raw_scores:
            best, thresh = _best_threshold(raw, predictions, na_probs, answerable)
            metrics[f"best_{name}"] = best
            metrics[f"best_{name}_thresh"] = thresh
        for name, raw in raw_scores:  # after all the official keys, which keep their order
            metrics[f"best_{name}_null_score_diff_threshold"] = _reproducing_threshold(raw, na_probs, answerable)
    return metrics


def _list_field(obj: Any, key: str, where: str) -> list:
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object with a '{key}' list, found "
                        f"{type(obj).__name__}; use the official SQuAD layout")
    value = obj.get(key)
    if not isinstance(value, list):
        found = "nothing" if value is None else type(value).__name__
        raise UserError(f"{where}: '{key}' must be a list, found {found}; "
                        f"use the official SQuAD layout (data/paragraphs/qas/answers)")
    return value


def _question(qa: Any, where: str) -> tuple[str, list[str]]:
    answers = _list_field(qa, "answers", where)
    qid = qa.get("id")
    if not isinstance(qid, str):
        raise UserError(f"{where}: 'id' must be a string, found {qid!r}; "
                        f"use the official SQuAD layout")
    texts = []
    for n, answer in enumerate(answers):
        text = answer.get("text") if isinstance(answer, dict) else None
        if not isinstance(text, str):
            raise UserError(f"{where}.answers[{n}] (question {qid}): expected an object with a "
                            f"string 'text', found {answer!r}")
        texts.append(text)
    return qid, texts


def _check_covered(gold: Mapping[str, Any], given: Mapping[str, Any], what: str, fix: str) -> None:
    missing = [qid for qid in gold if qid not in given]
    if missing:
        raise UserError(f"no {what} for {len(missing)} of {len(gold)} questions "
                        f"(first: {_first_ids(missing)}); {fix}")
    if len(given) > len(gold):  # every question is covered, so the rest are unknown ids
        extra = [qid for qid in given if qid not in gold]
        logger.warning("ignored %d %ss for question ids not in the dataset (first: %s)",
                       len(extra), what, _first_ids(extra))


def _check_numbers(na_probs: Mapping[str, Any], gold: Mapping[str, Any]) -> None:
    for qid in gold:
        value = na_probs[qid]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise UserError(f"na_prob of question {qid} is {value!r}; every na_prob must be a number")


def _first_ids(qids: Iterable[str]) -> str:
    shown = list(itertools.islice(qids, _SHOWN_IDS + 1))
    text = ", ".join(shown[:_SHOWN_IDS])
    return text + ", ..." if len(shown) > _SHOWN_IDS else text


def _token_f1(gold: Counter, pred: Counter) -> float:
    if not gold or not pred:
        return float(gold == pred)
    common = sum((gold & pred).values())
    if common == 0:
        return 0.0
    precision = common / sum(pred.values())
    recall = common / sum(gold.values())
    return 2 * precision * recall / (precision + recall)


def _raw_scores(gold: Mapping[str, Sequence[str]],
                predictions: Mapping[str, str]) -> tuple[dict[str, int], dict[str, float]]:
    exact: dict[str, int] = {}
    f1: dict[str, float] = {}
    for qid, texts in gold.items():
        pred = predictions[qid]
        if not isinstance(pred, str):
            raise UserError(f"the prediction for question {qid} is {pred!r}; "
                            f'predictions must be strings ("" for no answer)')
        # Each distinct normalised gold once: SQuAD repeats the same answer several times.
        golds = [text for text in dict.fromkeys(map(normalize_answer, texts)) if text] or [""]
        pred_norm = normalize_answer(pred)
        pred_tokens = Counter(pred_norm.split())
        exact[qid] = int(pred_norm in golds)
        f1[qid] = max(_token_f1(Counter(text.split()), pred_tokens) for text in golds)
    return exact, f1


def _thresholded(scores: Mapping[str, float], na_probs: Mapping[str, float],
                 answerable: Mapping[str, bool], thresh: float) -> dict[str, float]:
    # An abstention is right exactly when the question is unanswerable.
    return {qid: float(not answerable[qid]) if na_probs[qid] > thresh else score
            for qid, score in scores.items()}


def _block(exact: Mapping[str, float], f1: Mapping[str, float], qids: list[str],
           prefix: str) -> dict[str, float]:
    total = len(qids)
    return {f"{prefix}exact": 100.0 * sum(exact[qid] for qid in qids) / total,
            f"{prefix}f1": 100.0 * sum(f1[qid] for qid in qids) / total,
            f"{prefix}total": total}


def _best_threshold(scores: Mapping[str, float], predictions: Mapping[str, str],
                    na_probs: Mapping[str, float],
                    answerable: Mapping[str, bool]) -> tuple[float, float]:
    """The official sweep: start with every question abstaining, then answer them one by one in
    ascending na_prob order (stable), keeping the best running score and the na_prob reached."""
    best: float = sum(1 for answers in answerable.values() if not answers)
    current = best
    best_thresh = 0.0
    # Only the evaluated ids: ignored extras may hold anything, and skipping them keeps the order.
    for qid in sorted((qid for qid in na_probs if qid in scores), key=na_probs.__getitem__):
        if answerable[qid]:
            current += scores[qid]
        elif predictions[qid]:
            # The raw string, not the normalised one: answering "the" still costs the abstention.
            current -= 1
        if current > best:
            best = current
            best_thresh = na_probs[qid]
    return 100.0 * best / len(scores), best_thresh


def _reproducing_threshold(scores: Mapping[str, float], na_probs: Mapping[str, float],
                          answerable: Mapping[str, bool]) -> float:
    """The threshold at which `_thresholded` scores best, as the official script would score a
    rerun with it: answer where the na_prob is at most the threshold, abstain elsewhere.

    Questions with equal na_probs are answered together, as a threshold must. Of the best cuts the
    lowest is taken (the official sweep's choice), and the threshold sits halfway to the next
    higher na_prob, so that na_probs a rerun computes slightly differently still give the same cut.
    """
    values = sorted({float(na_probs[qid]) for qid in scores})
    gains = dict.fromkeys(values, 0.0)
    for qid, score in scores.items():
        # Answering instead of abstaining: an abstention scores 1 exactly where there is no answer.
        gains[na_probs[qid]] += score - (not answerable[qid])
    current = best = 0.0
    best_index = -1  # abstain everywhere
    for index, value in enumerate(values):
        current += gains[value]
        if current > best:
            best, best_index = current, index
    if best_index < 0:
        return _below(values[0])
    if best_index + 1 == len(values):
        return values[best_index]
    return _between(values[best_index], values[best_index + 1])


def _below(value: float) -> float:
    """A round threshold below `value`: abstain everywhere."""
    if not math.isfinite(value):
        # Any finite threshold is below +inf; nothing is below -inf.
        return 0.0 if value > 0 else value
    below = math.floor(value) - 1.0
    return below if below < value else math.nextafter(value, -math.inf)


def _between(low: float, high: float) -> float:
    """Halfway between two na_probs, or `low` itself where no float lies between them."""
    middle = low + (high - low) / 2
    return middle if low <= middle < high else low
