"""Masked-LM loss: cross-entropy at the masked positions only, reported in bits per token."""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from roberta.criterion import LN2, Criterion
from roberta.registry import CRITERIONS


@CRITERIONS.register("masked_lm")
class MaskedLMCriterion(Criterion):
    def __init__(self, padding_idx: int = 1) -> None:
        super().__init__()
        self.padding_idx = padding_idx

    @classmethod
    def build(cls, settings: Criterion.Settings, task: Any) -> MaskedLMCriterion:
        return cls(padding_idx=task.dictionary.pad())

    def forward(self, model: torch.nn.Module, sample: dict) -> tuple[torch.Tensor, int, dict]:
        target = sample["target"]
        masked_tokens = target.ne(self.padding_idx)
        sample_size = int(masked_tokens.sum())
        if sample_size == 0:
            # Nothing was masked (tiny blocks): project every position so the loss stays defined.
            masked_tokens = None
        logits, _ = model(**sample["net_input"], masked_tokens=masked_tokens)
        targets = target[masked_tokens] if masked_tokens is not None else target.view(-1)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.view(-1),
                               reduction="sum", ignore_index=self.padding_idx)
        logging_output = {
            # A tensor: read back once per update, not once per micro-batch.
            "loss": loss.detach(),
            "ntokens": sample["ntokens"],
            "nsentences": sample["nsentences"],
            "sample_size": sample_size,
        }
        return loss, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_output: dict) -> dict[str, float]:
        sample_size = max(logging_output.get("sample_size", 0), 1)
        loss = logging_output.get("loss", 0.0) / sample_size / LN2
        return {"loss": loss, "ppl": 2 ** loss if loss < 64 else math.inf}
