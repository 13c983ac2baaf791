"""Ranking loss for multiple choice (RACE): score every option with a 1-output head, softmax over options."""
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


@CRITERIONS.register("sentence_ranking")
class SentenceRankingCriterion(Criterion):
    writes_records = True

    @dataclass(frozen=True, kw_only=True)
    class Settings(Criterion.Settings):
        """The task's flag naming the scoring head."""
        ranking_head_name: str = SENTENCE_HEAD

    def __init__(self, head_name: str) -> None:
        super().__init__()
        self.head_name = head_name

    @classmethod
    def build(cls, settings: SentenceRankingCriterion.Settings, task: Any) -> SentenceRankingCriterion:
        return cls(head_name=settings.ranking_head_name)

    def forward(self, model: torch.nn.Module, sample: dict) -> tuple[torch.Tensor, int, dict]:
        loss, batch, logging_output, _ = self._score(model, sample)
        return loss, batch, logging_output

    def forward_with_records(self, model: torch.nn.Module, sample: dict
                             ) -> tuple[torch.Tensor, int, dict, list[dict]]:
        """Records predict the index of the best-scored option."""
        loss, batch, logging_output, logits = self._score(model, sample)
        predictions = logits.argmax(dim=1).tolist()
        return loss, batch, logging_output, prediction_records(sample["id"], predictions, sample.get("target"))

    def _score(self, model: torch.nn.Module, sample: dict) -> tuple[torch.Tensor, int, dict, torch.Tensor]:
        """Loss, sample size, logging output and the float32 option scores (B x num_options)."""
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
        return loss, batch, logging_output, logits

    @staticmethod
    def reduce_metrics(logging_output: dict) -> dict[str, float]:
        return classification_metrics(logging_output)
