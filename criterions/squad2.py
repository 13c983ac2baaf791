"""SQuAD 2.0 loss: start/end cross-entropy over the window plus a no-answer logistic loss on `<s>`.

Per window, as the roberta-squad recipe: (CE(start) + CE(end)) / 2 + 0.5 x BCE(no-answer logit,
window has no answer); a window without the answer points start and end at `<s>` (position 0).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from roberta.criterion import LN2, Criterion
from roberta.models.heads import SQUAD_ANSWERABLE_HEAD, SQUAD_SPAN_HEAD
from roberta.registry import CRITERIONS


@CRITERIONS.register("squad2")
class Squad2Criterion(Criterion):
    writes_records = True

    def __init__(self, padding_idx: int = 1, top_k: int = 20) -> None:
        super().__init__()
        self.padding_idx = padding_idx
        self.top_k = top_k

    @classmethod
    def build(cls, settings: Criterion.Settings, task: Any) -> Squad2Criterion:
        return cls(padding_idx=task.dictionary.pad(), top_k=task.settings.n_best_size)

    def forward(self, model: torch.nn.Module, sample: dict) -> tuple[torch.Tensor, int, dict]:
        loss, batch, logging_output, _ = self._score(model, sample)
        return loss, batch, logging_output

    def forward_with_records(self, model: torch.nn.Module, sample: dict
                             ) -> tuple[torch.Tensor, int, dict, list[dict]]:
        """One record per window: the top-k start and end positions with their logits, and the
        no-answer logit (what roberta.squad_postprocess turns into answers)."""
        loss, batch, logging_output, (start_logits, end_logits, no_answer_logits) = self._score(model, sample)
        k = min(self.top_k, start_logits.size(1))
        start_logit, start_index = start_logits.topk(k, dim=1)
        end_logit, end_index = end_logits.topk(k, dim=1)
        rows = zip(sample["id"].tolist(), start_index.tolist(), start_logit.tolist(), end_index.tolist(),
                   end_logit.tolist(), no_answer_logits.tolist())
        records = [{"id": window, "start_index": s_index, "start_logit": s_logit, "end_index": e_index,
                    "end_logit": e_logit, "no_answer_logit": no_answer}
                   for window, s_index, s_logit, e_index, e_logit, no_answer in rows]
        return loss, batch, logging_output, records

    def _score(self, model: torch.nn.Module, sample: dict
               ) -> tuple[torch.Tensor, int, dict, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Loss, sample size, logging output, and the float32 start and end logits (B x T, padding at
        -inf) and no-answer logits (B)."""
        src_tokens = sample["net_input"]["src_tokens"]
        (span_logits, no_answer_logits), _ = model(src_tokens, features_heads=(SQUAD_SPAN_HEAD, SQUAD_ANSWERABLE_HEAD))
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
        logging_output = {"loss": loss.detach(), "span_loss": span_loss.detach(), "answer_loss": answer_loss.detach(),
                          "ntokens": sample["ntokens"], "nsentences": batch, "sample_size": batch}
        return loss, batch, logging_output, (start_logits, end_logits, no_answer_logits)

    @staticmethod
    def reduce_metrics(logging_output: dict) -> dict[str, float]:
        sample_size = max(logging_output.get("sample_size", 0), 1)
        return {name: logging_output.get(name, 0.0) / sample_size / LN2
                for name in ("loss", "span_loss", "answer_loss")}
