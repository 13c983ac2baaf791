"""Architecture presets (`--arch`) and the `--encoder-*` flags that override their sizes.

Each preset is registered in `roberta.registry.ARCHS` as a function `(args, vocab_size) ->
ModelConfig`; a flag left at its default (None) keeps the preset's value. As in fairseq,
`--max-positions` defaults to `--tokens-per-sample` where the task has one (masked_lm), else 512.
"""
from __future__ import annotations

import argparse
from typing import Any, Callable

from roberta.flag_types import NumberFlag, positive_int, probability
from roberta.models.config import ModelConfig
from roberta.registry import ARCHS

ArchFn = Callable[[argparse.Namespace, int], ModelConfig]

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


def build_model_config(args: argparse.Namespace, vocab_size: int) -> ModelConfig:
    """The preset named by `args.arch` with any `--encoder-*` overrides applied."""
    return ARCHS.get(args.arch)(args, vocab_size)


def _preset(layers: int, embed_dim: int, ffn_dim: int, heads: int) -> ArchFn:
    def build(args: argparse.Namespace, vocab_size: int) -> ModelConfig:
        values: dict[str, Any] = {"encoder_layers": layers, "encoder_embed_dim": embed_dim,
                                  "encoder_ffn_embed_dim": ffn_dim,
                                  "encoder_attention_heads": heads}
        tokens_per_sample = getattr(args, "tokens_per_sample", None)
        if tokens_per_sample is not None:
            # fairseq's RobertaModel.build_model: without --max-positions, a task that has
            # --tokens-per-sample (masked_lm) sizes the position table to its blocks.
            values["max_positions"] = tokens_per_sample
        for attr, *_ in _OVERRIDES:
            if getattr(args, attr, None) is not None:
                values[attr] = getattr(args, attr)
        if getattr(args, "untie_weights_roberta", None) is not None:
            values["untie_weights_roberta"] = bool(args.untie_weights_roberta)
        return ModelConfig(vocab_size=vocab_size, **values)

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
