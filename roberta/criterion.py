"""The criterion interface: a loss that also reports summable logging outputs."""
from __future__ import annotations

import argparse
import math
from typing import Any

import torch

LN2 = math.log(2)


class Criterion(torch.nn.Module):
    """`forward` returns (summed loss, sample_size, logging_output).

    Every value in a logging output is a sum over examples, so outputs of micro-batches,
    updates and ranks can be added together and reduced once with `reduce_metrics`.
    """

    @staticmethod
    def add_args(parser: argparse.ArgumentParser) -> None:
        """Declare the criterion's own flags."""

    @classmethod
    def from_args(cls, args: argparse.Namespace, task: Any) -> "Criterion":
        return cls()

    def forward(self, model: torch.nn.Module, sample: dict) -> tuple[torch.Tensor, int, dict]:
        raise NotImplementedError

    @staticmethod
    def reduce_metrics(logging_output: dict) -> dict[str, float]:
        """Turn one summed logging output into displayed metrics (losses in base 2)."""
        raise NotImplementedError


def sum_logging_outputs(outputs: list[dict]) -> dict:
    total: dict = {}
    for output in outputs:
        for key, value in output.items():
            total[key] = total.get(key, 0) + value
    return total
