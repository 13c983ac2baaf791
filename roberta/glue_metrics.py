"""GLUE metrics in pure numpy, following the definitions of the official GLUE evaluation.

The official numbers come from scikit-learn (`accuracy_score`, `f1_score`, `matthews_corrcoef`)
and scipy (`pearsonr`, `spearmanr`); these functions reproduce them without either library,
which stay test-only dependencies. Single metrics return fractions; `glue_metrics` returns the
set a task reports as percentages, unrounded, like fairseq's logged accuracy.

Degenerate inputs, and the choice made for each:
- empty input, mismatched lengths or a non-1-D array: `ValueError`;
- F1 with no true positive and nothing predicted or labelled positive: 0.0 (sklearn's
  `zero_division=0`, which is also what its default "warn" returns);
- MCC whose denominator is 0 (one class in the labels or in the predictions): 0.0, as sklearn;
- Pearson and Spearman of a constant input (including a single example) or of input with a NaN:
  NaN, as scipy (scipy's `pearsonr` raises on fewer than two examples instead; NaN keeps a
  tiny validation set from crashing a run).
"""
from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Union

import numpy as np
import torch

from roberta.errors import UserError

ArrayLike = Union[Sequence[float], np.ndarray, torch.Tensor]


class MetricSet(enum.Enum):
    """The metrics a GLUE task reports; the value is the short name `glue_metrics` accepts."""

    ACCURACY = "accuracy"
    F1 = "f1"
    MCC = "mcc"
    CORRELATION = "correlation"

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The keys of the dict `glue_metrics` returns for this set, in that order."""
        return _METRIC_NAMES[self]


_METRIC_NAMES: dict[MetricSet, tuple[str, ...]] = {
    MetricSet.ACCURACY: ("accuracy",),
    MetricSet.F1: ("accuracy", "f1", "acc_and_f1"),
    MetricSet.MCC: ("accuracy", "mcc"),
    MetricSet.CORRELATION: ("pearson", "spearman", "pearson_and_spearman"),
}

GLUE_TASKS: dict[str, MetricSet] = {
    "CoLA": MetricSet.MCC,
    "SST-2": MetricSet.ACCURACY,
    "MRPC": MetricSet.F1,
    "QQP": MetricSet.F1,
    "STS-B": MetricSet.CORRELATION,
    "MNLI": MetricSet.ACCURACY,
    "QNLI": MetricSet.ACCURACY,
    "RTE": MetricSet.ACCURACY,
    "WNLI": MetricSet.ACCURACY,
}


def _lookup_key(name: str) -> str:
    # Case, "-" and "_" are ignored so "sst2", "SST_2" and "sts-b" all resolve.
    return name.lower().replace("-", "").replace("_", "")


_BY_NAME: dict[str, MetricSet] = {
    **{_lookup_key(task): metric_set for task, metric_set in GLUE_TASKS.items()},
    **{metric_set.value: metric_set for metric_set in MetricSet},
}


def resolve_metric_set(task_name_or_kind: str | MetricSet) -> MetricSet:
    """The metric set of a GLUE task name (any case, "-"/"_" optional) or a set's short name."""
    if isinstance(task_name_or_kind, MetricSet):
        return task_name_or_kind
    metric_set = _BY_NAME.get(_lookup_key(task_name_or_kind))
    if metric_set is None:
        raise UserError(
            f"unknown GLUE task or metric set {task_name_or_kind!r}; choose a task from "
            f"{', '.join(GLUE_TASKS)} or a metric set from {', '.join(s.value for s in MetricSet)}")
    return metric_set


def glue_metrics(task_name_or_kind: str | MetricSet, predictions: ArrayLike, labels: ArrayLike,
                 *, positive: int = 1) -> dict[str, float]:
    """The metrics a GLUE task reports, as percentages (x100), keyed as `MetricSet.metric_names`.

    Classification takes predicted and gold class indices; STS-B takes predicted and gold
    scores. `positive` is the class index F1 counts as positive: the index of the label string
    "1", which under fairseq's frequency-sorted label dictionary is not always 1 (MRPC's "1" is
    its most frequent label, hence index 0).
    """
    metric_set = resolve_metric_set(task_name_or_kind)
    if metric_set is MetricSet.CORRELATION:
        pearson_r, spearman_r = pearson(predictions, labels), spearman(predictions, labels)
        scores = {"pearson": pearson_r, "spearman": spearman_r,
                  "pearson_and_spearman": (pearson_r + spearman_r) / 2}
    else:
        scores = {"accuracy": accuracy(predictions, labels)}
        if metric_set is MetricSet.F1:
            scores["f1"] = f1_binary(predictions, labels, positive)
            scores["acc_and_f1"] = (scores["accuracy"] + scores["f1"]) / 2
        elif metric_set is MetricSet.MCC:
            scores["mcc"] = matthews_corrcoef(predictions, labels)
    return {name: 100.0 * value for name, value in scores.items()}


