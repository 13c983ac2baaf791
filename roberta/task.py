"""The task interface: what a task file implements to plug into the shared trainer."""
from __future__ import annotations

import abc
import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roberta.data.dictionary import Dictionary
from roberta.data.indexed_dataset import MMapIndexedDataset, TokenIdRange, dataset_exists, load_indexed_dataset
from roberta.errors import UserError
from roberta.models.config import ModelConfig
from roberta.models.roberta import RobertaModel


class Task(abc.ABC):
    """A task owns its data (datasets, dictionary), adds its heads to the model and picks a criterion.

    A task declares its flags in `add_args` and the values it reads in `Settings`, a frozen
    dataclass whose field names are those flags' dests. The command layer fills the settings from
    the parsed flags (plus the derived fields a task documents, such as `max_positions` or
    `criterion`), then calls `setup_task(settings)` and `build_model(model_config)`.
    """

    @dataclass(frozen=True, kw_only=True)
    class Settings:
        """The task's flags; validation that needs only flags belongs in `__post_init__`."""

    # Whether `report_predictions` can write the criterion's records (`--save-predictions`).
    writes_predictions: bool = False
    # True when validation metrics come from per-example predictions (SQuAD's F1), so the
    # criterion's records are collected on every validation, not only for --save-predictions.
    scores_predictions: bool = False

    @staticmethod
    def add_args(parser: argparse.ArgumentParser) -> None:
        """Declare the task's own flags."""

    @classmethod
    @abc.abstractmethod
    def setup_task(cls, settings: Any) -> Task:
        """Check what the settings name on disk, load the dictionary, return the task. `settings` is
        an instance of `cls.Settings`; the task keeps what it needs and never changes it."""

    @abc.abstractmethod
    def load_dataset(self, split: str, epoch: int = 1) -> Any:
        """Return a dataset following the contract in CONTRIBUTING.md."""

    @abc.abstractmethod
    def build_model(self, config: ModelConfig) -> RobertaModel:
        """The model for `config` (built by the command layer, with `vocab_size=len(self.dictionary)`)
        with this task's heads registered."""

    @abc.abstractmethod
    def max_positions(self) -> int:
        """The longest example (in tokens) the task feeds the model."""

    def chance_accuracy(self) -> float | None:
        """Validation accuracy (%) of guessing, for the stuck-at-chance warning; None if it does not apply."""
        return None

    def report_predictions(self, records: list[dict], split: str, path: Path | None) -> dict[str, float]:
        """Metrics from the criterion's per-example records (sorted by id); writes them to `path` if given.
        Tasks that set `writes_predictions` or `scores_predictions` implement it."""
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
