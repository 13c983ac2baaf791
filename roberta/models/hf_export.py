"""Writing a model (our state dict + `ModelConfig`) in other toolkits' layouts.

- `save_hf_folder`: a Hugging Face folder, `config.json` + `model.safetensors`, that
  `transformers` loads as `RobertaForMaskedLM` (or, with a classification head,
  `RobertaForSequenceClassification`, which also keeps the LM head in the file).
- `save_fairseq_checkpoint`: a fairseq `model.pt`, with the current key names (`cfg` dict and a
  `encoder.sentence_encoder.version` buffer) or the 2019 ones of the released RoBERTa files
  (`decoder.` prefix, `emb_layer_norm`, fused `in_proj_*`, an `argparse.Namespace` in `args`).
- `save_our_checkpoint`: our own layout with the model config and no training state.

Every file is written atomically; `roberta.models.pretrained.load_pretrained` reads them all back.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path

import torch
from torch import Tensor

from roberta.errors import UserError
from roberta.fileio import atomic_write
from roberta.models.config import ModelConfig
from roberta.models.hf_mapping import to_hf_state_dict

logger = logging.getLogger(__name__)

GENERATIONS = ("current", "2019")
# fairseq's TransformerEncoder registers this buffer; its loader upgrades files older than 3.
FAIRSEQ_ENCODER_VERSION = 3.0
_QKV = re.compile(r"^(.*\.self_attn\.)([qkv])_proj\.(weight|bias)$")


def hf_config(config: ModelConfig, *, num_labels: int | None = None) -> dict:
    """`config` as a `transformers.RobertaConfig` dict (sequence classification with `num_labels`)."""
    architecture = "RobertaForMaskedLM" if num_labels is None else "RobertaForSequenceClassification"
    fields = {
        "architectures": [architecture], "model_type": "roberta", "vocab_size": config.vocab_size,
        "hidden_size": config.encoder_embed_dim, "num_hidden_layers": config.encoder_layers,
        "num_attention_heads": config.encoder_attention_heads,
        "intermediate_size": config.encoder_ffn_embed_dim, "hidden_act": "gelu",
        "hidden_dropout_prob": config.dropout, "attention_probs_dropout_prob": config.attention_dropout,
        "classifier_dropout": config.pooler_dropout,
        "max_position_embeddings": config.max_positions + config.padding_idx + 1,
        "position_embedding_type": "absolute", "type_vocab_size": 1, "initializer_range": 0.02,
        "layer_norm_eps": config.layer_norm_eps, "pad_token_id": config.padding_idx, "bos_token_id": 0,
        "eos_token_id": 2, "tie_word_embeddings": not config.untie_weights_roberta, "is_decoder": False,
    }
    if num_labels is not None:
        fields["id2label"] = {str(index): f"LABEL_{index}" for index in range(num_labels)}
        fields["label2id"] = {f"LABEL_{index}": index for index in range(num_labels)}
    return fields


def save_hf_folder(directory: str | Path, state_dict: dict[str, Tensor], config: ModelConfig, *,
                   classification_head: str | None = None) -> Path:
    """Write `config.json` and `model.safetensors` into `directory` (created if needed)."""
    try:
        from safetensors.torch import save as safetensors_bytes
    except ImportError:
        raise UserError("writing a Hugging Face folder needs the safetensors package: "
                        "pip install safetensors") from None
    directory = Path(directory)
    num_labels = _check_hf_head(state_dict, config, classification_head)
    if config.activation_dropout:
        logger.warning("transformers' RoBERTa has no activation dropout; the exported config drops "
                       "--activation-dropout %g (it only matters for training)", config.activation_dropout)
    others = sorted({key.split(".")[1] for key in state_dict if key.startswith("classification_heads.")}
                    - {classification_head})
    if others:
        logger.warning("a Hugging Face folder holds at most one classification head; not exported: %s",
                       ", ".join(others))
    hf = to_hf_state_dict(state_dict, classification_head=classification_head)
    if not config.untie_weights_roberta:
        # transformers ties these to the word embeddings and lm_head.bias only when tied.
        hf.pop("lm_head.decoder.weight", None)
        hf.pop("lm_head.decoder.bias", None)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_write(directory / "config.json", "w", encoding="utf-8") as handle:
        json.dump(hf_config(config, num_labels=num_labels), handle, indent=2, sort_keys=True)
        handle.write("\n")
    with atomic_write(directory / "model.safetensors", "wb") as handle:
        handle.write(safetensors_bytes(_unshared(hf), metadata={"format": "pt"}))
    logger.info("wrote Hugging Face folder %s (%d tensors)", directory, len(hf))
    return directory


def _check_hf_head(state_dict: dict[str, Tensor], config: ModelConfig, name: str | None) -> int | None:
    if name is None:
        return None
    prefix = f"classification_heads.{name}."
    if prefix + "out_proj.weight" not in state_dict:
        heads = sorted({key.split(".")[1] for key in state_dict if key.startswith("classification_heads.")})
        raise UserError(f"no classification head '{name}' to export (the model has: "
                        f"{', '.join(heads) or 'none'})")
    num_classes, inner_dim = state_dict[prefix + "out_proj.weight"].shape
    if inner_dim != config.encoder_embed_dim:
        raise UserError(f"classification head '{name}' has inner dimension {inner_dim}; transformers' "
                        f"RoBERTa head needs the hidden size {config.encoder_embed_dim}")
    return int(num_classes)


def _unshared(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """safetensors refuses tensors sharing memory (q/k/v views of one fused matrix, tied weights):
    give every such tensor, and every non-contiguous one, its own copy."""
    seen: set[int] = set()
    out = {}
    for key, value in tensors.items():
        pointer = value.untyped_storage().data_ptr()
        shared = pointer in seen or value.untyped_storage().nbytes() != value.numel() * value.element_size()
        seen.add(pointer)
        out[key] = value.detach().clone().contiguous() if shared or not value.is_contiguous() else value.detach()
    return out


def to_fairseq_state_dict(state_dict: dict[str, Tensor], generation: str = "current") -> dict[str, Tensor]:
    """Our keys -> fairseq's: `current` adds the encoder's version buffer; `2019` renames to
    `decoder.*` and `emb_layer_norm` and fuses q, k, v into `in_proj_*` (in that order)."""
    if generation not in GENERATIONS:
        raise ValueError(f"generation must be one of {GENERATIONS}, got {generation!r}")
    if generation == "current":
        return {**state_dict, "encoder.sentence_encoder.version": torch.tensor([FAIRSEQ_ENCODER_VERSION])}
    out: dict[str, Tensor] = {}
    for name, value in state_dict.items():
        if name.startswith("encoder."):
            name = "decoder." + name[len("encoder."):]
        name = name.replace(".layernorm_embedding.", ".emb_layer_norm.")
        qkv = _QKV.match(name)
        if qkv is None:
            out[name] = value
        elif qkv.group(2) == "q":
            parts = [state_dict[_our_name(f"{qkv.group(1)}{part}_proj.{qkv.group(3)}")] for part in "qkv"]
            out[f"{qkv.group(1)}in_proj_{qkv.group(3)}"] = torch.cat(parts)
    return out


def _our_name(fairseq_2019_name: str) -> str:
    return "encoder." + fairseq_2019_name[len("decoder."):]


def save_fairseq_checkpoint(path: str | Path, state_dict: dict[str, Tensor], config: ModelConfig,
                            generation: str = "current") -> Path:
    """Write a fairseq `model.pt` with the keys fairseq's loader expects of that generation."""
    path = Path(path)
    model = _fairseq_model_args(config)
    state = {
        "model": to_fairseq_state_dict(state_dict, generation),
        "criterion": None,
        "optimizer_history": [{"criterion_name": "MaskedLmLoss", "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {"best": None}, "num_updates": 0}],
        "task_state": {},
        "extra_state": {"train_iterator": {"version": 2, "epoch": 1, "iterations_in_epoch": 0,
                                           "shuffle": True}, "val_loss": None},
        "last_optimizer_state": None,
    }
    if generation == "2019":
        state["args"] = argparse.Namespace(task="masked_lm", criterion="masked_lm", **model)
    else:
        state["args"] = None
        state["cfg"] = {"_name": None, "common": {"seed": 1}, "model": {"_name": "roberta", **model},
                        "task": {"_name": "masked_lm", "tokens_per_sample": config.max_positions},
                        "criterion": {"_name": "masked_lm"}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as handle:
        torch.save(state, handle)
    logger.info("wrote fairseq checkpoint %s (%s key names)", path, generation)
    return path


def _fairseq_model_args(config: ModelConfig) -> dict:
    return {
        "arch": "roberta", "encoder_layers": config.encoder_layers,
        "encoder_embed_dim": config.encoder_embed_dim, "encoder_ffn_embed_dim": config.encoder_ffn_embed_dim,
        "encoder_attention_heads": config.encoder_attention_heads, "max_positions": config.max_positions,
        "dropout": config.dropout, "attention_dropout": config.attention_dropout,
        "activation_dropout": config.activation_dropout, "pooler_dropout": config.pooler_dropout,
        "activation_fn": "gelu", "pooler_activation_fn": "tanh", "encoder_normalize_before": False,
        "encoder_learned_pos": True, "no_scale_embedding": True, "layernorm_embedding": True,
        "encoder_layerdrop": 0.0, "untie_weights_roberta": config.untie_weights_roberta,
    }


def save_our_checkpoint(path: str | Path, state_dict: dict[str, Tensor], config: ModelConfig) -> Path:
    """Our checkpoint layout holding only the model: a run restoring it starts its optimizer,
    schedule and data position afresh, as after --reset-optimizer --reset-dataloader."""
    path = Path(path)
    state = {"args": None, "cfg": {"model": config.to_dict()}, "model": state_dict, "criterion": None,
             "optimizer_history": [], "task_state": {}, "extra_state": {}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as handle:
        torch.save(state, handle)
    logger.info("wrote checkpoint %s", path)
    return path