def accuracy(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of exact matches, in [0, 1] (sklearn `accuracy_score`)."""
    pred, gold = _paired(predictions, labels, "predictions", "labels")
    return float(np.mean(pred == gold))


def f1_binary(predictions: ArrayLike, labels: ArrayLike, positive: int = 1) -> float:
    """F1 of the `positive` class, 2TP / (2TP + FP + FN) (sklearn `f1_score`, average="binary").

    0.0 when nothing is predicted or labelled positive (sklearn's `zero_division=0`). As in
    sklearn, more than two distinct values, or two that do not include `positive`, is a
    `ValueError`: binary F1 of multiclass data is meaningless.
    """
    pred, gold = _paired(predictions, labels, "predictions", "labels")
    present = np.unique(np.concatenate([pred, gold]))
    if len(present) > 2 or (len(present) == 2 and positive not in present):
        raise ValueError(f"f1_binary needs binary labels that include positive={positive}, "
                         f"got the values {present.tolist()}")
    pred_pos, gold_pos = pred == positive, gold == positive
    true_pos = int(np.sum(pred_pos & gold_pos))
    denominator = int(np.sum(pred_pos)) + int(np.sum(gold_pos))  # = 2TP + FP + FN
    return 2.0 * true_pos / denominator if denominator else 0.0


def matthews_corrcoef(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Matthews correlation, binary or multiclass (Gorodkin's R_K, sklearn `matthews_corrcoef`).

    0.0 when the denominator is 0, i.e. the labels or the predictions hold a single class.
    """
    pred, gold = _paired(predictions, labels, "predictions", "labels")
    _, codes = np.unique(np.concatenate([gold, pred]), return_inverse=True)
    num_classes, num_samples = int(codes.max()) + 1, len(gold)
    gold_codes, pred_codes = codes[:num_samples], codes[num_samples:]
    # Float64 throughout, as sklearn: the integer products overflow int64 from ~55k examples.
    gold_counts = np.bincount(gold_codes, minlength=num_classes).astype(np.float64)
    pred_counts = np.bincount(pred_codes, minlength=num_classes).astype(np.float64)
    num_correct = float(np.sum(gold_codes == pred_codes))
    n = float(num_samples)
    cov_gold_pred = num_correct * n - np.dot(gold_counts, pred_counts)
    cov_pred_pred = n * n - np.dot(pred_counts, pred_counts)
    cov_gold_gold = n * n - np.dot(gold_counts, gold_counts)
    denominator = cov_pred_pred * cov_gold_gold
    return float(cov_gold_pred / np.sqrt(denominator)) if denominator else 0.0


def pearson(x: ArrayLike, y: ArrayLike) -> float:
    """Pearson's r (scipy `pearsonr` statistic); NaN for constant input or a single example."""
    xs, ys = _paired(x, y, "x", "y")
    return _pearson(xs.astype(np.float64), ys.astype(np.float64))


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman's rho with average ranks for ties (scipy `spearmanr`); NaN as for `pearson`."""
    xs, ys = _paired(x, y, "x", "y")
    xs, ys = xs.astype(np.float64), ys.astype(np.float64)
    # scipy returns NaN for NaN input ("propagate"); ranking would hide the NaN.
    if np.isnan(xs).any() or np.isnan(ys).any():
        return float("nan")
    return _pearson(_average_ranks(xs), _average_ranks(ys))


def _pearson(xs: np.ndarray, ys: np.ndarray) -> float:
    if np.all(xs == xs[0]) or np.all(ys == ys[0]):
        return float("nan")
    x_centered, y_centered = xs - xs.mean(), ys - ys.mean()
    # Normalising before the dot product, as scipy does, keeps |r| <= 1 up to rounding.
    r = np.dot(x_centered / np.linalg.norm(x_centered), y_centered / np.linalg.norm(y_centered))
    return float(np.clip(r, -1.0, 1.0))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of their ranks (scipy `rankdata`, "average")."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts_group = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    group = np.cumsum(starts_group) - 1
    bounds = np.r_[np.flatnonzero(starts_group), len(values)]
    # A group at sorted positions s..e-1 holds ranks s+1..e, whose mean is (s + e + 1) / 2.
    group_rank = (bounds[:-1] + bounds[1:] + 1) / 2.0
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = group_rank[group]
    return ranks


def _paired(first: ArrayLike, second: ArrayLike, first_name: str,
            second_name: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_1d(first, first_name), _as_1d(second, second_name)
    if len(a) != len(b):
        raise ValueError(f"{first_name} and {second_name} differ in length: {len(a)} vs {len(b)}")
    return a, b


def _as_1d(values: ArrayLike, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        if values.dtype == torch.bfloat16:
            values = values.float()  # numpy has no bfloat16
        values = values.numpy()
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]  # a regression head's [N, 1] output
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty; metrics need at least one example")
    return array
