"""Architecture presets (`--arch`) and the `--encoder-*` flags that override their sizes.

Each preset is registered in `roberta.registry.ARCHS` as a function `(settings, vocab_size) ->
ModelConfig`; a size left at None keeps the preset's value. As in fairseq, `--max-positions`
defaults to `--tokens-per-sample` where the task has one (masked_lm), else 512: the command layer
fills `max_positions` so.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from roberta.flag_types import NumberFlag, positive_int, probability
from roberta.models.config import ModelConfig
from roberta.registry import ARCHS


@dataclass(frozen=True)
class ArchSettings:
    """`--arch` and the flags that override its sizes; None keeps the preset's value."""
    arch: str
    encoder_layers: int | None = None
    encoder_embed_dim: int | None = None
    encoder_ffn_embed_dim: int | None = None
    encoder_attention_heads: int | None = None
    max_positions: int | None = None
    dropout: float | None = None
    attention_dropout: float | None = None
    activation_dropout: float | None = None
    pooler_dropout: float | None = None
    untie_weights_roberta: bool | None = None

    def overrides(self) -> dict[str, Any]:
        """The values given, by ModelConfig field name."""
        return {field.name: value for field in dataclasses.fields(self)
                if field.name != "arch" and (value := getattr(self, field.name)) is not None}


ArchFn = Callable[[ArchSettings, int], ModelConfig]


def arch_settings(flags: Mapping[str, Any]) -> ArchSettings:
    """ArchSettings from flag values by name: the command line's, or the flags a checkpoint stored."""
    return ArchSettings(**{field.name: flags[field.name] for field in dataclasses.fields(ArchSettings)
                           if flags.get(field.name) is not None})


def with_block_positions(settings: ArchSettings, tokens_per_sample: int | None) -> ArchSettings:
    """fairseq's RobertaModel.build_model: without --max-positions, a task that has
    --tokens-per-sample (masked_lm) sizes the position table to its blocks."""
    if settings.max_positions is None and tokens_per_sample is not None:
        return dataclasses.replace(settings, max_positions=tokens_per_sample)
    return settings


# (attribute, flag, parser of its values, help); every flag defaults to None so the preset decides.
_OVERRIDES: tuple[tuple[str, str, Callable[[str], NumberFlag], str], ...] = (
    ("encoder_layers", "--encoder-layers", positive_int, "number of transformer layers"),
    ("encoder_embed_dim", "--encoder-embed-dim", positive_int, "hidden size of the encoder"),
    ("encoder_ffn_embed_dim", "--encoder-ffn-embed-dim", positive_int,
     "inner size of each layer's feed-forward block"),
    ("encoder_attention_heads", "--encoder-attention-heads", positive_int,
     "number of attention heads (must divide --encoder-embed-dim)"),
    ("max_positions", "--max-positions", positive_int,
     "longest input in tokens; the position table has max_positions + 2 rows"),
    ("dropout", "--dropout", probability, "dropout on embeddings and layer outputs"),
    ("attention_dropout", "--attention-dropout", probability, "dropout on attention probabilities"),
    ("activation_dropout", "--activation-dropout", probability,
     "dropout after the feed-forward activation"),
    ("pooler_dropout", "--pooler-dropout", probability, "dropout in classification heads"),
)


def add_model_args(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Declare the flags that override an architecture preset (fairseq's names) on a parser
    or an argument group."""
    for _attr, flag, parser_of, text in _OVERRIDES:
        metavar = "N" if parser_of is positive_int else "P"
        parser.add_argument(flag, type=parser_of(flag), default=None, metavar=metavar,
                            help=f"{text} (default: from --arch)")
    parser.add_argument("--untie-weights-roberta", action="store_true", default=None,
                        help="give the masked-LM head its own output projection instead of "
                             "sharing the token embedding matrix")


def build_model_config(settings: ArchSettings, vocab_size: int) -> ModelConfig:
    """The preset named by `--arch` with any `--encoder-*` overrides applied."""
    return ARCHS.get(settings.arch)(settings, vocab_size)


def _preset(layers: int, embed_dim: int, ffn_dim: int, heads: int) -> ArchFn:
    def build(settings: ArchSettings, vocab_size: int) -> ModelConfig:
        values: dict[str, Any] = {"encoder_layers": layers, "encoder_embed_dim": embed_dim,
                                  "encoder_ffn_embed_dim": ffn_dim, "encoder_attention_heads": heads}
        return ModelConfig(vocab_size=vocab_size, **{**values, **settings.overrides()})

    build.__doc__ = f"{layers} layers x {embed_dim} hidden, FFN {ffn_dim}, {heads} heads."
    return build


roberta_base = _preset(12, 768, 3072, 12)
ARCHS.register("roberta_base")(roberta_base)
ARCHS.register("roberta")(roberta_base)
ARCHS.register("roberta_large")(_preset(24, 1024, 4096, 16))
# The roberta-squad fork's names for the same bodies (its QA heads come from --task squad2).
ARCHS.register("roberta_qa_base")(roberta_base)
ARCHS.register("roberta_qa_large")(_preset(24, 1024, 4096, 16))
ARCHS.register("xlm")(_preset(16, 1280, 5120, 16))
# Not in fairseq: sizes for CI and quick experiments on a CPU.
ARCHS.register("roberta_small")(_preset(4, 256, 1024, 4))
ARCHS.register("roberta_tiny")(_preset(2, 64, 256, 4))
