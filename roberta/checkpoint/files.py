"""Checkpoint files: their names, reading them safely, and the layout of what they hold (fairseq's
top-level keys, flags stored as plain data)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from roberta.errors import UserError
from roberta.torch_file import read_torch_file

_PLAIN_SCALARS = (str, int, float, bool, type(None))
_DROP = object()  # marks a value plain_config leaves out


def last_checkpoint(save_dir: str | os.PathLike, suffix: str = "") -> Path:
    """Where a run in `save_dir` keeps the checkpoint it resumes from."""
    return Path(save_dir) / f"checkpoint_last{suffix}.pt"


def load_checkpoint(path: str | os.PathLike, *, unsafe: bool = False) -> dict:
    """Read a checkpoint onto the CPU without running pickled code; every failure names the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path}: no such file")
    state = read_torch_file(path, unsafe=unsafe)
    if not isinstance(state, dict) or "model" not in state:
        raise UserError(f"checkpoint {path}: not a model checkpoint (no 'model' entry); "
                        f"pass a file written by roberta-train or fairseq-train")
    return state


def training_flags(state: dict) -> dict:
    """The flags a checkpoint was trained with: our flat `cfg`, fairseq's `cfg` groups, or legacy `args`.

    fairseq 0.10-0.12 store each group of `cfg` as a dict or, for groups built from the command
    line (always `model` in 0.12), as an argparse.Namespace; both read the same here.
    """
    cfg, stored_args = state.get("cfg"), state.get("args")
    if isinstance(cfg, dict) and isinstance(cfg.get("common"), (dict, argparse.Namespace)):
        return {key: value for name in cfg for key, value in config_group(state, name).items()}
    if isinstance(cfg, dict):
        return dict(cfg)
    return dict(vars(stored_args)) if isinstance(stored_args, argparse.Namespace) else {}


def config_group(state: dict, name: str) -> dict:
    """One group of a fairseq `cfg` (e.g. "model", "task") as a dict; {} when absent."""
    cfg = state.get("cfg")
    group = cfg.get(name) if isinstance(cfg, dict) else None
    if isinstance(group, argparse.Namespace):
        return dict(vars(group))
    return dict(group) if isinstance(group, dict) else {}


def num_updates(state: dict) -> int:
    """How many updates the checkpoint was trained for (0 for a model without training state)."""
    history = state.get("optimizer_history") or [{}]
    return int(history[-1].get("num_updates", 0))


def epoch(state: dict) -> int:
    """The epoch the checkpoint's data position lies in (fairseq stores E+1 at the end of epoch E)."""
    return int(((state.get("extra_state") or {}).get("train_iterator") or {}).get("epoch", 1))


def last_finished_epoch(state: dict) -> int:
    """The epoch the checkpoint was saved in: one before `epoch` for an end-of-epoch save, whose
    stored data position is already (E + 1, 0)."""
    iterator = (state.get("extra_state") or {}).get("train_iterator") or {}
    at_epoch_end = bool(iterator) and not iterator.get("iterations_in_epoch")
    return epoch(state) - (1 if at_epoch_end else 0)


def plain_config(flags: Mapping[str, Any]) -> dict:
    """`flags` as nested plain values (paths as str) that load with weights_only=True; other objects
    are dropped, since storing them would make the checkpoint need arbitrary unpickling."""
    return {key: plain for key, value in flags.items() if (plain := _to_plain(value)) is not _DROP}


def _to_plain(value: Any) -> Any:
    if isinstance(value, _PLAIN_SCALARS):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, argparse.Namespace):
        value = vars(value)
    if isinstance(value, dict):
        if not all(isinstance(key, (str, int)) for key in value):
            return _DROP
        items = {key: _to_plain(item) for key, item in value.items()}
        return {key: item for key, item in items.items() if item is not _DROP}
    if isinstance(value, (list, tuple)):
        elements = [_to_plain(item) for item in value]
        # A list with a hole would silently change meaning (e.g. per-epoch update_freq): drop it whole.
        return _DROP if any(element is _DROP for element in elements) else type(value)(elements)
    return _DROP


def build_checkpoint_state(
        *, cfg: dict, model_state: dict, criterion_name: str, optimizer_name: str,
        optimizer_state: dict | None, lr_scheduler_state: dict, num_updates: int, train_iterator: dict,
        previous_history: Sequence[dict] = (), val_loss: float | None = None, best: float | None = None,
        metrics: dict | None = None, previous_training_time: float = 0.0, save_optimizer_state: bool = True,
        criterion_state: dict | None = None, task_state: dict | None = None) -> dict:
    """Assemble a checkpoint with fairseq's top-level keys (fairseq-notes 5.3)."""
    history_entry = {"criterion_name": criterion_name, "optimizer_name": optimizer_name,
                     "lr_scheduler_state": lr_scheduler_state, "num_updates": num_updates}
    state = {
        "args": None, "cfg": cfg, "model": model_state, "criterion": criterion_state,
        "optimizer_history": [*previous_history, history_entry],
        "task_state": task_state or {},
        "extra_state": {"train_iterator": {"version": 2, **train_iterator}, "val_loss": val_loss,
                        "best": best, "metrics": metrics or {},
                        "previous_training_time": previous_training_time},
    }
    if save_optimizer_state and optimizer_state is not None:
        state["last_optimizer_state"] = optimizer_state
    return state
