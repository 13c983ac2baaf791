"""Classification (cross-entropy) or regression (squared error) on the sentence head, as fairseq's
`sentence_prediction` criterion; per-example predictions feed the task's GLUE metrics."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from criterions.classification import classification_metrics, prediction_records
from roberta.criterion import Criterion
from roberta.errors import UserError
from roberta.models.heads import SENTENCE_HEAD
from roberta.registry import CRITERIONS


@CRITERIONS.register("sentence_prediction")
class SentencePredictionCriterion(Criterion):
    writes_records = True

    @dataclass(frozen=True, kw_only=True)
    class Settings(Criterion.Settings):
        """The task's flags this criterion reads (fairseq declares them on both)."""
        classification_head_name: str = SENTENCE_HEAD
        regression_target: bool = False

    def __init__(self, head_name: str, regression: bool) -> None:
        super().__init__()
        self.head_name = head_name
        self.regression = regression

    @classmethod
    def build(cls, settings: SentencePredictionCriterion.Settings, task: Any) -> SentencePredictionCriterion:
        return cls(head_name=settings.classification_head_name, regression=settings.regression_target)

    def forward(self, model: torch.nn.Module, sample: dict) -> tuple[torch.Tensor, int, dict]:
        loss, batch, logging_output, _ = self._score(model, sample)
        return loss, batch, logging_output

    def forward_with_records(self, model: torch.nn.Module, sample: dict
                             ) -> tuple[torch.Tensor, int, dict, list[dict]]:
        """Records predict the class index, or the number when regressing."""
        loss, batch, logging_output, logits = self._score(model, sample)
        predictions = logits.view(-1).tolist() if self.regression else logits.argmax(dim=1).tolist()
        return loss, batch, logging_output, prediction_records(sample["id"], predictions, sample.get("target"))

    def _score(self, model: torch.nn.Module, sample: dict) -> tuple[torch.Tensor, int, dict, torch.Tensor]:
        """Loss, sample size, logging output and the head's float32 logits (B x num_classes)."""
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
        return loss, batch, logging_output, logits

    @staticmethod
    def reduce_metrics(logging_output: dict) -> dict[str, float]:
        return classification_metrics(logging_output)
