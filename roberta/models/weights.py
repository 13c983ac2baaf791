"""Putting checkpoint weights into a model, with a clear report of what did not fit."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from roberta.errors import UserError
from roberta.models.roberta import RobertaModel

logger = logging.getLogger(__name__)

HEADS_PREFIX = "classification_heads."
EMBED_TOKENS = "encoder.sentence_encoder.embed_tokens.weight"
EMBED_POSITIONS = "encoder.sentence_encoder.embed_positions.weight"
# A layer's key and its index: at most nine digits, as no real model has more layers (and int()
# refuses over 4,300); a longer one is not read as a layer, so a stray huge index sizes nothing.
LAYER_KEY = re.compile(r"^encoder\.sentence_encoder\.layers\.(\d{1,9})\.")


def load_model_weights(model: RobertaModel, weights: dict[str, torch.Tensor], *, path: str | Path) -> None:
    """Load `weights` into `model`; body mismatches are errors, heads may be new or dropped.

    A head the checkpoint lacks keeps its fresh initialisation (fine-tuning a pretrained
    body); a head the model lacks, or one with other sizes, is dropped. Both are logged.
    """
    ours = model.state_dict()
    _check_positions(ours, weights, model.config.max_positions, path)
    _check_body(ours, weights, path)
    loadable = {}
    for key, tensor in weights.items():
        if key.startswith(HEADS_PREFIX) and (key not in ours or ours[key].shape != tensor.shape):
            continue
        loadable[key] = tensor
    dropped_heads = sorted({key.split(".")[1] for key in weights if key.startswith(HEADS_PREFIX)}
                           - {key.split(".")[1] for key in loadable if key.startswith(HEADS_PREFIX)})
    missing, unexpected = model.load_state_dict(loadable, strict=False)
    new_heads = sorted({key.split(".")[1] for key in missing if key.startswith(HEADS_PREFIX)})
    body_missing = [key for key in missing if not key.startswith(HEADS_PREFIX)]
    if body_missing or unexpected:
        raise UserError(f"{path}: weights do not match the model (missing {_few(body_missing)}, "
                        f"unexpected {_few(unexpected)}); is --arch the one it was trained with?")
    logger.info("loaded %d tensors from %s", len(loadable), path)
    if new_heads:
        logger.info("newly initialized classification heads: %s", ", ".join(new_heads))
    if dropped_heads:
        logger.warning("dropped classification heads from %s that this task does not use (or with other "
                       "sizes): %s", path, ", ".join(dropped_heads))


def _check_body(ours: dict, theirs: dict, path: str | Path) -> None:
    if EMBED_TOKENS in theirs and EMBED_TOKENS in ours and theirs[EMBED_TOKENS].shape != ours[EMBED_TOKENS].shape:
        raise UserError(f"{path}: the checkpoint has a vocabulary of {theirs[EMBED_TOKENS].shape[0]} "
                        f"with width {theirs[EMBED_TOKENS].shape[1]}, but this model has "
                        f"{ours[EMBED_TOKENS].shape[0]} x {ours[EMBED_TOKENS].shape[1]}: the dictionary "
                        f"(dict.txt) or --arch differs from the one it was trained with")
    layer_count = _num_layers(theirs)
    if layer_count and layer_count != _num_layers(ours):
        raise UserError(f"{path}: the checkpoint has {layer_count} layers, this model {_num_layers(ours)}; "
                        f"use the --arch (and --encoder-layers) it was trained with")
    for key, tensor in theirs.items():
        if not key.startswith(HEADS_PREFIX) and key in ours and ours[key].shape != tensor.shape:
            raise UserError(f"{path}: {key} has shape {tuple(tensor.shape)} in the checkpoint but "
                            f"{tuple(ours[key].shape)} in this model; use the --arch it was trained with")


def _check_positions(ours: dict, theirs: dict, max_positions: int, path: str | Path) -> None:
    """A --max-positions other than the checkpoint's: name the flag and the value that fits."""
    if EMBED_POSITIONS not in theirs or EMBED_POSITIONS not in ours:
        return
    offset = ours[EMBED_POSITIONS].shape[0] - max_positions  # rows for padding below the first position
    theirs_max = theirs[EMBED_POSITIONS].shape[0] - offset
    if theirs_max != max_positions:
        relation = "larger" if max_positions > theirs_max else "smaller"
        raise UserError(f"--max-positions {max_positions} is {relation} than the {theirs_max} positions the "
                        f"model in {path} was trained with; pass --max-positions {theirs_max}")


def _num_layers(weights: dict) -> int:
    indices = {int(match.group(1)) for key in weights if (match := LAYER_KEY.match(key))}
    return max(indices) + 1 if indices else 0


def _few(keys: list[str], limit: int = 4) -> str:
    if not keys:
        return "none"
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")
