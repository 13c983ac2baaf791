"""GLUE metrics (roberta/glue_metrics.py): hand-worked cases, then parity with sklearn and scipy.

sklearn and scipy are the official definitions and test-only dependencies, so the parity tests
skip without them; the golden cases below do not need them.
"""
from __future__ import annotations

import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from roberta.errors import UserError
from roberta.glue_metrics import (GLUE_TASKS, MetricSet, accuracy, f1_binary, glue_metrics,
                                  matthews_corrcoef, pearson, resolve_metric_set, spearman)

REPO = Path(__file__).resolve().parent.parent

# Binary: TP = 3 (items 0-2), FN = 2 (items 3-4), FP = 1 (item 5), TN = 4 (items 6-9).
#   accuracy = (3 + 4) / 10 = 0.7
#   F1(positive 1) = 2*3 / (2*3 + 1 + 2) = 2/3;  F1(positive 0): TP=4, FP=2, FN=1 -> 8/11
#   MCC = (3*4 - 1*2) / sqrt((3+1)(3+2)(4+1)(4+2)) = 10 / sqrt(600) = 1/sqrt(6)
BINARY_GOLD = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
BINARY_PRED = [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]
# Three classes, confusion matrix (rows gold, columns predicted) [[2,1,0], [0,2,1], [1,0,3]]:
#   n = 10, correct = 7, gold counts t = [3,3,4], predicted counts p = [3,3,4], t.p = 34
#   MCC = (7*10 - 34) / sqrt((100 - 34) * (100 - 34)) = 36/66 = 6/11
MULTI_GOLD = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
MULTI_PRED = [0, 0, 1, 1, 1, 2, 0, 2, 2, 2]
# x = [1..5], y = [2,4,5,4,5]: centred x = [-2,-1,0,1,2], centred y = [-2,0,1,0,1]
#   Pearson = 6 / sqrt(10 * 6) = 6/sqrt(60)
#   ranks(y) = [1, 2.5, 4.5, 2.5, 4.5] (the 4s share ranks 2,3; the 5s share 4,5), centred
#   [-2,-.5,1.5,-.5,1.5]: Spearman = (4 + .5 + 0 - .5 + 3) / sqrt(10 * 9) = 7/sqrt(90)
CORR_X = [1.0, 2.0, 3.0, 4.0, 5.0]
CORR_Y = [2.0, 4.0, 5.0, 4.0, 5.0]


def test_golden_binary() -> None:
    assert accuracy(BINARY_PRED, BINARY_GOLD) == pytest.approx(0.7, abs=1e-12)
    assert f1_binary(BINARY_PRED, BINARY_GOLD) == pytest.approx(2 / 3, abs=1e-12)
    assert f1_binary(BINARY_PRED, BINARY_GOLD, positive=0) == pytest.approx(8 / 11, abs=1e-12)
    assert matthews_corrcoef(BINARY_PRED, BINARY_GOLD) == pytest.approx(6 ** -0.5, abs=1e-12)


def test_golden_multiclass_mcc() -> None:
    assert matthews_corrcoef(MULTI_PRED, MULTI_GOLD) == pytest.approx(6 / 11, abs=1e-12)
    assert accuracy(MULTI_PRED, MULTI_GOLD) == pytest.approx(0.7, abs=1e-12)


def test_golden_correlations() -> None:
    assert pearson(CORR_X, CORR_Y) == pytest.approx(6 / math.sqrt(60), abs=1e-12)
    assert spearman(CORR_X, CORR_Y) == pytest.approx(7 / math.sqrt(90), abs=1e-12)


@pytest.mark.parametrize("pred, gold, f1, mcc", [
    ([0, 0, 0], [0, 0, 0], 0.0, 0.0),  # no positive anywhere: zero_division -> 0
    ([1, 1, 1], [1, 1, 1], 1.0, 0.0),  # one class: MCC's denominator is 0
    ([0, 1, 0], [0, 0, 0], 0.0, 0.0),  # gold holds one class
    ([1, 1, 1], [0, 1, 0], 0.5, 0.0),  # prediction holds one class
    ([1, 0], [0, 1], 0.0, -1.0),
])
def test_degenerate_binary(pred: list[int], gold: list[int], f1: float, mcc: float) -> None:
    assert f1_binary(pred, gold) == pytest.approx(f1, abs=1e-12)
    assert matthews_corrcoef(pred, gold) == pytest.approx(mcc, abs=1e-12)


