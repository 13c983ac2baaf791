"""A Hugging Face `config.json` for RoBERTa: every field we read checked for its type and range,
and the `ModelConfig` it describes."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roberta.errors import UserError
from roberta.models.config import ModelConfig

HF_CONFIG = "config.json"
HF_MODEL_TYPES = ("roberta", "xlm-roberta", "camembert")


def read_hf_config(path: Path) -> dict[str, Any]:
    """The fields of `config.json` that we read, each checked for its type and range (defaults as
    transformers' RobertaConfig where it has one); every fault names the field and its value."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        # ValueError: invalid JSON, or an integer too long for Python to parse.
        raise UserError(f"{path}: not a readable JSON config ({one_line(error)})") from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: not a Hugging Face config (a JSON object is expected, found {_shown(config)})")
    fields = _HFFields(config, path)
    read: dict[str, Any] = {name: fields.integer(name, 1) for name in _HF_SIZES}
    read.update(
        model_type=fields.choice("model_type", HF_MODEL_TYPES),
        hidden_act=fields.choice("hidden_act", ("gelu",), "gelu", "RoBERTa uses the exact gelu"),
        position_embedding_type=fields.choice("position_embedding_type", ("absolute",), "absolute",
                                              "RoBERTa's learned absolute positions"),
        type_vocab_size=fields.integer("type_vocab_size", 1, 1, 1, "RoBERTa uses one token type"),
        is_decoder=fields.boolean("is_decoder", False),
        tie_word_embeddings=fields.boolean("tie_word_embeddings", True),
        pad_token_id=fields.integer("pad_token_id", 0, None, 1),
        hidden_dropout_prob=fields.probability("hidden_dropout_prob", 0.1),
        attention_probs_dropout_prob=fields.probability("attention_probs_dropout_prob", 0.1),
        classifier_dropout=fields.probability("classifier_dropout", None, nullable=True),
        layer_norm_eps=fields.positive_below_one("layer_norm_eps", 1e-5))
    if read["is_decoder"]:
        raise UserError(f"{path}: is_decoder is true (a causal model); a RoBERTa encoder is expected")
    fields.check(read["pad_token_id"] < read["vocab_size"], "pad_token_id", read["pad_token_id"],
                 f"an index below vocab_size {read['vocab_size']}")
    fields.check(read["max_position_embeddings"] > read["pad_token_id"] + 1, "max_position_embeddings",
                 read["max_position_embeddings"],
                 f"more than pad_token_id + 1 = {read['pad_token_id'] + 1} (positions start after the padding row)")
    fields.check(read["hidden_size"] % read["num_attention_heads"] == 0, "num_attention_heads",
                 read["num_attention_heads"], f"a divisor of hidden_size {read['hidden_size']}")
    return read


_REQUIRED = object()  # marks a config.json field without a default
_HF_SIZES = ("vocab_size", "num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
             "max_position_embeddings")


@dataclass
class _HFFields:
    """Typed reads of one `config.json`; a wrong value is a UserError naming it."""
    config: dict[str, Any]
    path: Path

    def value(self, name: str, default: Any) -> Any:
        if name in self.config:
            return self.config[name]
        if default is _REQUIRED:
            raise UserError(f"{self.path}: lacks the field {name!r}")
        return default

    def check(self, ok: bool, name: str, value: Any, expected: str) -> None:
        if not ok:
            raise UserError(f"{self.path}: {name} is {_shown(value)}; expected {expected}")

    def integer(self, name: str, minimum: int, maximum: int | None = None, default: Any = _REQUIRED,
                why: str = "") -> int:
        value = self.value(name, default)
        expected = (f"the integer {minimum}" if minimum == maximum else f"an integer >= {minimum}") \
            + (f" ({why})" if why else "")
        self.check(isinstance(value, int) and not isinstance(value, bool) and value >= minimum
                   and (maximum is None or value <= maximum), name, value, expected)
        return value

    def probability(self, name: str, default: Any, *, nullable: bool = False) -> float | None:
        value = self.value(name, default)
        if value is None and nullable:
            return None
        self.check(_is_number(value) and 0.0 <= value < 1.0, name, value,
                   "a number in [0, 1)" + (" or null" if nullable else ""))
        return float(value)

    def positive_below_one(self, name: str, default: float) -> float:
        value = self.value(name, default)
        self.check(_is_number(value) and 0.0 < value < 1.0, name, value, "a small positive number (below 1)")
        return float(value)

    def boolean(self, name: str, default: bool) -> bool:
        value = self.value(name, default)
        self.check(isinstance(value, bool), name, value, "true or false")
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: Any = _REQUIRED, why: str = "") -> str:
        value = self.value(name, default)
        self.check(isinstance(value, str) and value in choices, name, value,
                   " or ".join(repr(choice) for choice in choices) + (f" ({why})" if why else ""))
        return value


def _is_number(value: Any) -> bool:
    """An int or float, neither a bool nor NaN (JSON integers may be too large for a float)."""
    return isinstance(value, int) and not isinstance(value, bool) or isinstance(value, float) and not math.isnan(value)


def _shown(value: Any, limit: int = 40) -> str:
    """A JSON value as written in the file, shortened for a one-line message."""
    text = json.dumps(value) if isinstance(value, (type(None), bool, int, float, str)) \
        else f"a JSON {'list' if isinstance(value, list) else 'object'}"
    return text if len(text) <= limit else text[:limit] + "..."


def one_line(error: BaseException) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0][:160]


def config_from_hf(hf: dict[str, Any], folder: Path) -> ModelConfig:
    padding_idx = hf["pad_token_id"]
    dropout = hf["hidden_dropout_prob"]
    try:
        return ModelConfig(
            vocab_size=hf["vocab_size"], encoder_layers=hf["num_hidden_layers"],
            encoder_embed_dim=hf["hidden_size"], encoder_ffn_embed_dim=hf["intermediate_size"],
            encoder_attention_heads=hf["num_attention_heads"],
            max_positions=hf["max_position_embeddings"] - padding_idx - 1,
            dropout=dropout, attention_dropout=hf["attention_probs_dropout_prob"],
            # HF's classification head falls back to the hidden dropout.
            pooler_dropout=dropout if hf["classifier_dropout"] is None else hf["classifier_dropout"],
            padding_idx=padding_idx, untie_weights_roberta=not hf["tie_word_embeddings"],
            layer_norm_eps=hf["layer_norm_eps"])
    except UserError as error:
        raise UserError(f"{folder / HF_CONFIG}: {error}") from None
