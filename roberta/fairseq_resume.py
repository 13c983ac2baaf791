"""Continuing a fairseq 0.10-0.12 run: its optimizer state and history, in our parameters' terms.

fairseq keys Adam's per-parameter state by the position of each parameter in its model's
`parameters()` order, which is its state dict's order less buffers and tied copies. That order
differs from ours (fairseq registers k, v, q; its 0.12.2 layers also hold fused duplicate
parameters that never get a gradient), so the state is re-keyed by name here and matched to
our optimizer's parameters when the run is restored. With `--fp16` fairseq keeps one flat fp32
copy of all parameters; its moments are cut back into per-parameter tensors in the same order.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from roberta.errors import UserError

logger = logging.getLogger(__name__)

# Buffers fairseq keeps in its state dicts that are not weights (format versions, a device marker
# of sinusoidal positions).
FAIRSEQ_BUFFER_SUFFIXES = (".version", "._float_tensor")
_FUSED_IN_PROJ = re.compile(r"^(.*\.self_attn\.)in_proj_(weight|bias)$")
# fairseq class names in `optimizer_history` -> ours, so that a resume recognises its own run.
_OPTIMIZERS = {"FairseqAdam": "Adam"}
_FP16_WRAPPERS = ("FP16Optimizer", "MemoryEfficientFP16Optimizer", "AMPOptimizer")
_CRITERIONS = {"MaskedLmLoss": "MaskedLMCriterion", "SentenceRankingCriterion": "SentenceRankingCriterion",
               "SentencePredictionCriterion": "SentencePredictionCriterion"}
STATE_KEY = "fairseq_optimizer_state"


def parameter_names(raw_weights: dict[str, Tensor]) -> list[str]:
    """fairseq's `model.parameters()` order: the state dict's keys without buffers and without
    a tensor seen before (a tied LM head shares the token embeddings' storage)."""
    names, seen = [], set()
    for name, value in raw_weights.items():
        if name.endswith(FAIRSEQ_BUFFER_SUFFIXES):
            continue
        key = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape))
        if key in seen:
            continue
        seen.add(key)
        names.append(name)
    return names


def optimizer_state_by_name(state: dict, raw_weights: dict[str, Tensor], rename, path: Path) -> dict | None:
    """fairseq's `last_optimizer_state` as {our parameter name: state}, or None when absent.

    `rename` maps a fairseq key to ours (None for a tensor we do not have, such as the fused
    duplicates); a fused q/k/v state of a 2019 file is split like its weights.
    """
    saved = state.get("last_optimizer_state")
    if not isinstance(saved, dict) or not saved.get("state"):
        return None
    names = parameter_names(raw_weights)
    per_param = saved["state"]
    if len(saved.get("param_groups", [])) == 1 and len(saved["param_groups"][0]["params"]) == 1 and len(names) > 1:
        per_param = _unflatten(per_param.get(0, {}), [raw_weights[name] for name in names], path)
    by_name: dict[str, dict] = {}
    for position, entry in per_param.items():
        if position >= len(names):
            raise UserError(f"{path}: its optimizer state has an entry for parameter {position}, but the "
                            f"model has {len(names)}; pass --reset-optimizer")
        by_name.update(_renamed(names[position], entry, rename))
    return {"state": by_name, "param_groups": saved.get("param_groups", []),
            "loss_scale": saved.get("loss_scale")}


def _renamed(name: str, entry: dict, rename) -> dict[str, dict]:
    ours = rename(name)
    fused = None if ours is None else _FUSED_IN_PROJ.match(ours)
    if fused is None:
        return {} if ours is None else {ours: entry}
    chunks = {key: value.chunk(3) if torch.is_tensor(value) and value.dim() else (value,) * 3
              for key, value in entry.items()}
    return {f"{fused.group(1)}{part}_proj.{fused.group(2)}": {key: pieces[i] for key, pieces in chunks.items()}
            for i, part in enumerate("qkv")}


def _unflatten(entry: dict, params: list[Tensor], path: Path) -> dict[int, dict]:
    """Cut fairseq's flat fp16-run moments into one state per parameter, in parameter order."""
    sizes = [param.numel() for param in params]
    flat = {key: value for key, value in entry.items() if torch.is_tensor(value) and value.dim() == 1}
    if any(value.numel() != sum(sizes) for value in flat.values()):
        raise UserError(f"{path}: its flat (--fp16) optimizer state does not match the model's "
                        f"{sum(sizes)} parameters; pass --reset-optimizer")
    scalars = {key: value for key, value in entry.items() if key not in flat}
    pieces = {key: value.split(sizes) for key, value in flat.items()}
    return {position: {**scalars, **{key: chunks[position].view_as(param).clone() for key, chunks in pieces.items()}}
            for position, param in enumerate(params)}


def history_in_our_names(history: list[dict], optimizer: str | None) -> list[dict]:
    """`optimizer_history` with fairseq's class names replaced by ours (unknown names stay);
    `optimizer` is the run's --optimizer, which fairseq's fp16 wrappers hide."""
    inner = "Adam" if optimizer == "adam" else None
    translated = []
    for entry in history:
        entry = dict(entry)
        # Whatever the file holds there, None when absent; either way unknown values stay.
        name: Any = entry.get("optimizer_name")
        criterion: Any = entry.get("criterion_name")
        entry["optimizer_name"] = inner if name in _FP16_WRAPPERS and inner else _OPTIMIZERS.get(name, name)
        entry["criterion_name"] = _CRITERIONS.get(criterion, criterion)
        translated.append(entry)
    return translated


def optimizer_state_for(by_name: dict, optimizer: torch.optim.Optimizer, model: torch.nn.Module,
                        path: Path) -> dict:
    """Our optimizer's `state_dict` holding fairseq's moments for every parameter it trains."""
    names = {id(param): name for name, param in model.named_parameters()}
    template = optimizer.state_dict()
    state, position, unmatched = {}, 0, []
    for group in optimizer.param_groups:
        for param in group["params"]:
            entry = by_name["state"].get(names.get(id(param)))
            if entry is not None:
                if tuple(entry["exp_avg"].shape) != tuple(param.shape):
                    raise UserError(f"{path}: the optimizer state of {names[id(param)]} has shape "
                                    f"{tuple(entry['exp_avg'].shape)}, the parameter {tuple(param.shape)}; "
                                    f"pass --reset-optimizer")
                state[position] = {"step": int(entry.get("step", 0)), "exp_avg": entry["exp_avg"].float(),
                                   "exp_avg_sq": entry["exp_avg_sq"].float()}
            elif names.get(id(param)) is not None:
                unmatched.append(names[id(param)])
            position += 1
    if unmatched:
        logger.info("%s: no fairseq optimizer state for %d parameters (%s); their moments start at zero",
                    path, len(unmatched), ", ".join(unmatched[:4]) + (" ..." if len(unmatched) > 4 else ""))
    return {"state": state, "param_groups": template["param_groups"]}
