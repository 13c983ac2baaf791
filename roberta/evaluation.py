"""Validation passes: summed criterion outputs over a split, reduced to metrics once."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch.distributed as dist

from roberta.criterion import sum_logging_outputs
from roberta.distributed import all_gather_objects, all_reduce_sum, broadcast_object, is_initialized
from roberta.errors import UserError
from roberta.data.iterators import EpochBatchIterator
from roberta.logging import ProgressLogger, ScalarWriter, default_log_format
from roberta.task import Task
from roberta.trainer import Trainer

logger = logging.getLogger("roberta.valid")

# With several processes the stop request is agreed every this many validation steps: each
# agreement is an all-reduce that waits for the device, so not every step.
STOP_POLL_STEPS = 4


class ValidationStopped(Exception):
    """A stop was requested (SIGTERM/SIGINT) during validation, on some rank; every rank raises it
    at the same step, and the pass is abandoned."""


def evaluate(trainer: Trainer, iterator: EpochBatchIterator, should_stop: Callable[[], bool] | None = None, *,
             with_records: bool = False) -> tuple[dict[str, float], list[dict]]:
    """Metrics of one full pass, then fairseq's throughput fields (`wps`, and `wpb`/`bsz` per
    validation step over all ranks) and `num_examples`: how many examples were scored; and, `with_records`,
    the criterion's per-example records of this rank's examples (else an empty list).

    `should_stop` (this rank got a stop signal) is asked between batches; once it is true on
    any rank, every rank raises ValidationStopped, so a scheduler's grace period is not spent on
    a pass whose score would never be used."""
    logging_outputs = []
    records: list[dict] = []
    counts = {"num_examples": 0, "num_tokens": 0}
    steps = 0  # the same on every rank: short shards are padded with empty batches
    start = time.perf_counter()
    for group in iterator.next_epoch_itr(shuffle=False):
        for sample in group:
            if should_stop is not None and _stop_agreed(should_stop, steps):
                raise ValidationStopped
            steps += 1
            if sample:
                logging_output, batch_records = trainer.valid_step(sample, with_records=with_records)
                logging_outputs.append(logging_output)
                records.extend(batch_records)
                counts["num_examples"] += int(sample["nsentences"])
                counts["num_tokens"] += int(sample["ntokens"])
    totals = _sum_over_ranks({**sum_logging_outputs(logging_outputs), **counts})
    elapsed = time.perf_counter() - start
    counts = {key: int(totals.pop(key)) for key in counts}
    stats = dict(trainer.criterion.reduce_metrics(totals))
    stats["wps"] = round(counts["num_tokens"] / elapsed, 1) if elapsed > 0 else 0.0
    stats["wpb"] = round(counts["num_tokens"] / max(steps, 1), 1)
    stats["bsz"] = round(counts["num_examples"] / max(steps, 1), 1)
    stats["num_examples"] = counts["num_examples"]
    return stats, records


def _stop_agreed(should_stop: Callable[[], bool], step: int) -> bool:
    """Whether any rank asks to stop, at steps every rank reaches together (one process: every step)."""
    if is_initialized() and step % STOP_POLL_STEPS:
        return False
    return all_reduce_sum([float(should_stop())])[0] > 0


def _sum_over_ranks(totals: dict) -> dict:
    """Key-by-key sums of every rank's totals (a rank with an empty shard may lack some keys)."""
    summed: dict = {}
    for part in all_gather_objects(totals):
        for key, value in part.items():
            summed[key] = summed.get(key, 0) + value
    return summed


@dataclass(frozen=True, kw_only=True)
class ValidationSettings:
    """The flags a validation pass reads (field names are the flag dests)."""
    valid_subset: str = "valid"
    best_checkpoint_metric: str = "loss"
    # As the logging flags: a tqdm bar on a terminal, plain lines otherwise.
    log_format: str = field(default_factory=default_log_format)
    save_predictions: str | None = None

    @property
    def subsets(self) -> list[str]:
        """The comma-separated `--valid-subset` names, in order."""
        return [name for name in self.valid_subset.split(",") if name]


