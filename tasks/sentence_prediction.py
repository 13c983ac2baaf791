"""Sentence (pair) classification and regression (`--task sentence_prediction`, fairseq's GLUE task).

Data layout (written by scripts/preprocess_glue.sh, as fairseq's preprocess_GLUE_tasks.sh):
`input0/` the first sentences, `input1/` the second ones (pair tasks only), and `label/`: for
classification the labels binarized through their own `label/dict.txt`, for `--regression-target`
one float per line in `label/<split>.label`. A split without labels (a GLUE test set) is scored
without metrics and can still be written with `--save-predictions`.

Validation reports accuracy for classification, plus F1 and Matthews correlation for two
classes (MRPC/QQP and CoLA report those), and Pearson and Spearman correlation for regression
(STS-B); all computed from every example's prediction, gathered over ranks.
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from roberta.data.dictionary import Dictionary
from roberta.data.indexed_dataset import TokenIdRange, dataset_exists, load_indexed_dataset
from roberta.data.sentence_pairs import SentencePairDataset
from roberta.data.shortening import ShorteningSettings, add_shortening_args
from roberta.errors import UserError
from roberta.flag_types import non_negative_int, positive_int
from roberta.fileio import atomic_write
from roberta.glue_metrics import accuracy, f1_binary, matthews_corrcoef, pearson, spearman
from roberta.models import ModelConfig, RobertaModel
from roberta.models.heads import SENTENCE_HEAD
from roberta.registry import TASKS
from roberta.task import Task, data_directory, load_dictionary_with_mask, load_split, read_text_lines

logger = logging.getLogger(__name__)


@TASKS.register("sentence_prediction")
class SentencePredictionTask(Task):
    writes_predictions = True
    scores_predictions = True

    @dataclass(frozen=True, kw_only=True)
    class Settings(Task.Settings, ShorteningSettings):
        """`max_positions` is the model's (derived: --max-positions, else the --arch preset's), the
        longest example fed to it; `criterion` is the chosen criterion's name (derived)."""
        data: str
        max_positions: int
        criterion: str
        num_classes: int | None = None
        regression_target: bool = False
        init_token: int | None = None
        separator_token: int | None = None
        no_shuffle: bool = False
        sort_by_length: bool = False
        classification_head_name: str = SENTENCE_HEAD
        seed: int = 1

        def __post_init__(self) -> None:
            if self.num_classes is None or self.num_classes < 1:
                raise UserError(f"--num-classes must be positive (1 with --regression-target), got {self.num_classes}")
            if self.regression_target and self.num_classes != 1:
                raise UserError(f"--regression-target predicts one number: use --num-classes 1, got {self.num_classes}")
            if not self.regression_target and self.num_classes < 2:
                raise UserError("--num-classes 1 needs --regression-target; a classifier needs at least 2 classes")
            if self.criterion != "sentence_prediction":
                raise UserError(f"--task sentence_prediction needs --criterion sentence_prediction, "
                                f"got {self.criterion}")

    @staticmethod
    def add_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--num-classes", type=positive_int("--num-classes"),
                            help="number of classes (1 with --regression-target)")
        parser.add_argument("--regression-target", action="store_true",
                            help="predict a real number per example (STS-B) instead of a class")
        parser.add_argument("--init-token", type=non_negative_int("--init-token"),
                            help="token put before the first sentence (RoBERTa: 0, <s>)")
        parser.add_argument("--separator-token", type=non_negative_int("--separator-token"),
                            help="token put before the second sentence (RoBERTa: 2, </s>)")
        add_shortening_args(parser, "examples")
        parser.add_argument("--no-shuffle", action="store_true", help="keep the file order of examples")
        parser.add_argument("--sort-by-length", action="store_true",
                            help="batch examples of similar length together: less padding, faster; not a "
                                 "fairseq flag, and the batches are then not fairseq's")
        parser.add_argument("--classification-head-name", default=SENTENCE_HEAD,
                            help="name of the head (its name in fairseq GLUE checkpoints)")
        # fairseq's criterion flags; the metrics they ask for are always reported here.
        for flag in ("--report-mcc", "--report-acc-and-f1", "--report-pearson-and-spearman"):
            parser.add_argument(flag, action="store_true", help="accepted for fairseq commands")

    @classmethod
    def setup_task(cls, settings: SentencePredictionTask.Settings) -> SentencePredictionTask:
        root = data_directory(settings.data)
        if not (root / "input0").is_dir():
            raise UserError(f"{root / 'input0'} not found: is {root} a folder written by preprocess_glue.sh?")
        dictionary, token_ids = load_dictionary_with_mask(root / "input0" / "dict.txt")
        assert settings.num_classes is not None  # Settings.__post_init__ refuses None
        label_dictionary = None
        if not settings.regression_target:
            label_dictionary = _load_label_dictionary(root / "label" / "dict.txt", settings.num_classes)
        logger.info("dictionary: %d types; %s", len(dictionary),
                    "regression target" if label_dictionary is None
                    else f"labels: {', '.join(label_dictionary.symbols[label_dictionary.nspecial:])}")
        return cls(settings, root, dictionary, token_ids, label_dictionary)

    def __init__(self, settings: SentencePredictionTask.Settings, root: Path, dictionary: Dictionary,
                 token_ids: TokenIdRange, label_dictionary: Dictionary | None) -> None:
        self.settings = settings
        self.root = root
        self.dictionary = dictionary
        self.token_ids = token_ids
        self.label_dictionary = label_dictionary
        assert settings.num_classes is not None  # Settings.__post_init__ refuses None
        self.num_classes = settings.num_classes
        self.regression = settings.regression_target
        self.pairs = (root / "input1").is_dir()
        # F1 is that of GLUE's positive label "1" (MRPC, QQP). Classes follow the label dictionary's
        # frequency order, so in MRPC "1" is class 0.
        self.positive_class = 1
        if label_dictionary is not None and "1" in label_dictionary:
            self.positive_class = label_dictionary.index("1") - label_dictionary.nspecial

    def load_dataset(self, split: str, epoch: int = 1) -> SentencePairDataset:
        first = load_split(self.root, "input0", split, self.token_ids)
        second = load_split(self.root, "input1", split, self.token_ids) if self.pairs else None
        if second is not None and len(second) != len(first):
            raise UserError(f"split '{split}': input1 has {len(second)} examples but input0 has {len(first)}; "
                            f"rerun preprocessing")
        targets = self._load_targets(split, len(first))
        settings = self.settings
        shorten = settings.method_for(split)
        dataset = SentencePairDataset(first, second, targets, pad_idx=self.dictionary.pad(),
                                      init_token=settings.init_token, separator_token=settings.separator_token,
                                      shorten_method=shorten, max_positions=settings.max_positions,
                                      seed=settings.seed, shuffle=not settings.no_shuffle,
                                      sort_by_length=settings.sort_by_length)
        logger.info("loaded %d %s from %s/*/%s", len(dataset), "sentence pairs" if self.pairs else "sentences",
                    self.root, split)
        return dataset

    def _load_targets(self, split: str, expected: int) -> np.ndarray | None:
        targets = self._load_floats(split) if self.regression else self._load_classes(split)
        if targets is None:
            logger.info("no labels for split '%s': it is scored without metrics", split)
        elif len(targets) != expected:
            raise UserError(f"{self.root / 'label'} has {len(targets)} labels for split '{split}' but input0 has "
                            f"{expected} examples; rerun preprocessing")
        return targets

    def _load_classes(self, split: str) -> np.ndarray | None:
        prefix = self.root / "label" / split
        if not dataset_exists(str(prefix)):
            return None
        assert self.label_dictionary is not None  # a classification task has one
        label_ids = TokenIdRange(len(self.label_dictionary), str(self.root / "label" / "dict.txt"))
        labels = load_indexed_dataset(str(prefix), combine=False, token_ids=label_ids)
        empty = np.flatnonzero(labels.sizes == 0)
        if len(empty):
            raise UserError(f"{prefix}.bin: example {int(empty[0])} has no label; rerun preprocessing")
        # Each line is binarized as `label </s>`; classes are the label symbols' positions after the specials.
        classes = np.fromiter((int(labels[i][0]) for i in range(len(labels))), dtype=np.int64, count=len(labels))
        classes -= self.label_dictionary.nspecial
        bad = np.flatnonzero((classes < 0) | (classes >= self.num_classes))
        if len(bad):
            raise UserError(f"{prefix}.bin: example {int(bad[0])} has a label outside the {self.num_classes} classes "
                            f"of {self.root / 'label' / 'dict.txt'}")
        return classes

    def _load_floats(self, split: str) -> np.ndarray | None:
        path = self.root / "label" / f"{split}.label"
        if not path.is_file():
            return None
        values = []
        for number, line in enumerate(read_text_lines(path), start=1):
            try:
                values.append(float(line))
            except ValueError:
                raise UserError(f"{path}:{number}: expected a number, got {line.strip()!r}") from None
        return np.asarray(values, dtype=np.float32)

    def build_model(self, config: ModelConfig) -> RobertaModel:
        model = RobertaModel(config)
        model.register_classification_head(self.settings.classification_head_name, num_classes=self.num_classes)
        return model

    def max_positions(self) -> int:
        return self.settings.max_positions

    def chance_accuracy(self) -> float | None:
        return None if self.regression else 100.0 / self.num_classes

    def report_predictions(self, records: list[dict], split: str, path: Path | None) -> dict[str, float]:
        """The task's metrics over every example; with `path`, `id<TAB>prediction[<TAB>label]` lines in
        dataset order, classes written as their label strings (GLUE's submission format)."""
        if path is not None:
            self._write(records, split, path)
        labeled = [record for record in records if record["label"] is not None]
        if not labeled:
            return {}
        predictions = np.asarray([record["prediction"] for record in labeled])
        labels = np.asarray([record["label"] for record in labeled])
        if self.regression:
            return {"pearson": 100.0 * pearson(predictions, labels), "spearman": 100.0 * spearman(predictions, labels)}
        metrics = {"accuracy": 100.0 * accuracy(predictions, labels)}
        if self.num_classes == 2:
            metrics["f1"] = 100.0 * f1_binary(predictions, labels, positive=self.positive_class)
            metrics["mcc"] = 100.0 * matthews_corrcoef(predictions, labels)
        return metrics

    def _write(self, records: list[dict], split: str, path: Path) -> None:
        with atomic_write(path, mode="w") as out:
            for record in records:
                fields = [record["id"], self._label_text(record["prediction"])]
                if record["label"] is not None:
                    fields.append(self._label_text(record["label"]))
                out.write("\t".join(str(field) for field in fields) + "\n")
        logger.info("wrote %d predictions for split '%s' to %s", len(records), split, path)

    def _label_text(self, value: float | int) -> str:
        if self.regression:
            return f"{value:.6g}"
        assert self.label_dictionary is not None  # a classification task has one
        return self.label_dictionary[int(value) + self.label_dictionary.nspecial]


def _load_label_dictionary(path: Path, num_classes: int) -> Dictionary:
    if not path.is_file():
        raise UserError(f"{path} not found: classification needs the label dictionary written by preprocess_glue.sh "
                        f"(for a regression task pass --regression-target)")
    labels = Dictionary.load(path)
    # fairseq pads dictionaries to a multiple of 8 with madeupword entries; they are not classes.
    real = [symbol for symbol in labels.symbols[labels.nspecial:] if not symbol.startswith("madeupword")]
    if len(real) != num_classes:
        raise UserError(f"--num-classes {num_classes} but {path} lists {len(real)} labels ({', '.join(real)}); "
                        f"set --num-classes {len(real)}")
    return labels
