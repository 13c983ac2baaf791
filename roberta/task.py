"""The task interface: what a task file implements to plug into the shared trainer."""
from __future__ import annotations

import abc
import argparse
from pathlib import Path
from typing import Any

import torch

from roberta.data.dictionary import Dictionary
from roberta.data.indexed_dataset import MMapIndexedDataset, TokenIdRange, dataset_exists, load_indexed_dataset
from roberta.errors import UserError


class Task(abc.ABC):
    """A task owns its data (datasets, dictionary), adds its heads to the model and picks a criterion."""

    @staticmethod
    def add_args(parser: argparse.ArgumentParser) -> None:
        """Declare the task's own flags."""

    @classmethod
    @abc.abstractmethod
    def setup_task(cls, args: argparse.Namespace) -> "Task":
        """Check the task's flags, load its dictionary, return the task."""

    @abc.abstractmethod
    def load_dataset(self, split: str, epoch: int = 1) -> Any:
        """Return a dataset following the contract in CONTRIBUTING.md."""

    @abc.abstractmethod
    def build_model(self, args: argparse.Namespace) -> torch.nn.Module:
        """The model with this task's heads registered."""

    @abc.abstractmethod
    def max_positions(self) -> int:
        """The longest example (in tokens) the task feeds the model."""

    def begin_valid_epoch(self, epoch: int) -> None:
        """Hook before a validation pass (e.g. to reset prediction buffers)."""

    def chance_accuracy(self) -> float | None:
        """Validation accuracy (%) of guessing, for the stuck-at-chance warning; None if it does not apply."""
        return None

    # True when validation metrics come from per-example predictions (SQuAD's F1), so the
    # criterion's records are collected on every validation, not only for --save-predictions.
    scores_predictions = False

    def report_predictions(self, records: list[dict], split: str, path: Path | None) -> dict[str, float]:
        """Metrics from the criterion's per-example records (sorted by id); writes them to `path` if given."""
        raise UserError(f"--save-predictions: this task ({type(self).__name__}) has no prediction format")


def data_directory(data: str, flag: str = "data") -> Path:
    """The data directory for this run, checked to exist."""
    path = Path(data)
    if not path.is_dir():
        raise UserError(f"{flag} directory '{data}' does not exist; pass the folder written by roberta-preprocess")
    return path


def read_text_lines(path: Path) -> list[str]:
    """The lines (ends kept) of a small UTF-8 text file a task reads whole, e.g. labels; a leading
    byte-order mark, as Windows editors write, is not part of the first line."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            return handle.readlines()
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not UTF-8 text ({error.reason}); re-encode it as UTF-8") from None
    except OSError as error:
        raise UserError(f"cannot read {path} ({error.strerror})") from None


def load_dictionary_with_mask(path: Path) -> tuple[Dictionary, TokenIdRange]:
    """`dict.txt` plus the `<mask>` symbol every RoBERTa task appends, and the ids its data may hold:
    only the file's entries, as data is binarized before `<mask>` exists (a `dict.txt` one entry
    short would otherwise pass its last id off as `<mask>`)."""
    dictionary = Dictionary.load(path)
    token_ids = TokenIdRange(len(dictionary), str(path))
    dictionary.add_symbol("<mask>")
    return dictionary, token_ids


def load_split(root: Path, field: str, split: str, token_ids: TokenIdRange) -> MMapIndexedDataset:
    """`root/field/split.{bin,idx}` (e.g. `input0/train`) with its ids checked against `token_ids`,
    or one clear error when it is missing."""
    prefix = root / field / split
    if not dataset_exists(str(prefix)):
        raise UserError(f"split '{split}' not found: expected {prefix}.bin and {prefix}.idx")
    return load_indexed_dataset(str(prefix), combine=False, token_ids=token_ids)
