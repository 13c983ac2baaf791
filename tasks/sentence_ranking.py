"""Multiple choice as ranking (`--task sentence_ranking`, fairseq's RACE task).

Data layout (written by scripts/preprocess_race.sh): `input0/` holds the contexts, `input1/` ..
`input<N>/` the N options (question + answer), `label/<split>.label` one 0-based answer per line.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from roberta.data.dictionary import Dictionary
from roberta.data.indexed_dataset import TokenIdRange
from roberta.data.multiple_choice import MultipleChoiceDataset
from roberta.data.shortening import SHORTEN_METHODS
from roberta.errors import UserError
from roberta.flag_types import int_at_least, non_negative_int, positive_int
from roberta.fileio import atomic_write
from roberta.models import RobertaModel, build_model_config
from roberta.registry import TASKS
from roberta.task import Task, data_directory, load_dictionary_with_mask, load_split, read_text_lines

logger = logging.getLogger(__name__)


@TASKS.register("sentence_ranking")
class SentenceRankingTask(Task):
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
        parser.add_argument("--shorten-method", default="none", choices=SHORTEN_METHODS,
                            help="cut sequences longer than --max-positions: keep the start, or a random window")
        parser.add_argument("--shorten-data-split-list", default="",
                            help="comma-separated splits to shorten (default: all)")
        parser.add_argument("--truncate-sequence", action="store_true",
                            help="older fairseq spelling of --shorten-method truncate")
        parser.add_argument("--no-shuffle", action="store_true", help="keep the file order of examples")
        parser.add_argument("--sort-by-length", action="store_true",
                            help="batch examples of similar length together: less padding, faster; not a "
                                 "fairseq flag, and the batches are then not fairseq's")
        parser.add_argument("--ranking-head-name", default="sentence_classification_head",
                            help="name of the scoring head (its name in fairseq RACE checkpoints)")

    @classmethod
    def setup_task(cls, args: argparse.Namespace) -> "SentenceRankingTask":
        if args.num_classes is None or args.num_classes < 2:
            raise UserError(f"--num-classes must be at least 2 (the number of options), got {args.num_classes}")
        if args.criterion != "sentence_ranking":
            raise UserError(f"--task sentence_ranking needs --criterion sentence_ranking, got {args.criterion}")
        if args.truncate_sequence and args.shorten_method == "none":
            args.shorten_method = "truncate"
        if args.max_option_length is not None and args.max_option_length < 1:
            raise UserError(f"--max-option-length must be positive, got {args.max_option_length}")
        root = data_directory(args.data)
        for index in range(args.num_classes + 1):
            if not (root / f"input{index}").is_dir():
                raise UserError(f"{root / f'input{index}'} not found: --num-classes {args.num_classes} needs "
                                f"input0 (contexts) and input1..input{args.num_classes} (options)")
        if (root / f"input{args.num_classes + 1}").is_dir():
            raise UserError(f"--num-classes {args.num_classes} but {root} also has input{args.num_classes + 1}: "
                            f"set --num-classes to the number of options in the data")
        dictionary, token_ids = load_dictionary_with_mask(root / "input0" / "dict.txt")
        logger.info("dictionary: %d types", len(dictionary))
        return cls(args, root, dictionary, token_ids)

    def __init__(self, args: argparse.Namespace, root: Path, dictionary: Dictionary, token_ids: TokenIdRange) -> None:
        self.root = root
        self.dictionary = dictionary
        self.token_ids = token_ids
        self.num_classes = args.num_classes
        self.init_token = args.init_token
        self.separator_token = args.separator_token
        self.max_option_length = args.max_option_length
        self.shorten_method = args.shorten_method
        self.shorten_splits = {name for name in args.shorten_data_split_list.split(",") if name}
        # The model's limit (--max-positions, else the --arch preset's) bounds every option sequence.
        self.max_positions_ = build_model_config(args, len(dictionary)).max_positions
        self.head_name = args.ranking_head_name
        self.seed = args.seed
        self.shuffle = not args.no_shuffle
        self.sort_by_length = args.sort_by_length

    def load_dataset(self, split: str, epoch: int = 1) -> MultipleChoiceDataset:
        inputs = [load_split(self.root, f"input{index}", split, self.token_ids)
                  for index in range(self.num_classes + 1)]
        for index, data in enumerate(inputs[1:], start=1):
            if len(data) != len(inputs[0]):
                raise UserError(f"split '{split}': input{index} has {len(data)} examples but input0 has "
                                f"{len(inputs[0])}; rerun preprocessing")
        labels = self._load_labels(split, len(inputs[0]))
        shorten = self.shorten_method if not self.shorten_splits or split in self.shorten_splits else "none"
        dataset = MultipleChoiceDataset(
            inputs[0], inputs[1:], labels, pad_idx=self.dictionary.pad(), init_token=self.init_token,
            separator_token=self.separator_token, max_option_length=self.max_option_length,
            shorten_method=shorten, max_positions=self.max_positions_, seed=self.seed, shuffle=self.shuffle,
            sort_by_length=self.sort_by_length)
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

    def build_model(self, args: argparse.Namespace) -> RobertaModel:
        model = RobertaModel(build_model_config(args, len(self.dictionary)))
        model.register_classification_head(self.head_name, num_classes=1)
        return model

    def max_positions(self) -> int:
        return self.max_positions_

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
