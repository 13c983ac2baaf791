"""`RobertaModel`: encoder + masked-LM head + named classification heads (fairseq's layout).

State-dict keys: `encoder.sentence_encoder.*`, `encoder.lm_head.*`, `classification_heads.<name>.*`.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence, cast

import torch
from torch import Tensor, nn

from roberta.errors import UserError
from roberta.models.config import ModelConfig
from roberta.models.encoder import TransformerSentenceEncoder
from roberta.models.fairseq_init import BERT_INIT_STD, fairseq_initialize_
from roberta.models.heads import ClassificationHead, LMHead, SpanHead

logger = logging.getLogger(__name__)


def init_bert_params(module: nn.Module) -> None:
    """BERT initialisation: N(0, 0.02) weights, zero biases, zero padding rows."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=BERT_INIT_STD)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=BERT_INIT_STD)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()


class RobertaEncoder(nn.Module):
    """The sentence encoder and the masked-LM head (fairseq's `model.encoder`)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.sentence_encoder = TransformerSentenceEncoder(config)
        tied = None if config.untie_weights_roberta else self.sentence_encoder.embed_tokens.weight
        self.lm_head = LMHead(config.encoder_embed_dim, config.vocab_size, tied,
                              config.layer_norm_eps)

    def forward(self, src_tokens: Tensor, features_only: bool = False,
                return_all_hiddens: bool = False,
                masked_tokens: Tensor | None = None) -> tuple[Tensor, dict[str, Any]]:
        """Features (B x T x C) when `features_only`, else LM logits (B x T x V, or
        N_masked x V with `masked_tokens`)."""
        if masked_tokens is not None and not features_only and not return_all_hiddens:
            # The head reads only the masked rows, so the last layer computes only those.
            rows = masked_tokens.flatten().nonzero().squeeze(1)
            x, states = self.sentence_encoder(src_tokens, last_layer_rows=rows)
            return self.lm_head(x), {"inner_states": states}
        x, states = self.sentence_encoder(src_tokens, return_all_hiddens)
        if not features_only:
            x = self.lm_head(x, masked_tokens)
        return x, {"inner_states": states}


class RobertaModel(nn.Module):
    """RoBERTa with fairseq's forward signature and parameter names."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        # Building draws default inits that fairseq_initialize_ replays in fairseq's order, so
        # the generator is rewound first: the same --seed then gives fairseq's weights.
        generator_state = torch.get_rng_state()
        self.encoder = RobertaEncoder(config)
        torch.set_rng_state(generator_state)
        fairseq_initialize_(self)
        self.classification_heads = nn.ModuleDict()

    def max_positions(self) -> int:
        return self.config.max_positions

    def forward(self, src_tokens: Tensor, features_only: bool = False,
                return_all_hiddens: bool = False, classification_head_name: str | None = None,
                masked_tokens: Tensor | None = None, features_heads: Sequence[str] = (),
                **unused_net_input: Any) -> tuple[Any, dict[str, Any]]:
        """Returns (output, {"inner_states": [...]}).

        output: classification logits (B x num_classes) when `classification_head_name` is
        given (whatever `features_only` says, as in fairseq), else features (B x T x C)
        when `features_only`, else masked-LM logits (B x T x V, or N_masked x V for the
        bool B x T `masked_tokens`), or with `features_heads` a list of those heads applied to
        the features (a span head scores every position). Extra net_input keys (e.g.
        `src_lengths`) are ignored.
        """
        if features_heads:
            # Inside forward, so torch DDP sees the heads' parameters used by this pass.
            features, extra = self.encoder(src_tokens, True, return_all_hiddens)
            return [self._classification_head(name)(features) for name in features_heads], extra
        if classification_head_name is None:
            return self.encoder(src_tokens, features_only, return_all_hiddens, masked_tokens)
        if masked_tokens is not None:
            raise ValueError("masked_tokens and classification_head_name are mutually exclusive")
        head = self._classification_head(classification_head_name)
        if return_all_hiddens:
            x, states = self.encoder.sentence_encoder(src_tokens, return_all_hiddens=True)
            return head(x), {"inner_states": states}
        # The head reads only position 0, so the last layer computes only those rows.
        batch, length = src_tokens.shape
        rows = torch.arange(batch, device=src_tokens.device) * length
        x, states = self.encoder.sentence_encoder(src_tokens, last_layer_rows=rows)
        return head(x.unsqueeze(1)), {"inner_states": states}

    def register_classification_head(self, name: str, num_classes: int,
                                      inner_dim: int | None = None) -> None:
        """Add (or replace) a head. Like fairseq, a new head keeps PyTorch's default Linear
        init rather than the BERT init, so fine-tuning recipes behave as they do there."""
        inner_dim = inner_dim or self.config.encoder_embed_dim
        if name in self.classification_heads:
            # ModuleDict items type as nn.Module; a name given to classification heads holds one.
            old = cast(ClassificationHead, self.classification_heads[name])
            if (old.out_proj.out_features, old.dense.out_features) != (num_classes, inner_dim):
                logger.warning("re-registering head '%s' with num_classes %d (prev: %d) and "
                               "inner_dim %d (prev: %d)", name, num_classes,
                               old.out_proj.out_features, inner_dim, old.dense.out_features)
        head = ClassificationHead(self.config.encoder_embed_dim, inner_dim, num_classes,
                                  self.config.pooler_dropout)
        param = next(self.parameters())
        self.classification_heads[name] = head.to(device=param.device, dtype=param.dtype)

    def register_span_head(self, name: str) -> None:
        """Add a start/end scorer over all positions (extractive QA). It lives with the classification
        heads so checkpoints load it, or initialise it anew, the same way."""
        param = next(self.parameters())
        head = SpanHead(self.config.encoder_embed_dim)
        self.classification_heads[name] = head.to(device=param.device, dtype=param.dtype)

    def _classification_head(self, name: str) -> nn.Module:
        if name not in self.classification_heads:
            registered = ", ".join(self.classification_heads) or "none"
            raise UserError(f"no classification head named '{name}' (registered: {registered}); "
                            f"check --classification-head-name")
        return self.classification_heads[name]
