"""The sizes and regularisation of a RoBERTa encoder, stored as plain data in checkpoints."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from roberta.errors import UserError

# fairseq's default for every preset.
DEFAULT_MAX_POSITIONS = 512


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
    max_positions: int = DEFAULT_MAX_POSITIONS
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    pooler_dropout: float = 0.0
    padding_idx: int = 1
    untie_weights_roberta: bool = False
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        self._check_sizes()
        self._check_numbers()

    def _check_sizes(self) -> None:
        for flag, value in (("vocab_size", self.vocab_size),
                            ("--encoder-layers", self.encoder_layers),
                            ("--encoder-embed-dim", self.encoder_embed_dim),
                            ("--encoder-ffn-embed-dim", self.encoder_ffn_embed_dim),
                            ("--encoder-attention-heads", self.encoder_attention_heads),
                            ("--max-positions", self.max_positions)):
            if not _is_integer(value) or value < 1:
                raise UserError(f"{flag} must be a positive integer, got {shown(value)}")
        if self.encoder_embed_dim % self.encoder_attention_heads:
            raise UserError(f"--encoder-embed-dim {self.encoder_embed_dim} is not divisible by "
                            f"--encoder-attention-heads {shown(self.encoder_attention_heads)}; "
                            f"choose sizes where embed_dim = heads * head_dim")
        if not _is_integer(self.padding_idx) or not 0 <= self.padding_idx < self.vocab_size:
            raise UserError(f"the vocabulary has {shown(self.vocab_size)} symbols, too few to hold the "
                            f"padding index {shown(self.padding_idx)}; check the dictionary (dict.txt)")

    def _check_numbers(self) -> None:
        for flag, value in (("--dropout", self.dropout),
                            ("--attention-dropout", self.attention_dropout),
                            ("--activation-dropout", self.activation_dropout),
                            ("--pooler-dropout", self.pooler_dropout)):
            if not _is_real(value) or not 0.0 <= value < 1.0:
                raise UserError(f"{flag} must be in [0, 1), got {shown(value)}")
        if not _is_real(self.layer_norm_eps) or not 0.0 < self.layer_norm_eps < 1.0:
            raise UserError(f"layer_norm_eps must be a small positive number (below 1), "
                            f"got {shown(self.layer_norm_eps)}")
        if not isinstance(self.untie_weights_roberta, bool):
            raise UserError(f"untie_weights_roberta must be true or false, got {shown(self.untie_weights_roberta)}")

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


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    """An int or float (not a bool); NaN passes here and fails every range check."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def shown(value: Any, limit: int = 40) -> str:
    """`repr(value)` cut short for a one-line message. A stored value can be an integer too long
    for Python to print (over 4,300 digits): it is described by its size instead."""
    try:
        text = repr(value)
    except ValueError:
        text = f"<an integer of {value.bit_length()} bits>" if isinstance(value, int) else f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."