def test_constant_or_single_input_correlation_is_nan() -> None:
    for x, y in [([3.0, 3.0, 3.0], [1.0, 2.0, 3.0]), ([1.0, 2.0, 3.0], [0.5] * 3), ([1.0], [2.0])]:
        assert math.isnan(pearson(x, y)) and math.isnan(spearman(x, y))
    assert math.isnan(pearson([1.0, float("nan"), 3.0], [1.0, 2.0, 4.0]))
    assert math.isnan(spearman([1.0, float("nan"), 3.0], [1.0, 2.0, 4.0]))
    assert pearson([1.0, 2.0], [5.0, 3.0]) == pytest.approx(-1.0, abs=1e-12)


def test_f1_rejects_non_binary_values() -> None:
    with pytest.raises(ValueError, match="binary"):
        f1_binary([0, 1, 2], [0, 1, 1])
    with pytest.raises(ValueError, match="positive=1"):
        f1_binary([2, 5], [5, 2])
    assert f1_binary([2, 5, 5], [5, 5, 2], positive=5) == pytest.approx(0.5, abs=1e-12)


def test_input_kinds_agree() -> None:
    pred, gold = np.array(BINARY_PRED), np.array(BINARY_GOLD)
    expected = matthews_corrcoef(BINARY_PRED, BINARY_GOLD)
    assert matthews_corrcoef(pred, gold) == expected
    assert matthews_corrcoef(torch.tensor(pred), torch.tensor(gold)) == expected
    scores = torch.tensor(CORR_X, dtype=torch.bfloat16).unsqueeze(1)  # a regression head's [N, 1]
    assert pearson(scores, torch.tensor(CORR_Y)) == pytest.approx(6 / math.sqrt(60), abs=1e-12)


@pytest.mark.parametrize("pred, gold, message", [
    ([], [], "empty"),
    ([1, 0], [1], "differ in length"),
    (np.zeros((3, 2)), np.zeros(3), "one-dimensional"),
])
def test_bad_shapes_raise(pred: object, gold: object, message: str) -> None:
    for metric in (accuracy, f1_binary, matthews_corrcoef, pearson, spearman):
        with pytest.raises(ValueError, match=message):
            metric(pred, gold)


def _random_classification(rng: np.random.Generator, num_classes: int) -> tuple[np.ndarray, ...]:
    size = int(rng.choice([1, 2, 3, 5, 17, 100, 1000]))
    weights = rng.dirichlet(np.full(num_classes, rng.choice([0.1, 1.0, 10.0])))  # imbalance
    gold = rng.choice(num_classes, size=size, p=weights)
    flip = rng.random(size) < rng.random()  # from near-perfect to near-random predictions
    pred = np.where(flip, rng.choice(num_classes, size=size), gold)
    return pred, gold


