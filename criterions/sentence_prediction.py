"""Classification (cross-entropy) or regression (squared error) on the sentence head, as fairseq's
`sentence_prediction` criterion; per-example predictions feed the task's GLUE metrics."""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from criterions.classification import classification_metrics
from roberta.criterion import Criterion
from roberta.errors import UserError
from roberta.registry import CRITERIONS


@CRITERIONS.register("sentence_prediction")
class SentencePredictionCriterion(Criterion):
    def __init__(self, head_name: str, regression: bool) -> None:
        super().__init__()
        self.head_name = head_name
        self.regression = regression
        self._records: list[dict] | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace, task) -> "SentencePredictionCriterion":
        return cls(head_name=args.classification_head_name, regression=args.regression_target)

    def collect_predictions(self, records: list[dict] | None) -> None:
        self._records = records

    def forward(self, model: torch.nn.Module, sample: dict) -> tuple[torch.Tensor, int, dict]:
        logits, _ = model(sample["net_input"]["src_tokens"], features_only=True,
                          classification_head_name=self.head_name)
        logits = logits.float()
        target = sample.get("target")
        batch = logits.size(0)
        logging_output = {"ntokens": sample["ntokens"], "nsentences": batch, "sample_size": batch}
        if target is None:
            if self.training:
                raise UserError("the training split has no labels (label/<split> is missing); "
                                "pass a labeled split as --train-subset")
            loss = logits.sum() * 0.0
        elif self.regression:
            loss = F.mse_loss(logits.view(-1), target.float().view(-1), reduction="sum")
        else:
            loss = F.cross_entropy(logits, target.long(), reduction="sum")
            logging_output["ncorrect"] = (logits.argmax(dim=1) == target).sum().detach()
        logging_output["loss"] = loss.detach()
        if self._records is not None:
            self._record(sample["id"], logits, target)
        return loss, batch, logging_output

    def _record(self, ids: torch.Tensor, logits: torch.Tensor, target: torch.Tensor | None) -> None:
        predictions = logits.view(-1).tolist() if self.regression else logits.argmax(dim=1).tolist()
        labels = target.tolist() if target is not None else [None] * len(predictions)
        for example_id, prediction, label in zip(ids.tolist(), predictions, labels):
            self._records.append({"id": example_id, "prediction": prediction, "label": label})

    @staticmethod
    def reduce_metrics(logging_output: dict) -> dict[str, float]:
        return classification_metrics(logging_output)
