"""Ranking loss for multiple choice (RACE): score every option with a 1-output head, softmax over options."""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from criterions.classification import classification_metrics
from roberta.criterion import Criterion
from roberta.errors import UserError
from roberta.registry import CRITERIONS


@CRITERIONS.register("sentence_ranking")
class SentenceRankingCriterion(Criterion):
    def __init__(self, head_name: str) -> None:
        super().__init__()
        self.head_name = head_name
        self._records: list[dict] | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace, task) -> "SentenceRankingCriterion":
        return cls(head_name=args.ranking_head_name)

    def collect_predictions(self, records: list[dict] | None) -> None:
        self._records = records

    def forward(self, model: torch.nn.Module, sample: dict) -> tuple[torch.Tensor, int, dict]:
        src_tokens = sample["net_input"]["src_tokens"]
        batch, num_options, width = src_tokens.shape
        # All options in one forward pass: one large batch instead of fairseq's N small ones.
        scores, _ = model(src_tokens.view(batch * num_options, width), classification_head_name=self.head_name)
        logits = scores.view(batch, num_options).float()
        target = sample.get("target")
        logging_output = {"ntokens": sample["ntokens"], "nsentences": batch, "sample_size": batch}
        if target is None:
            if self.training:
                raise UserError("the training split has no labels (label/<split>.label is missing); "
                                "pass a labeled split as --train-subset")
            # Scoring unlabeled data (a test set).
            loss = logits.sum() * 0.0
        else:
            loss = F.cross_entropy(logits, target, reduction="sum")
            logging_output["ncorrect"] = (logits.argmax(dim=1) == target).sum().detach()
        logging_output["loss"] = loss.detach()
        if self._records is not None:
            self._record(sample["id"], logits, target)
        return loss, batch, logging_output

    def _record(self, ids: torch.Tensor, logits: torch.Tensor, target: torch.Tensor | None) -> None:
        predictions = logits.argmax(dim=1).tolist()
        labels = target.tolist() if target is not None else [None] * len(predictions)
        for example_id, prediction, label in zip(ids.tolist(), predictions, labels):
            self._records.append({"id": example_id, "prediction": prediction, "label": label})

    @staticmethod
    def reduce_metrics(logging_output: dict) -> dict[str, float]:
        return classification_metrics(logging_output)
