"""The no-answer threshold that reproduces `best_f1` (roberta/squad_metrics.py), against our
prediction rule and against the official sweep.

A validation run predicts "" where a question's null odds exceed --null-score-diff-threshold
(roberta/squad_postprocess.py: `"" if not nbest or null_odds > threshold else nbest[0]["text"]`),
then scores those predictions with the null odds as na_probs. `rerun` below is that rule, so the
properties say: passing `best_f1_null_score_diff_threshold` back gives `best_f1`.
"""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings, strategies as st

from roberta.squad_metrics import exact_score, f1_score, normalize_answer, squad2_metrics

WORDS = ["rollo", "normandy", "tenth", "century", "river", "seine", "paris", "frank"]
INF = float("inf")


def official_find_best_thresh(preds: dict, scores: dict, na_probs: dict, qid_to_has_ans: dict) -> tuple:
    """`find_best_thresh` of the official evaluate-v2.0.py, as written there."""
    num_no_ans = sum(1 for k in qid_to_has_ans if not qid_to_has_ans[k])
    cur_score = num_no_ans
    best_score = cur_score
    best_thresh = 0.0
    qid_list = sorted(na_probs, key=lambda k: na_probs[k])
    for qid in qid_list:
        if qid not in scores:
            continue
        if qid_to_has_ans[qid]:
            diff = scores[qid]
        else:
            diff = -1 if preds[qid] else 0
        cur_score += diff
        if cur_score > best_score:
            best_score = cur_score
            best_thresh = na_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


def predict(texts: dict[str, str], null_odds: dict[str, float], threshold: float) -> dict[str, str]:
    """Our prediction rule: "" without a candidate span or where the null odds exceed the threshold."""
    return {qid: "" if not text or null_odds[qid] > threshold else text for qid, text in texts.items()}


def rerun(gold: dict, texts: dict, null_odds: dict, threshold: float) -> dict[str, float]:
    """A validation run at `threshold`, scored as roberta-validate scores it."""
    return squad2_metrics(gold, predict(texts, null_odds, threshold), null_odds, na_prob_thresh=INF)


answer = st.lists(st.sampled_from(WORDS), min_size=1, max_size=3).map(" ".join)


@st.composite
def squad_runs(draw: st.DrawFn, *, distinct_odds: bool, odd_answers: bool = False) -> tuple:
    """(gold, best span texts, null odds, the first run's threshold) for 1..15 questions."""
    count = draw(st.integers(1, 15))
    qids = [f"q{index}" for index in range(count)]
    gold = {qid: draw(st.lists(answer, max_size=2)) for qid in qids}
    # "" is a question without any candidate span; "the" normalises to nothing.
    span = st.one_of(answer, st.just(""), st.just("the")) if odd_answers else st.one_of(answer, st.just(""))
    texts = {qid: draw(span) for qid in qids}
    odds = st.floats(-30, 30, allow_nan=False)
    if draw(st.booleans()):
        odds = st.floats(-30, -0.01)  # logits all negative: the case the official 0.0 gets wrong
    values = draw(st.lists(odds, min_size=count, max_size=count, unique=distinct_odds))
    if not distinct_odds:
        values = [draw(st.sampled_from(values)) for _ in values]  # ties
    null_odds = dict(zip(qids, values))
    first_threshold = draw(st.one_of(st.just(0.0), st.floats(-30, 30)))
    return gold, texts, null_odds, first_threshold


@settings(max_examples=100, deadline=None)
@given(squad_runs(distinct_odds=True))
def test_the_new_thresholds_reproduce_best_f1_and_best_exact(run: tuple) -> None:
    gold, texts, null_odds, first_threshold = run
    metrics = rerun(gold, texts, null_odds, first_threshold)
    again_f1 = rerun(gold, texts, null_odds, metrics["best_f1_null_score_diff_threshold"])
    again_exact = rerun(gold, texts, null_odds, metrics["best_exact_null_score_diff_threshold"])
    assert again_f1["f1"] == pytest.approx(metrics["best_f1"], abs=1e-9)
    assert again_exact["exact"] == metrics["best_exact"]
    for key in ("best_f1_null_score_diff_threshold", "best_exact_null_score_diff_threshold"):
        assert math.isfinite(metrics[key])


@settings(max_examples=100, deadline=None)
@given(squad_runs(distinct_odds=False, odd_answers=True))
def test_with_ties_the_new_threshold_is_the_best_any_threshold_gives(run: tuple) -> None:
    gold, texts, null_odds, first_threshold = run
    metrics = rerun(gold, texts, null_odds, first_threshold)
    chosen = rerun(gold, texts, null_odds, metrics["best_f1_null_score_diff_threshold"])["f1"]
    # The run's predictions abstain above its threshold, so that is as far as its metrics can see.
    candidates = [min(null_odds.values()) - 1, *(value for value in null_odds.values() if value <= first_threshold)]
    best_possible = max(rerun(gold, texts, null_odds, threshold)["f1"] for threshold in candidates)
    assert chosen == pytest.approx(best_possible, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(squad_runs(distinct_odds=False, odd_answers=True))
def test_the_official_keys_are_the_official_scripts(run: tuple) -> None:
    gold, texts, null_odds, first_threshold = run
    predictions = predict(texts, null_odds, first_threshold)
    metrics = squad2_metrics(gold, predictions, null_odds, na_prob_thresh=INF)
    has_answer = {qid: bool(answers) for qid, answers in gold.items()}
    for name, score in (("exact", exact_score), ("f1", f1_score)):
        # get_raw_scores of evaluate-v2.0.py: the best over the gold answers that normalise to something.
        raw = {qid: max(score(text, predictions[qid]) for text in
                        [text for text in answers if normalize_answer(text)] or [""])
               for qid, answers in gold.items()}
        official = official_find_best_thresh(predictions, raw, null_odds, has_answer)
        assert metrics[f"best_{name}"] == pytest.approx(official[0], abs=1e-9)
        assert metrics[f"best_{name}_thresh"] == official[1]
    assert list(metrics)[-2:] == ["best_exact_null_score_diff_threshold", "best_f1_null_score_diff_threshold"]


def test_abstaining_everywhere_with_negative_logits() -> None:
    gold = {"h": ["rollo"], "n1": [], "n2": []}
    texts = {"h": "paris", "n1": "seine", "n2": "river"}
    null_odds = {"h": -2.0, "n1": -1.5, "n2": -0.25}
    metrics = rerun(gold, texts, null_odds, 0.0)
    assert metrics["f1"] == 0.0
    assert (metrics["best_f1"], metrics["best_f1_thresh"]) == (pytest.approx(200 / 3), 0.0)
    # The official threshold answers every question again; ours abstains everywhere.
    assert rerun(gold, texts, null_odds, metrics["best_f1_thresh"])["f1"] == 0.0
    assert metrics["best_f1_null_score_diff_threshold"] == -3.0
    assert rerun(gold, texts, null_odds, -3.0)["f1"] == pytest.approx(200 / 3)


def test_the_threshold_lies_halfway_to_the_next_null_odds() -> None:
    gold = {"h1": ["rollo"], "h2": ["seine"], "n": []}
    texts = {"h1": "rollo", "h2": "seine", "n": "paris"}
    null_odds = {"h1": -4.0, "h2": -1.0, "n": 3.0}
    metrics = rerun(gold, texts, null_odds, 0.0)
    assert (metrics["best_f1"], metrics["best_f1_thresh"]) == (100.0, -1.0)
    assert metrics["best_f1_null_score_diff_threshold"] == 1.0
