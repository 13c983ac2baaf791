"""Layer-wise learning-rate decay (`--lr-decay`): param groups whose `lr_scale` shrinks with depth.

With L encoder layers (k = 0 next to the embeddings, k = L-1 at the top) and decay d:

    heads (classification heads, the LM head)     d^0 = 1
    layer k                                       d^(L-1-k)   (top layer 1, bottom d^(L-1))
    embeddings (embed_tokens, embed_positions,
                layernorm_embedding)              d^L         (the smallest)

This is the issue's wording: "the top layer and heads get the full rate, each layer below gets
one more factor of the decay, embeddings the smallest". fairseq's SQuAD fork differs: its
layer k gets d^(L-k) (so every layer runs 1/d slower than here), its embeddings d^L like its
bottom layer, and its embedding LayerNorm 1. Recipes tuned on the fork therefore see slightly
larger LRs in the encoder body here; embeddings match.

The schedulers write `lr(t) * lr_scale` into every group on every update (`LRScheduler.set_lr`),
so the factors hold through warmup, decay and resumes.
"""
from __future__ import annotations

import logging
import re
from typing import Any

import torch

from roberta.errors import UserError

logger = logging.getLogger(__name__)

_BODY = "encoder.sentence_encoder."
_LAYER = re.compile(r"^encoder\.sentence_encoder\.layers\.(\d+)\.")
_EMBEDDINGS = tuple(f"{_BODY}{name}." for name in ("embed_tokens", "embed_positions", "layernorm_embedding"))


def count_encoder_layers(model: torch.nn.Module) -> int:
    """The number of `encoder.sentence_encoder.layers.<k>` blocks, trainable or frozen."""
    indices = {int(match.group(1)) for name, _ in model.named_parameters(remove_duplicate=False)
               if (match := _LAYER.match(name))}
    if not indices:
        raise UserError("--lr-decay needs a RoBERTa encoder (parameters named "
                        "encoder.sentence_encoder.layers.<k>.*); this model has none")
    return max(indices) + 1


def _depth(name: str, num_layers: int) -> tuple[int, str]:
    """(power of the decay, label for the logs) of the parameter called `name`."""
    match = _LAYER.match(name)
    if match:
        k = int(match.group(1))
        return num_layers - 1 - k, f"layer {k}"
    if name.startswith(_EMBEDDINGS):
        return num_layers, "embeddings"
    if name.startswith(_BODY):
        raise UserError(f"--lr-decay: parameter {name} is in the encoder but neither in a layer nor in "
                        f"the embeddings, so it has no depth; train without --lr-decay")
    return 0, "heads"


def layer_decay_param_groups(model: torch.nn.Module, decay: float, num_layers: int) -> list[dict[str, Any]]:
    """Optimizer param groups of the trainable parameters, one per distinct factor.

    Each group has `params`, `lr_scale` (the factor) and `name` (for logs); groups run from the
    full rate down to the embeddings, parameters within a group in `named_parameters` order, so
    the same model and flags always give the same groups (a resumed optimizer state needs that).
    A parameter reachable under several names (the LM head weight is `embed_tokens.weight`) is
    placed once, at its deepest name.
    """
    if not 0.0 < decay <= 1.0:
        raise UserError(f"--lr-decay must be in (0, 1], got {decay}")
    found = count_encoder_layers(model)
    if num_layers != found:
        # The depth of the top layer fixes every factor: another L would give it d^(L-found), either
        # above the full rate or a constant shrink of the whole body (better said with --lr).
        raise UserError(f"--lr-decay-layers {num_layers} does not match the model's {found} encoder "
                        f"layers; drop the flag (it defaults to the model's layer count)")
    placed: dict[int, tuple[torch.nn.Parameter, int, str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        power, label = _depth(name, num_layers)
        if id(param) not in placed or power > placed[id(param)][1]:
            placed[id(param)] = (param, power, label)
    groups: dict[int, dict[str, Any]] = {}
    for param, power, label in placed.values():
        if not param.requires_grad:
            continue
        group = groups.setdefault(power, {"params": [], "labels": []})
        group["params"].append(param)
        if label not in group["labels"]:
            group["labels"].append(label)
    return [{"params": groups[power]["params"], "lr_scale": decay ** power,
             "name": " + ".join(groups[power]["labels"])} for power in sorted(groups)]


def describe_param_groups(decay: float, groups: list[dict[str, Any]]) -> str:
    """One log line: 'layer-wise LR decay 0.75: layer 23 + heads x1, layer 22 x0.75, ...'."""
    factors = ", ".join(f"{group['name']} x{group['lr_scale']:.3g}" for group in groups)
    return f"layer-wise LR decay {decay:g}: {factors}"


def align_saved_groups(saved: dict[str, Any], optimizer: torch.optim.Optimizer, *, path: Any) -> dict[str, Any]:
    """The optimizer state `saved` (from checkpoint `path`) with this run's group factors.

    torch restores every group's hyper-parameters from the checkpoint, `lr_scale` included; the
    factors are part of the LR schedule, which follows the flags of the run, so this run's win.
    Groups that do not line up (a checkpoint from a run with other --lr-decay settings or other
    trainable parameters) are refused: Adam's moments would land on the wrong parameters.
    """
    theirs = saved.get("param_groups", [])
    ours = optimizer.param_groups
    layout_theirs = [(group.get("name"), len(group["params"])) for group in theirs]
    layout_ours = [(group.get("name"), len(group["params"])) for group in ours]
    if layout_theirs != layout_ours:
        raise UserError(f"{path}: its optimizer has {len(theirs)} parameter groups, this run builds "
                        f"{len(ours)} that do not line up with them (did --lr-decay, --lr-decay-layers or "
                        f"the trained parameters change?); resume with the flags it was trained with, "
                        f"or pass --reset-optimizer to start the optimizer afresh")
    if any(a.get("lr_scale", 1.0) != b.get("lr_scale", 1.0) for a, b in zip(theirs, ours)):
        logger.warning("%s was trained with other layer-wise LR factors; this run's (--lr-decay) apply", path)
    aligned = []
    for their_group, our_group in zip(theirs, ours):
        group = {key: value for key, value in their_group.items() if key != "lr_scale"}
        if "lr_scale" in our_group:
            group["lr_scale"] = our_group["lr_scale"]
        aligned.append(group)
    return {**saved, "param_groups": aligned}