class Validator:
    """Validates on every `--valid-subset`; the first subset's metric decides the best checkpoint.
    With `should_stop`, a pass raises ValidationStopped when a stop is requested (see `evaluate`);
    `report` receives each subset's name and statistics as they are printed, and `scalars` (rank 0's
    TensorBoard writer during training) gets them too."""

    def __init__(self, settings: ValidationSettings, task: Task, build_iterator: Callable[[str], EpochBatchIterator],
                 should_stop: Callable[[], bool] | None = None,
                 report: Callable[[str, dict], None] | None = None, scalars: ScalarWriter | None = None) -> None:
        self.subsets = settings.subsets
        self.metric = settings.best_checkpoint_metric
        self.log_format = settings.log_format
        self.task = task
        self.save_predictions = settings.save_predictions
        self._build_iterator = build_iterator
        self._should_stop = should_stop
        self._report = report
        self._scalars = scalars
        self._first_iterators: dict[str, EpochBatchIterator] = {}

    def _iterator(self, subset: str) -> EpochBatchIterator:
        # Masks and order are fixed across validations, so scores are comparable between epochs.
        if subset not in self._first_iterators:
            self._first_iterators[subset] = self._build_iterator(subset)
        first = self._first_iterators[subset]
        return EpochBatchIterator(first.dataset, first.batches, seed=1, shuffle=False, num_workers=first.num_workers,
                                  num_shards=first.num_shards, shard_id=first.shard_id)

    def __call__(self, trainer: Trainer, epoch: int | None, manager=None, *, end_of_epoch: bool = True) -> float | None:
        """Validate every subset; `manager` (a CheckpointManager) supplies the best score so far."""
        first_metric = None
        for subset in self.subsets:
            logger.info('begin validation on "%s" subset', subset)
            with_records = bool(self.save_predictions) or self.task.scores_predictions
            stats, records = evaluate(trainer, self._iterator(subset), self._should_stop, with_records=with_records)
            if with_records:
                stats.update(self._report_predictions(records, subset))
            stats["num_updates"] = trainer.num_updates
            if end_of_epoch and epoch is not None and subset == self.subsets[0]:
                self._warn_if_chance(stats, subset, epoch)
            if first_metric is None and manager is not None:
                first_metric = self._metric_value(stats)
                best = manager.best
                if best is None or manager.is_better(first_metric, best):
                    best = first_metric
                stats[f"best_{self.metric}"] = best
            progress = ProgressLogger(self.log_format, epoch=epoch, total=0,
                                      prefix=f"valid on '{subset}' subset", log_interval=1, scalars=self._scalars)
            progress.print(stats, tag=subset, step=trainer.num_updates)
            if self._report is not None:
                self._report(subset, dict(stats))
        return first_metric

    def _metric_value(self, stats: dict) -> float:
        if self.metric not in stats:
            raise UserError(f"--best-checkpoint-metric {self.metric}: validation reports only "
                            f"{', '.join(sorted(stats))}")
        return float(stats[self.metric])

    def _report_predictions(self, records: list[dict], subset: str) -> dict[str, float]:
        """Gather every rank's records; one process (rank 0) scores them and writes them in dataset order,
        and every rank gets its metrics."""
        gathered = gather_records(records)
        metrics = {}
        if gathered is not None:
            path = Path(self.save_predictions) if self.save_predictions else None
            if path is not None and len(self.subsets) > 1:
                path = path.with_name(f"{path.stem}.{subset}{path.suffix}")
            metrics = self.task.report_predictions(gathered, subset, path)
        return broadcast_object(metrics)

    def _warn_if_chance(self, stats: dict, subset: str, epoch: int) -> None:
        chance = self.task.chance_accuracy()
        if chance is None or "accuracy" not in stats or stats["num_examples"] == 0:
            return
        # Two standard errors of a guesser's accuracy on this many examples, but at least one point.
        p = chance / 100.0
        band = max(200.0 * math.sqrt(p * (1.0 - p) / stats["num_examples"]), 1.0)
        if abs(stats["accuracy"] - chance) <= band:
            logger.warning(
                "validation accuracy on '%s' is %.1f%% after epoch %d, which is chance level (%.1f%%). "
                "Usual causes: the pretrained weights were not restored (check --restore-file and the "
                "'loaded' lines above), wrong --init-token/--separator-token (RoBERTa: 0 and 2), a too "
                "high --lr, or an unlucky start: retry with another --seed", subset, stats["accuracy"],
                epoch, chance)


def gather_records(records: list[dict]) -> list[dict] | None:
    """All ranks' prediction records sorted by example id on rank 0 (None elsewhere); duplicates dropped."""
    if is_initialized():
        gathered = all_gather_objects(records)
        if dist.get_rank() != 0:
            return None
        records = [record for part in gathered for record in part]
    unique = {record["id"]: record for record in records}
    return [unique[key] for key in sorted(unique)]
