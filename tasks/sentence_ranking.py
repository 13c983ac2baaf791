"""Multiple choice as ranking (`--task sentence_ranking`, fairseq's RACE task).

Data layout (written by scripts/preprocess_race.sh): `input0/` holds the contexts, `input1/` ..
`input<N>/` the N options (question + answer), `label/<split>.label` one 0-based answer per line.
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from roberta.data.dictionary import Dictionary
from roberta.data.indexed_dataset import TokenIdRange
from roberta.data.multiple_choice import MultipleChoiceDataset
from roberta.data.shortening import ShorteningSettings, add_shortening_args
from roberta.errors import UserError
from roberta.flag_types import int_at_least, non_negative_int, positive_int
from roberta.fileio import atomic_write
from roberta.models import ModelConfig, RobertaModel
from roberta.models.heads import SENTENCE_HEAD
from roberta.registry import TASKS
from roberta.task import Task, data_directory, load_dictionary_with_mask, load_split, read_text_lines

logger = logging.getLogger(__name__)


@TASKS.register("sentence_ranking")
class SentenceRankingTask(Task):
    writes_predictions = True

    @dataclass(frozen=True, kw_only=True)
    class Settings(Task.Settings, ShorteningSettings):
        """`max_positions` is the model's (derived: --max-positions, else the --arch preset's), which
        bounds every option sequence; `criterion` is the chosen criterion's name (derived)."""
        data: str
        max_positions: int
        criterion: str
        num_classes: int | None = None
        init_token: int | None = None
        separator_token: int | None = None
        max_option_length: int | None = None
        no_shuffle: bool = False
        sort_by_length: bool = False
        ranking_head_name: str = SENTENCE_HEAD
        seed: int = 1

        def __post_init__(self) -> None:
            if self.num_classes is None or self.num_classes < 2:
                raise UserError(f"--num-classes must be at least 2 (the number of options), got {self.num_classes}")
            if self.criterion != "sentence_ranking":
                raise UserError(f"--task sentence_ranking needs --criterion sentence_ranking, got {self.criterion}")
            if self.max_option_length is not None and self.max_option_length < 1:
                raise UserError(f"--max-option-length must be positive, got {self.max_option_length}")

    @staticmethod
    def add_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--num-classes", type=int_at_least("--num-classes", 2),
                            help="number of options per example (input1..inputN)")
        parser.add_argument("--init-token", type=non_negative_int("--init-token"),
                            help="token put before each option (RoBERTa: 0, <s>)")
        parser.add_argument("--separator-token", type=non_negative_int("--separator-token"),
                            help="token put between option and context (RoBERTa: 2, </s>)")
        parser.add_argument("--max-option-length", type=positive_int("--max-option-length"),
                            help="cap each option (with its init token) at this many tokens")
        add_shortening_args(parser, "sequences")
        parser.add_argument("--no-shuffle", action="store_true", help="keep the file order of examples")
        parser.add_argument("--sort-by-length", action="store_true",
                            help="batch examples of similar length together: less padding, faster; not a "
                                 "fairseq flag, and the batches are then not fairseq's")
        parser.add_argument("--ranking-head-name", default=SENTENCE_HEAD,
                            help="name of the scoring head (its name in fairseq RACE checkpoints)")

    @classmethod
    def setup_task(cls, settings: SentenceRankingTask.Settings) -> SentenceRankingTask:
        root = data_directory(settings.data)
        num_classes = settings.num_classes
        assert num_classes is not None  # Settings.__post_init__ refuses None
        for index in range(num_classes + 1):
            if not (root / f"input{index}").is_dir():
                raise UserError(f"{root / f'input{index}'} not found: --num-classes {num_classes} needs "
                                f"input0 (contexts) and input1..input{num_classes} (options)")
        if (root / f"input{num_classes + 1}").is_dir():
            raise UserError(f"--num-classes {num_classes} but {root} also has input{num_classes + 1}: "
                            f"set --num-classes to the number of options in the data")
        dictionary, token_ids = load_dictionary_with_mask(root / "input0" / "dict.txt")
        logger.info("dictionary: %d types", len(dictionary))
        return cls(settings, root, dictionary, token_ids)

    def __init__(self, settings: SentenceRankingTask.Settings, root: Path, dictionary: Dictionary,
                 token_ids: TokenIdRange) -> None:
        self.settings = settings
        self.root = root
        self.dictionary = dictionary
        self.token_ids = token_ids
        assert settings.num_classes is not None  # Settings.__post_init__ refuses None
        self.num_classes = settings.num_classes

    def load_dataset(self, split: str, epoch: int = 1) -> MultipleChoiceDataset:
        inputs = [load_split(self.root, f"input{index}", split, self.token_ids)
                  for index in range(self.num_classes + 1)]
        for index, data in enumerate(inputs[1:], start=1):
            if len(data) != len(inputs[0]):
                raise UserError(f"split '{split}': input{index} has {len(data)} examples but input0 has "
                                f"{len(inputs[0])}; rerun preprocessing")
        labels = self._load_labels(split, len(inputs[0]))
        settings = self.settings
        shorten = settings.method_for(split)
        dataset = MultipleChoiceDataset(
            inputs[0], inputs[1:], labels, pad_idx=self.dictionary.pad(), init_token=settings.init_token,
            separator_token=settings.separator_token, max_option_length=settings.max_option_length,
            shorten_method=shorten, max_positions=settings.max_positions, seed=settings.seed,
            shuffle=not settings.no_shuffle, sort_by_length=settings.sort_by_length)
        logger.info("loaded %d examples of %d options from %s/*/%s", len(dataset), self.num_classes, self.root, split)
        return dataset

    def _load_labels(self, split: str, expected: int) -> np.ndarray | None:
        path = self.root / "label" / f"{split}.label"
        if not path.is_file():
            logger.info("%s not found: split '%s' is scored without labels", path, split)
            return None
        labels = []
        for number, line in enumerate(read_text_lines(path), start=1):
            try:
                label = int(line)
            except ValueError:
                raise UserError(f"{path}:{number}: expected an option index, got {line.strip()!r}") from None
            if not 0 <= label < self.num_classes:
                raise UserError(f"{path}:{number}: label {label} is outside 0..{self.num_classes - 1} "
                                f"(--num-classes {self.num_classes})")
            labels.append(label)
        if len(labels) != expected:
            raise UserError(f"{path} has {len(labels)} labels but the split has {expected} examples")
        return np.asarray(labels, dtype=np.int64)

    def build_model(self, config: ModelConfig) -> RobertaModel:
        model = RobertaModel(config)
        model.register_classification_head(self.settings.ranking_head_name, num_classes=1)
        return model

    def max_positions(self) -> int:
        return self.settings.max_positions

    def chance_accuracy(self) -> float:
        return 100.0 / self.num_classes

    def report_predictions(self, records: list[dict], split: str, path: Path | None) -> dict[str, float]:
        """fairseq's format: `id<TAB>prediction[<TAB>label]` per example, here in dataset order."""
        if path is None:
            return {}
        with atomic_write(path, mode="w") as out:
            for record in records:
                fields = [record["id"], record["prediction"]]
                if record["label"] is not None:
                    fields.append(record["label"])
                out.write("\t".join(str(field) for field in fields) + "\n")
        logger.info("wrote %d predictions for split '%s' to %s", len(records), split, path)
        return {}
