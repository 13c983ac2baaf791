"""The RoBERTa transformer encoder, named exactly like fairseq's so checkpoints map 1:1.

Post-LN layers, learned positions with fairseq's padding offset, exact-erf GELU and
attention through `scaled_dot_product_attention`. Activations stay batch-first (B x T x C)
throughout; fairseq's T x B x C layout would only add transposes here.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from roberta.errors import UserError
from roberta.models.config import ModelConfig


def make_positions(tokens: Tensor, padding_idx: int) -> Tensor:
    """Position ids: padding_idx + running count of real tokens; pads get padding_idx itself."""
    real = tokens.ne(padding_idx).long()
    return real.cumsum(dim=1) * real + padding_idx


def gelu(x: Tensor) -> Tensor:
    """Exact (erf) GELU in float32, as fairseq computes it; free for float32 inputs."""
    return F.gelu(x.float()).type_as(x)


class _BitDropout(torch.autograd.Function):
    """Dropout whose keep-mask comes from 16-bit slices of 64-bit random words.

    PyTorch's CPU dropout draws one Bernoulli sample per element, which costs about as much
    as the layer's GEMMs on a small model; four 16-bit draws per random word are ~3.5x
    cheaper. The drop rate is rounded to a multiple of 1/65536 (0.1 -> 0.100006) and the
    kept values are scaled by the exact inverse keep rate, so the expectation is unchanged.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, p: float) -> Tensor:
        count = x.numel()
        words = torch.randint(-2 ** 63, 2 ** 63 - 1, ((count + 3) // 4,), dtype=torch.int64,
                              device=x.device)
        dropped = round(p * 65536)
        keep = (words.view(torch.int16)[:count] >= dropped - 32768).view(x.shape)
        ctx.scale = 65536 / (65536 - dropped)
        ctx.save_for_backward(keep)
        return x.mul(keep).mul_(ctx.scale)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (keep,) = ctx.saved_tensors
        return grad.mul(keep).mul_(ctx.scale), None


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """`F.dropout`, with a cheaper mask on CPU (CUDA's fused kernel is already cheap)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    return _BitDropout.apply(x, p)


def _attention_with_dropout(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None,
                            p: float) -> Tensor:
    """Attention for CPU training: SDPA's CPU kernels cannot drop attention probabilities,
    and its fallback samples them the slow way. B x heads x T x head_dim in and out."""
    scores = torch.matmul(q, k.transpose(-1, -2)).mul_(q.size(-1) ** -0.5)
    if attn_mask is not None:
        scores.masked_fill_(~attn_mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).type_as(q)
    return torch.matmul(dropout(probs, p, training=True), v)


class LearnedPositionalEmbedding(nn.Embedding):
    """Position table with `padding_idx + 1` extra leading rows, as in fairseq checkpoints."""

    padding_idx: int  # nn.Embedding's may be None; this table always has one

    def __init__(self, max_positions: int, embed_dim: int, padding_idx: int) -> None:
        super().__init__(max_positions + padding_idx + 1, embed_dim, padding_idx=padding_idx)

    def forward(self, tokens: Tensor, padded: bool = True) -> Tensor:
        """B x T x C; 1 x T x C (broadcast over the batch) when the caller knows that
        `tokens` has no padding, since then every row has the same positions."""
        if not padded:
            start = self.padding_idx + 1
            positions = torch.arange(start, start + tokens.size(1), device=tokens.device)
            return F.embedding(positions, self.weight, self.padding_idx).unsqueeze(0)
        return F.embedding(make_positions(tokens, self.padding_idx), self.weight, self.padding_idx)


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out projections (fairseq's names).

    Fusing q/k/v into one GEMM was measured on a 2-core CPU and gave no gain (the three
    GEMMs are already at the roof), so the projections stay separate and copy-free.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: Tensor, attn_mask: Tensor | None, rows: Tensor | None = None) -> Tensor:
        """x: B x T x C; attn_mask: bool B x 1 x 1 x T (True = attend) or None (no padding).

        With `rows` (indices into the flattened B*T positions) only those rows go through
        the output projection and the result is N x C.
        """
        batch, length, channels = x.shape
        heads = (batch, length, self.num_heads, self.head_dim)
        q = self.q_proj(x).view(heads).transpose(1, 2)
        k = self.k_proj(x).view(heads).transpose(1, 2)
        v = self.v_proj(x).view(heads).transpose(1, 2)
        if self.training and self.dropout > 0.0 and x.device.type == "cpu":
            context = _attention_with_dropout(q, k, v, attn_mask, self.dropout)
        else:
            context = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0)
        context = context.transpose(1, 2).reshape(batch * length, channels)
        if rows is not None:
            return self.out_proj(context.index_select(0, rows))
        return self.out_proj(context).view(batch, length, channels)


class TransformerEncoderLayer(nn.Module):
    """Post-LN layer: x = LN(x + attn(x)); x = LN(x + fc2(gelu(fc1(x))))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        dim = config.encoder_embed_dim
        self.dropout = config.dropout
        self.activation_dropout = config.activation_dropout
        self.self_attn = SelfAttention(dim, config.encoder_attention_heads,
                                       config.attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(dim, config.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)

    def forward(self, x: Tensor, attn_mask: Tensor | None, rows: Tensor | None = None) -> Tensor:
        """B x T x C in; B x T x C out, or N x C for just `rows` of the flattened positions.

        Every step after attention is per position, so dropping the other rows before the
        output projection gives exactly the rows a full pass would.
        """
        residual = x if rows is None else x.flatten(0, 1).index_select(0, rows)
        x = self.self_attn(x, attn_mask, rows)
        x = dropout(x, self.dropout, self.training)
        x = self.self_attn_layer_norm(x + residual)
        residual = x
        x = gelu(self.fc1(x))
        if self.activation_dropout:
            x = dropout(x, self.activation_dropout, self.training)
        x = dropout(self.fc2(x), self.dropout, self.training)
        return self.final_layer_norm(x + residual)


class TransformerSentenceEncoder(nn.Module):
    """Embeddings and the stack of layers (fairseq's `encoder.sentence_encoder`)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        dim = config.encoder_embed_dim
        self.padding_idx = config.padding_idx
        self.max_positions = config.max_positions
        self.dropout = config.dropout
        self.embed_tokens = nn.Embedding(config.vocab_size, dim, padding_idx=config.padding_idx)
        self.embed_positions = LearnedPositionalEmbedding(config.max_positions, dim,
                                                          config.padding_idx)
        self.layernorm_embedding = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(TransformerEncoderLayer(config)
                                    for _ in range(config.encoder_layers))

    def forward(self, src_tokens: Tensor, return_all_hiddens: bool = False,
                last_layer_rows: Tensor | None = None) -> tuple[Tensor, list[Tensor]]:
        """Returns (B x T x C features, inner states); inner states are the embedding output
        and every layer's output (L + 1 tensors) when `return_all_hiddens`, else empty.

        `last_layer_rows` (indices into the flattened B*T positions) makes the last layer
        compute only those rows after attention and return N x C features: the masked-LM
        and classification heads read only a few positions.
        """
        if src_tokens.size(1) > self.max_positions:
            raise UserError(f"input of {src_tokens.size(1)} tokens is longer than "
                            f"--max-positions {self.max_positions}; truncate or split the inputs")
        if return_all_hiddens and last_layer_rows is not None:
            raise ValueError("last_layer_rows would make the last inner state partial; "
                             "it cannot be combined with return_all_hiddens")
        padding_mask = src_tokens.eq(self.padding_idx)
        has_pads = bool(padding_mask.any())
        x = self.embed_tokens(src_tokens)
        x = x + self.embed_positions(src_tokens, padded=has_pads)
        x = dropout(self.layernorm_embedding(x), self.dropout, self.training)
        attn_mask = None  # no mask at all lets SDPA take its fastest kernel
        if has_pads:
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
            attn_mask = ~padding_mask[:, None, None, :]
        states = [x] if return_all_hiddens else []
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            x = layer(x, attn_mask, last_layer_rows if index == last else None)
            if return_all_hiddens:
                states.append(x)
        return x, states
