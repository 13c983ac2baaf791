"""Output heads: the masked-LM head and sentence classification heads (fairseq's layout)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from roberta.models.encoder import gelu

# Head names as in fairseq checkpoints. A task registers its heads under these names and its
# criterion reads them back, so both import them from here (a criterion never imports a task).
SENTENCE_HEAD = "sentence_classification_head"
SQUAD_SPAN_HEAD = "squad_span"
SQUAD_ANSWERABLE_HEAD = "squad_answerable"


class LMHead(nn.Module):
    """dense -> GELU -> LayerNorm -> projection onto the vocabulary plus a bias.

    The projection weight is the token embedding matrix when `weight` is given (tied),
    otherwise a parameter of its own (`--untie-weights-roberta`).
    """

    def __init__(self, embed_dim: int, vocab_size: int, weight: Tensor | None = None,
                 layer_norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.dense = nn.Linear(embed_dim, embed_dim)
        self.layer_norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps)
        self.weight = weight if weight is not None else nn.Parameter(
            torch.empty(vocab_size, embed_dim))
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, features: Tensor, masked_tokens: Tensor | None = None) -> Tensor:
        """features: ... x C. With `masked_tokens` (bool B x T) only those positions are
        projected, giving N_masked x V; the vocabulary projection dominates the head's cost.
        """
        if masked_tokens is not None:
            features = features[masked_tokens]
        x = self.layer_norm(gelu(self.dense(features)))
        return F.linear(x, self.weight, self.bias)


class ClassificationHead(nn.Module):
    """Sentence-level head on the first token (`<s>`): dropout, dense, tanh, dropout, out_proj."""

    def __init__(self, input_dim: int, inner_dim: int, num_classes: int,
                 pooler_dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(input_dim, inner_dim)
        self.dropout = nn.Dropout(p=pooler_dropout)
        self.out_proj = nn.Linear(inner_dim, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        """features: B x T x C (only position 0 is read) -> B x num_classes."""
        x = self.dropout(features[:, 0, :])
        x = self.dropout(torch.tanh(self.dense(x)))
        return self.out_proj(x)


class SpanHead(nn.Module):
    """Extractive QA: a start and an end logit for every position (B x T x C -> B x T x 2)."""

    def __init__(self, input_dim: int) -> None:
        super().__init__()
        self.out_proj = nn.Linear(input_dim, 2)

    def forward(self, features: Tensor) -> Tensor:
        return self.out_proj(features)