def test_classification_matches_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for trial in range(300):
        pred, gold = _random_classification(rng, num_classes=2 if trial % 2 else 3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn warns on single-class input
            assert accuracy(pred, gold) == pytest.approx(metrics.accuracy_score(gold, pred),
                                                         abs=1e-9)
            assert matthews_corrcoef(pred, gold) == pytest.approx(
                metrics.matthews_corrcoef(gold, pred), abs=1e-9), (pred, gold)
            if trial % 2:
                expected = metrics.f1_score(gold, pred, zero_division=0)
                assert f1_binary(pred, gold) == pytest.approx(expected, abs=1e-9), (pred, gold)


def _random_scores(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    size = int(rng.choice([2, 3, 4, 10, 50, 500]))
    x = rng.normal(size=size) * rng.choice([1e-3, 1.0, 1e3]) + rng.choice([0.0, 100.0])
    y = rng.choice([-1.0, 0.0, 0.5, 2.0]) * x + rng.normal(size=size)
    if rng.random() < 0.5:  # ties, as in STS-B's gold scores (multiples of 0.2 on 0..5)
        x, y = np.round(x, 0), np.round(y * 5) / 5
    return x, y


def test_correlations_match_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    for _ in range(500):
        x, y = _random_scores(rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns on constant input
            expected_pearson = stats.pearsonr(x, y)[0]
            expected_spearman = stats.spearmanr(x, y)[0]
        for actual, expected in [(pearson(x, y), expected_pearson),
                                 (spearman(x, y), expected_spearman)]:
            if math.isnan(expected):
                assert math.isnan(actual), (x, y)
            else:
                assert actual == pytest.approx(expected, abs=1e-9), (x, y)


@pytest.mark.parametrize("name, metric_set", [
    ("CoLA", MetricSet.MCC), ("cola", MetricSet.MCC),
    ("SST-2", MetricSet.ACCURACY), ("sst2", MetricSet.ACCURACY), ("SST_2", MetricSet.ACCURACY),
    ("MRPC", MetricSet.F1), ("qqp", MetricSet.F1),
    ("STS-B", MetricSet.CORRELATION), ("stsb", MetricSet.CORRELATION),
    ("MNLI", MetricSet.ACCURACY), ("qnli", MetricSet.ACCURACY), ("RTE", MetricSet.ACCURACY),
    ("wnli", MetricSet.ACCURACY),
    ("accuracy", MetricSet.ACCURACY), ("f1", MetricSet.F1), ("MCC", MetricSet.MCC),
    ("correlation", MetricSet.CORRELATION), (MetricSet.F1, MetricSet.F1),
])
def test_task_names_resolve(name: str | MetricSet, metric_set: MetricSet) -> None:
    assert resolve_metric_set(name) is metric_set


def test_each_glue_task_reports_its_keys() -> None:
    with_f1 = ["accuracy", "f1", "acc_and_f1"]
    expected = {
        "CoLA": ["accuracy", "mcc"], "SST-2": ["accuracy"], "MRPC": with_f1, "QQP": with_f1,
        "STS-B": ["pearson", "spearman", "pearson_and_spearman"], "MNLI": ["accuracy"],
        "QNLI": ["accuracy"], "RTE": ["accuracy"], "WNLI": ["accuracy"],
    }
    assert sorted(GLUE_TASKS) == sorted(expected)
    for task, keys in expected.items():
        pred, gold = (CORR_X, CORR_Y) if task == "STS-B" else (BINARY_PRED, BINARY_GOLD)
        assert list(glue_metrics(task, pred, gold)) == keys, task
        assert list(GLUE_TASKS[task].metric_names) == keys


def test_unknown_task_lists_choices() -> None:
    with pytest.raises(UserError, match=r"unknown GLUE task or metric set 'sst-5'.*CoLA.*WNLI.*"
                                        r"correlation"):
        glue_metrics("sst-5", [1], [1])


def test_glue_metrics_are_percentages() -> None:
    assert glue_metrics("MRPC", BINARY_PRED, BINARY_GOLD) == pytest.approx(
        {"accuracy": 70.0, "f1": 200 / 3, "acc_and_f1": (70.0 + 200 / 3) / 2}, abs=1e-9)
    assert glue_metrics("mrpc", BINARY_PRED, BINARY_GOLD, positive=0)["f1"] == pytest.approx(
        800 / 11, abs=1e-9)
    assert glue_metrics("CoLA", BINARY_PRED, BINARY_GOLD) == pytest.approx(
        {"accuracy": 70.0, "mcc": 100 / math.sqrt(6)}, abs=1e-9)
    assert glue_metrics("mnli", MULTI_PRED, MULTI_GOLD) == pytest.approx({"accuracy": 70.0})
    pearson_pct, spearman_pct = 600 / math.sqrt(60), 700 / math.sqrt(90)
    assert glue_metrics("sts-b", CORR_X, CORR_Y) == pytest.approx(
        {"pearson": pearson_pct, "spearman": spearman_pct,
         "pearson_and_spearman": (pearson_pct + spearman_pct) / 2}, abs=1e-9)


def test_no_scipy_or_sklearn_at_run_time() -> None:
    code = ("import sys, roberta.glue_metrics as m; m.glue_metrics('stsb', [1, 2, 3], [1, 3, 2]);"
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('scipy', 'sklearn')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "[]"
