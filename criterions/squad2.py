"""SQuAD 2.0 loss: start/end cross-entropy over the window plus a no-answer logistic loss on `<s>`.

Per window, as the roberta-squad recipe: (CE(start) + CE(end)) / 2 + 0.5 x BCE(no-answer logit,
window has no answer); a window without the answer points start and end at `<s>` (position 0).
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from roberta.criterion import LN2, Criterion
from roberta.registry import CRITERIONS
from tasks.squad2 import ANSWERABLE_HEAD, SPAN_HEAD


@CRITERIONS.register("squad2")
class Squad2Criterion(Criterion):
    def __init__(self, padding_idx: int = 1, top_k: int = 20) -> None:
        super().__init__()
        self.padding_idx = padding_idx
        self.top_k = top_k
        self._records: list[dict] | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace, task) -> "Squad2Criterion":
        return cls(padding_idx=task.dictionary.pad(), top_k=task.n_best_size)

    def collect_predictions(self, records: list[dict] | None) -> None:
        self._records = records

    def forward(self, model: torch.nn.Module, sample: dict) -> tuple[torch.Tensor, int, dict]:
        src_tokens = sample["net_input"]["src_tokens"]
        (span_logits, no_answer_logits), _ = model(src_tokens, features_heads=(SPAN_HEAD, ANSWERABLE_HEAD))
        span_logits = span_logits.float()
        padding = src_tokens.eq(self.padding_idx)
        start_logits = span_logits[..., 0].masked_fill(padding, float("-inf"))
        end_logits = span_logits[..., 1].masked_fill(padding, float("-inf"))
        no_answer_logits = no_answer_logits.float().squeeze(-1)
        span_loss = (F.cross_entropy(start_logits, sample["start_positions"], reduction="sum")
                     + F.cross_entropy(end_logits, sample["end_positions"], reduction="sum")) / 2
        answer_loss = F.binary_cross_entropy_with_logits(no_answer_logits, sample["unanswerable"], reduction="sum")
        loss = span_loss + 0.5 * answer_loss
        batch = src_tokens.size(0)
        if self._records is not None:
            self._record(sample["id"], start_logits, end_logits, no_answer_logits)
        logging_output = {"loss": loss.detach(), "span_loss": span_loss.detach(), "answer_loss": answer_loss.detach(),
                          "ntokens": sample["ntokens"], "nsentences": batch, "sample_size": batch}
        return loss, batch, logging_output

    def _record(self, ids: torch.Tensor, start_logits: torch.Tensor, end_logits: torch.Tensor,
                no_answer_logits: torch.Tensor) -> None:
        k = min(self.top_k, start_logits.size(1))
        start_logit, start_index = start_logits.topk(k, dim=1)
        end_logit, end_index = end_logits.topk(k, dim=1)
        rows = zip(ids.tolist(), start_index.tolist(), start_logit.tolist(), end_index.tolist(),
                   end_logit.tolist(), no_answer_logits.tolist())
        for window, s_index, s_logit, e_index, e_logit, no_answer in rows:
            self._records.append({"id": window, "start_index": s_index, "start_logit": s_logit,
                                  "end_index": e_index, "end_logit": e_logit, "no_answer_logit": no_answer})

    @staticmethod
    def reduce_metrics(logging_output: dict) -> dict[str, float]:
        sample_size = max(logging_output.get("sample_size", 0), 1)
        return {name: logging_output.get(name, 0.0) / sample_size / LN2
                for name in ("loss", "span_loss", "answer_loss")}
