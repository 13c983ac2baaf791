"""The sizes and regularisation of a RoBERTa encoder, stored as plain data in checkpoints."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from roberta.errors import UserError


@dataclass
class ModelConfig:
    """Everything needed to rebuild a `RobertaModel`; `to_dict()` holds only ints, floats, bools.

    Field names follow fairseq's argument names so a fairseq `args`/`cfg.model` maps 1:1.
    """

    vocab_size: int
    encoder_layers: int
    encoder_embed_dim: int
    encoder_ffn_embed_dim: int
    encoder_attention_heads: int
    max_positions: int = 512
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    pooler_dropout: float = 0.0
    padding_idx: int = 1
    untie_weights_roberta: bool = False
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        self._check_sizes()
        self._check_probabilities()

    def _check_sizes(self) -> None:
        for flag, value in (("--encoder-layers", self.encoder_layers),
                            ("--encoder-embed-dim", self.encoder_embed_dim),
                            ("--encoder-ffn-embed-dim", self.encoder_ffn_embed_dim),
                            ("--encoder-attention-heads", self.encoder_attention_heads),
                            ("--max-positions", self.max_positions)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{flag} must be a positive integer, got {value!r}")
        if self.encoder_embed_dim % self.encoder_attention_heads:
            raise UserError(f"--encoder-embed-dim {self.encoder_embed_dim} is not divisible by "
                            f"--encoder-attention-heads {self.encoder_attention_heads}; "
                            f"choose sizes where embed_dim = heads * head_dim")
        if not 0 <= self.padding_idx < self.vocab_size:
            raise UserError(f"the vocabulary has {self.vocab_size} symbols, too few to hold the "
                            f"padding index {self.padding_idx}; check the dictionary (dict.txt)")

    def _check_probabilities(self) -> None:
        for flag, value in (("--dropout", self.dropout),
                            ("--attention-dropout", self.attention_dropout),
                            ("--activation-dropout", self.activation_dropout),
                            ("--pooler-dropout", self.pooler_dropout)):
            if not 0.0 <= value < 1.0:
                raise UserError(f"{flag} must be in [0, 1), got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data, so a checkpoint holding it loads with `torch.load(weights_only=True)`."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"model config has unknown fields {unknown}; the checkpoint was "
                            f"written by a newer or different toolkit")
        missing = sorted(field.name for field in dataclasses.fields(cls)
                         if field.default is dataclasses.MISSING and field.name not in data)
        if missing:
            raise UserError(f"model config lacks the fields {missing}; the checkpoint is "
                            f"incomplete")
        return cls(**data)
