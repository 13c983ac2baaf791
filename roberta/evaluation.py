"""Validation passes: summed criterion outputs over a split, reduced to metrics once."""
from __future__ import annotations

import argparse
import logging

from roberta.criterion import sum_logging_outputs
from roberta.errors import UserError
from roberta.data.iterators import EpochBatchIterator
from roberta.logging import ProgressLogger
from roberta.trainer import Trainer

logger = logging.getLogger("roberta.valid")


def evaluate(trainer: Trainer, iterator: EpochBatchIterator) -> dict[str, float]:
    """Metrics of one full pass, plus `num_examples`: how many examples were scored."""
    logging_outputs = []
    num_examples = 0
    for group in iterator.next_epoch_itr(shuffle=False):
        for sample in group:
            if sample:
                logging_outputs.append(trainer.valid_step(sample))
                num_examples += int(sample["nsentences"])
    stats = dict(trainer.criterion.reduce_metrics(sum_logging_outputs(logging_outputs)))
    stats["num_examples"] = num_examples
    return stats


class Validator:
    """Validates on every `--valid-subset`; the first subset's metric decides the best checkpoint."""

    def __init__(self, args: argparse.Namespace, task, build_iterator) -> None:
        self.subsets = [name for name in args.valid_subset.split(",") if name]
        self.metric = getattr(args, "best_checkpoint_metric", "loss")
        self.log_format = args.log_format
        self._build_iterator = build_iterator
        self._batches: dict[str, tuple] = {}

    def _iterator(self, subset: str) -> EpochBatchIterator:
        # Masks and order are fixed across validations, so scores are comparable between epochs.
        if subset not in self._batches:
            first = self._build_iterator(subset)
            self._batches[subset] = (first.dataset, first.batches, first.num_workers)
        dataset, batches, num_workers = self._batches[subset]
        return EpochBatchIterator(dataset, batches, seed=1, shuffle=False, num_workers=num_workers)

    def __call__(self, trainer: Trainer, epoch: int, manager=None) -> float | None:
        """Validate every subset; `manager` (a CheckpointManager) supplies the best score so far."""
        first_metric = None
        for subset in self.subsets:
            stats = evaluate(trainer, self._iterator(subset))
            stats["num_updates"] = trainer.num_updates
            if first_metric is None and manager is not None:
                first_metric = self._metric_value(stats)
                best = manager.best
                if best is None or manager.is_better(first_metric, best):
                    best = first_metric
                stats[f"best_{self.metric}"] = best
            progress = ProgressLogger(self.log_format, epoch=epoch, total=0,
                                      prefix=f"valid on '{subset}' subset", log_interval=1)
            progress.print(stats, tag=subset, step=trainer.num_updates)
        return first_metric

    def _metric_value(self, stats: dict) -> float:
        if self.metric not in stats:
            raise UserError(f"--best-checkpoint-metric {self.metric}: validation reports only "
                            f"{', '.join(sorted(stats))}")
        return float(stats[self.metric])
