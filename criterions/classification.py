"""What fairseq's sentence_prediction and sentence_ranking criterions share: the metrics they log,
in their order, and the per-example records their tasks write."""
from __future__ import annotations

import torch

from roberta.criterion import LN2, loss_and_accuracy


def classification_metrics(logging_output: dict) -> dict[str, float]:
    """`loss` per example, `nll_loss` per token (fairseq logs it whenever the sample size, the
    number of examples, differs from the number of input tokens), then `accuracy`."""
    metrics = loss_and_accuracy(logging_output)
    ntokens = logging_output.get("ntokens", 0)
    if ntokens and ntokens != logging_output.get("sample_size", 0):
        metrics = {"loss": metrics.pop("loss"), "nll_loss": logging_output.get("loss", 0.0) / ntokens / LN2,
                   **metrics}
    return metrics


def prediction_records(ids: torch.Tensor, predictions: list, target: torch.Tensor | None) -> list[dict]:
    """One `{"id", "prediction", "label"}` per example; the label is None on an unlabeled split."""
    labels = target.tolist() if target is not None else [None] * len(predictions)
    return [{"id": example_id, "prediction": prediction, "label": label}
            for example_id, prediction, label in zip(ids.tolist(), predictions, labels)]
