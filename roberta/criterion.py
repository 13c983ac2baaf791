"""The criterion interface: a loss that also reports summable logging outputs."""
from __future__ import annotations

import abc
import argparse
import math
from dataclasses import dataclass
from typing import Any

import torch

from roberta.errors import UserError

LN2 = math.log(2)


class Criterion(torch.nn.Module, abc.ABC):
    """`forward` returns (summed loss, sample_size, logging_output).

    Every value in a logging output is a sum over examples, so outputs of micro-batches,
    updates and ranks can be added together and reduced once with `reduce_metrics`.

    A criterion declares its flags in `add_args` and the values it reads in `Settings`, a frozen
    dataclass whose field names are the flag dests (empty when it reads none); the command layer
    fills it and calls `build(settings, task)`.
    """

    @dataclass(frozen=True, kw_only=True)
    class Settings:
        """The criterion's flags; validation that needs only flags belongs in `__post_init__`."""

    # Whether `forward_with_records` returns per-example records (for the task's predictions).
    writes_records: bool = False

    @staticmethod
    def add_args(parser: argparse.ArgumentParser) -> None:
        """Declare the criterion's own flags."""

    @classmethod
    def build(cls, settings: Any, task: Any) -> Criterion:
        """The criterion for `task` (set up from its own settings); reads only what it needs."""
        return cls()

    @abc.abstractmethod
    def forward(self, model: torch.nn.Module, sample: dict) -> tuple[torch.Tensor, int, dict]:
        """Summed loss, sample size, and a logging output whose values are numbers or 0-d tensors."""

    def forward_with_records(self, model: torch.nn.Module, sample: dict
                             ) -> tuple[torch.Tensor, int, dict, list[dict]]:
        """`forward`'s triple plus one record per example (a dict with its "id"), for criterions
        that set `writes_records`."""
        raise UserError(f"--save-predictions: the {type(self).__name__} criterion does not produce "
                        f"per-example predictions")

    @staticmethod
    @abc.abstractmethod
    def reduce_metrics(logging_output: dict) -> dict[str, float]:
        """Turn one summed logging output into displayed metrics (losses in base 2)."""


def sum_logging_outputs(outputs: list[dict]) -> dict:
    """Add logging outputs key by key; 0-d tensors are read back to the host once, here."""
    total: dict = {}
    for output in outputs:
        for key, value in output.items():
            total[key] = total.get(key, 0) + value
    return {key: value.item() if torch.is_tensor(value) else value for key, value in total.items()}


def loss_and_accuracy(logging_output: dict) -> dict[str, float]:
    """Base-2 loss per sample, and accuracy (%) when the criterion counted `ncorrect`: the metrics
    of the classification criterions."""
    sample_size = max(logging_output.get("sample_size", 0), 1)
    metrics = {"loss": logging_output.get("loss", 0.0) / sample_size / LN2}
    if "ncorrect" in logging_output:
        metrics["accuracy"] = 100.0 * logging_output["ncorrect"] / max(logging_output.get("nsentences", 0), 1)
    return metrics
