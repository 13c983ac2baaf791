"""Map state dicts between this toolkit (fairseq names) and Hugging Face `transformers` RoBERTa.

`to_hf_state_dict` produces `RobertaForMaskedLM` keys (`roberta.*`, `lm_head.*`) and, for one
chosen classification head, `RobertaForSequenceClassification`'s `classifier.*`.
`from_hf_state_dict` accepts keys with or without the `roberta.` prefix.
"""
from __future__ import annotations

import re

from torch import Tensor

from roberta.errors import UserError

_ENCODER = "encoder.sentence_encoder."
_HF = "roberta."

# (ours, Hugging Face) name fragments; layer fragments follow `layers.{i}.` / `encoder.layer.{i}.`.
_EMBEDDINGS = (
    ("embed_tokens.weight", "embeddings.word_embeddings.weight"),
    ("embed_positions.weight", "embeddings.position_embeddings.weight"),
    ("layernorm_embedding.weight", "embeddings.LayerNorm.weight"),
    ("layernorm_embedding.bias", "embeddings.LayerNorm.bias"),
)
_LAYER = (
    ("self_attn.q_proj.", "attention.self.query."),
    ("self_attn.k_proj.", "attention.self.key."),
    ("self_attn.v_proj.", "attention.self.value."),
    ("self_attn.out_proj.", "attention.output.dense."),
    ("self_attn_layer_norm.", "attention.output.LayerNorm."),
    ("fc1.", "intermediate.dense."),
    ("fc2.", "output.dense."),
    ("final_layer_norm.", "output.LayerNorm."),
)
_LM_HEAD = (
    ("encoder.lm_head.dense.", "lm_head.dense."),
    ("encoder.lm_head.layer_norm.", "lm_head.layer_norm."),
)
_OUR_LAYER = re.compile(r"^encoder\.sentence_encoder\.layers\.(\d+)\.(.+)$")
_HF_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")


def _rename(name: str, pairs: tuple[tuple[str, str], ...], reverse: bool) -> str | None:
    for ours, theirs in pairs:
        src, dst = (theirs, ours) if reverse else (ours, theirs)
        if name.startswith(src):
            return dst + name[len(src):]
    return None


def to_hf_state_dict(our_sd: dict[str, Tensor],
                     classification_head: str | None = None) -> dict[str, Tensor]:
    """Our state dict -> `RobertaForMaskedLM` keys, plus `classifier.*` for the named head.

    HF adds a one-row token-type embedding to every token; it is written as zeros.
    """
    out: dict[str, Tensor] = {}
    head_prefix = f"classification_heads.{classification_head}."
    for name, value in our_sd.items():
        layer = _OUR_LAYER.match(name)
        if layer:
            inner = _rename(layer.group(2), _LAYER, reverse=False)
            if inner is not None:
                out[f"{_HF}encoder.layer.{layer.group(1)}.{inner}"] = value
        elif name.startswith(_ENCODER):
            inner = _rename(name[len(_ENCODER):], _EMBEDDINGS, reverse=False)
            if inner is not None:
                out[_HF + inner] = value
        elif name == "encoder.lm_head.weight":
            out["lm_head.decoder.weight"] = value
        elif name == "encoder.lm_head.bias":
            out["lm_head.bias"] = value
            out["lm_head.decoder.bias"] = value
        elif name.startswith(head_prefix):
            out["classifier." + name[len(head_prefix):]] = value
        else:
            renamed = _rename(name, _LM_HEAD, reverse=False)
            if renamed is not None:
                out[renamed] = value
    word = out[f"{_HF}embeddings.word_embeddings.weight"]
    out[f"{_HF}embeddings.token_type_embeddings.weight"] = word.new_zeros(1, word.size(1))
    return out


def from_hf_state_dict(hf_sd: dict[str, Tensor],
                       classification_head: str = "sentence_classification_head",
                       padding_idx: int = 1) -> dict[str, Tensor]:
    """HF RoBERTa keys -> ours; `classifier.*` becomes `classification_heads.<name>.*`.

    HF's pooler has no counterpart and is dropped. A non-zero token-type row (models trained
    with HF rather than converted from fairseq) is added to the position rows of real tokens,
    which gives identical outputs because every token has token type 0.
    """
    out: dict[str, Tensor] = {}
    token_type: Tensor | None = None
    for name, value in hf_sd.items():
        key = name[len(_HF):] if name.startswith(_HF) else name
        layer = _HF_LAYER.match(key)
        if layer:
            inner = _rename(layer.group(2), _LAYER, reverse=True)
            if inner is not None:
                out[f"{_ENCODER}layers.{layer.group(1)}.{inner}"] = value
        elif key == "embeddings.token_type_embeddings.weight":
            if value.size(0) != 1:
                raise UserError(f"'{name}' has {value.size(0)} token types; RoBERTa has one")
            token_type = value[0]
        elif key.startswith("embeddings."):
            inner = _rename(key, _EMBEDDINGS, reverse=True)
            if inner is not None:
                out[_ENCODER + inner] = value
        elif key == "lm_head.decoder.weight":
            out["encoder.lm_head.weight"] = value
        elif key in ("lm_head.bias", "lm_head.decoder.bias"):
            out["encoder.lm_head.bias"] = value
        elif key.startswith("classifier."):
            out[f"classification_heads.{classification_head}.{key[len('classifier.'):]}"] = value
        else:
            renamed = _rename(key, _LM_HEAD, reverse=True)
            if renamed is not None:
                out[renamed] = value
    if token_type is not None and bool(token_type.any()):
        positions = out[_ENCODER + "embed_positions.weight"].clone()
        positions[padding_idx + 1:] += token_type
        out[_ENCODER + "embed_positions.weight"] = positions
    return out
