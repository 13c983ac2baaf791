"""fairseq's initialisation of a RoBERTa model, draw for draw from torch's generator.

fairseq builds its modules one by one (each with PyTorch's default init, and its attention with
a scaled Xavier init) and re-draws most weights with the BERT init twice: once over the encoder
as soon as it is built, and once over the whole model, each time visiting submodules before
their parents. Every one of those draws moves the generator, so the starting weights
depend on the whole sequence, not only on the final distributions. Replaying the sequence on
our modules (which have the same shapes) gives the weights fairseq 0.12.2 starts from under
the same `--seed`, and leaves the generator where fairseq leaves it, so a classification head
registered afterwards is also fairseq's.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable, cast

import torch
from torch import nn

if TYPE_CHECKING:  # roberta.models.roberta imports this module
    from roberta.models.encoder import TransformerEncoderLayer, TransformerSentenceEncoder
    from roberta.models.heads import LMHead
    from roberta.models.roberta import RobertaModel

BERT_INIT_STD = 0.02


@torch.no_grad()
def fairseq_initialize_(model: RobertaModel) -> None:
    """Re-draw every weight of a `RobertaModel` (no classification heads yet) as fairseq does."""
    encoder = model.encoder.sentence_encoder
    head = model.encoder.lm_head
    _build_encoder(encoder)
    _bert_draws(encoder)  # RobertaEncoder.build_encoder
    _build_lm_head(head, untied=model.config.untie_weights_roberta)
    _bert_draws(encoder)  # RobertaModel.__init__, over the whole model
    _bert_linear(head.dense)


def _build_encoder(encoder: TransformerSentenceEncoder) -> None:
    """What building fairseq's embeddings and layers draws, in the order they are built."""
    encoder.embed_tokens.reset_parameters()
    positions = encoder.embed_positions
    positions.reset_parameters()
    nn.init.normal_(positions.weight, mean=0.0, std=positions.embedding_dim ** -0.5)
    positions.weight[positions.padding_idx].zero_()
    for layer in _layers(encoder):
        attention = layer.self_attn
        projections = (attention.k_proj, attention.v_proj, attention.q_proj)  # fairseq's order
        for linear in (*projections, attention.out_proj):
            linear.reset_parameters()
        for linear in projections:
            nn.init.xavier_uniform_(linear.weight, gain=1 / math.sqrt(2))
        nn.init.xavier_uniform_(attention.out_proj.weight)
        nn.init.zeros_(attention.out_proj.bias)
        layer.fc1.reset_parameters()
        layer.fc2.reset_parameters()


def _build_lm_head(head: LMHead, *, untied: bool) -> None:
    head.dense.reset_parameters()
    if untied:  # fairseq takes the weight of a fresh bias-free Linear and never re-draws it
        nn.init.kaiming_uniform_(head.weight, a=math.sqrt(5))
    nn.init.zeros_(head.bias)


def _bert_draws(encoder: TransformerSentenceEncoder) -> None:
    """fairseq's `apply(init_bert_params)` over the sentence encoder: children before parents."""
    for embedding in (encoder.embed_tokens, encoder.embed_positions):
        nn.init.normal_(embedding.weight, mean=0.0, std=BERT_INIT_STD)
        embedding.weight[embedding.padding_idx].zero_()
    for layer in _layers(encoder):
        attention = layer.self_attn
        for linear in (attention.k_proj, attention.v_proj, attention.q_proj, attention.out_proj):
            _bert_linear(linear)
        for linear in (attention.q_proj, attention.k_proj, attention.v_proj):  # the attention module itself
            nn.init.normal_(linear.weight, mean=0.0, std=BERT_INIT_STD)
        _bert_linear(layer.fc1)
        _bert_linear(layer.fc2)


def _layers(encoder: TransformerSentenceEncoder) -> Iterable[TransformerEncoderLayer]:
    # nn.ModuleList is not generic: its items type as nn.Module.
    return cast("Iterable[TransformerEncoderLayer]", encoder.layers)


def _bert_linear(linear: nn.Linear) -> None:
    nn.init.normal_(linear.weight, mean=0.0, std=BERT_INIT_STD)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)
