"""SQuAD 2.0 extractive QA with no-answer (`--task squad2`), on windows from scripts/preprocess_squad.sh.

The model gets a span head (start/end logit per position) and an answerability head on `<s>`.
Validation turns window logits into answers (roberta.squad_postprocess) and reports the official
SQuAD 2.0 metrics, so `--best-checkpoint-metric f1` works; `roberta-validate --save-predictions
DIR` also writes predictions.json, null_odds.json, nbest_predictions.json and metrics.json.
"""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from roberta.data.dictionary import Dictionary
from roberta.data.indexed_dataset import TokenIdRange, dataset_exists, load_indexed_dataset
from roberta.data.span_windows import SpanWindowDataset
from roberta.errors import UserError
from roberta.flag_types import finite_float, positive_int
from roberta.fileio import atomic_write
from roberta.models import ModelConfig, RobertaModel
from roberta.models.heads import SQUAD_ANSWERABLE_HEAD, SQUAD_SPAN_HEAD
from roberta.registry import TASKS
from roberta.squad_metrics import squad2_metrics
from roberta.squad_postprocess import Windows, postprocess
from roberta.task import Task, data_directory, load_dictionary_with_mask, read_text_lines

logger = logging.getLogger(__name__)


@TASKS.register("squad2")
class Squad2Task(Task):
    writes_predictions = True
    scores_predictions = True

    @dataclass(frozen=True, kw_only=True)
    class Settings(Task.Settings):
        """`max_positions` is the model's (derived: --max-positions, else the --arch preset's);
        `criterion` is the chosen criterion's name (derived)."""
        data: str
        max_positions: int
        criterion: str
        n_best_size: int = 20
        max_answer_length: int = 30
        null_score_diff_threshold: float = 0.0
        seed: int = 1

        def __post_init__(self) -> None:
            if self.criterion != "squad2":
                raise UserError(f"--task squad2 needs --criterion squad2, got {self.criterion}")
            for flag, value in (("--n-best-size", self.n_best_size), ("--max-answer-length", self.max_answer_length)):
                if value < 1:
                    raise UserError(f"{flag} must be at least 1, got {value}")

    @staticmethod
    def add_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--n-best-size", type=positive_int("--n-best-size"), default=20,
                            help="start and end positions kept per window, and answers kept per question")
        parser.add_argument("--max-answer-length", type=positive_int("--max-answer-length"), default=30,
                            help="longest answer, in tokens")
        parser.add_argument("--null-score-diff-threshold", default=0.0,
                            type=finite_float("--null-score-diff-threshold"),
                            help="answer \"\" when the no-answer logit exceeds this (pick it from "
                                 "best_f1_null_score_diff_threshold on dev)")

    @classmethod
    def setup_task(cls, settings: Squad2Task.Settings) -> Squad2Task:
        root = data_directory(settings.data)
        dictionary, token_ids = load_dictionary_with_mask(root / "dict.txt")
        return cls(settings, root, dictionary, token_ids)

    def __init__(self, settings: Squad2Task.Settings, root: Path, dictionary: Dictionary,
                 token_ids: TokenIdRange) -> None:
        self.settings = settings
        self.root = root
        self.dictionary = dictionary
        self.token_ids = token_ids
        self._windows: dict[str, Windows] = {}

    def load_dataset(self, split: str, epoch: int = 1) -> SpanWindowDataset:
        prefix = self.root / split
        if not dataset_exists(str(prefix)):
            raise UserError(f"split '{split}' not found: expected {prefix}.bin and {prefix}.idx "
                            f"(written by scripts/preprocess_squad.sh)")
        tokens = load_indexed_dataset(str(prefix), combine=False, token_ids=self.token_ids)
        table = self._window_table(split)
        if len(table) != len(tokens):
            raise UserError(f"{prefix}.windows.tsv has {len(table)} rows but {prefix}.bin has {len(tokens)} "
                            f"windows; rerun preprocessing")
        self._windows[split] = Windows(*(table[:, column] for column in range(4)))
        logger.info("loaded %d windows of %d questions from %s", len(tokens), len(set(table[:, 0].tolist())), prefix)
        return SpanWindowDataset(tokens, table[:, 4], table[:, 5], pad_idx=self.dictionary.pad(),
                                 seed=self.settings.seed)

    def _window_table(self, split: str) -> np.ndarray:
        path = self.root / f"{split}.windows.tsv"
        if not path.is_file():
            raise UserError(f"{path} not found; rerun scripts/preprocess_squad.sh")
        try:
            table = np.loadtxt(path, dtype=np.int64, delimiter="\t", ndmin=2)
        except ValueError as error:
            raise UserError(f"{path}: malformed ({error}); rerun scripts/preprocess_squad.sh") from None
        if table.shape[1] != 6:
            raise UserError(f"{path}: expected 6 columns per window, found {table.shape[1]}")
        return table

    def build_model(self, config: ModelConfig) -> RobertaModel:
        model = RobertaModel(config)
        model.register_span_head(SQUAD_SPAN_HEAD)
        model.register_classification_head(SQUAD_ANSWERABLE_HEAD, num_classes=1)
        return model

    def max_positions(self) -> int:
        return self.settings.max_positions

    def report_predictions(self, records: list[dict], split: str, path: Path | None) -> dict[str, float]:
        """Answers for every question of `split`, the official metrics, and the files under `path`."""
        questions = _read_jsonl(self.root / f"{split}.questions.jsonl")
        contexts = _read_jsonl(self.root / f"{split}.contexts.jsonl")
        offsets = load_indexed_dataset(str(self.root / f"{split}.offsets"), combine=False)
        settings = self.settings
        answers = postprocess(records, self._windows[split], questions, contexts, offsets,
                              n_best_size=settings.n_best_size, max_answer_length=settings.max_answer_length,
                              null_score_diff_threshold=settings.null_score_diff_threshold)
        gold = {question["id"]: question["answers"] for question in questions}
        # The predictions already abstain past the threshold; null odds only drive the best_* sweep.
        metrics = squad2_metrics(gold, answers.predictions, na_probs=answers.null_odds, na_prob_thresh=float("inf"))
        if path is not None:
            path.mkdir(parents=True, exist_ok=True)
            for name, content in (("predictions.json", answers.predictions), ("null_odds.json", answers.null_odds),
                                  ("nbest_predictions.json", answers.nbest), ("metrics.json", metrics)):
                with atomic_write(path / name, mode="w", encoding="utf-8") as out:
                    json.dump(content, out, indent=2, ensure_ascii=False)
            logger.info("wrote predictions, null odds, n-best answers and metrics for %d questions to %s",
                        len(questions), path)
        return dict(metrics)


def _read_jsonl(path: Path) -> list:
    if not path.is_file():
        raise UserError(f"{path} not found; rerun scripts/preprocess_squad.sh")
    records = []
    for number, line in enumerate(read_text_lines(path), start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise UserError(f"{path}:{number}: not a JSON line ({error.msg}); "
                            f"rerun scripts/preprocess_squad.sh") from None
    return records
