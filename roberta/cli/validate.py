"""`roberta-validate`: score a checkpoint on one or more splits, with the training run's settings.

As fairseq-validate does, the task is rebuilt from the flags stored in the checkpoint; flags
given on this command line override them. `--path` may also be a fairseq `model.pt` or a
Hugging Face folder: the model's sizes are read from the file, the task flags from the command line.
With `--watch SAVE_DIR` instead of `--path`, every checkpoint a training run writes is validated as it
appears (see `roberta.cli.watch`).
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from roberta import distributed
from roberta.checkpoint.files import num_updates
from roberta.checkpoint.watch import CheckpointFile, CheckpointPoller, checkpoint_files, finished_update
from roberta.cli import options
from roberta.cli.assembly import RunSettings, assemble_run, criterion_settings, model_arch
from roberta.cli.common import import_user_modules, run_cli
from roberta.cli.setup import build_task, epoch_iterator, pick_device
from roberta.cli.watch import WatchResults, WatchSettings, result_row, sleep, watch_settings
from roberta.distributed import SINGLE_PROCESS, DistributedContext
from roberta.errors import UserError
from roberta.evaluation import ValidationStopped, Validator
from roberta.logging import setup_logging
from roberta.models.architectures import arch_settings
from roberta.models.pretrained import Pretrained, check_tying, load_pretrained
from roberta.models.weights import load_model_weights
from roberta.precision import resolve_precision
from roberta.registry import CRITERIONS
from roberta.stop_signals import StopSignals
from roberta.trainer import Trainer

logger = logging.getLogger("roberta.validate")

_BATCH_SIZE_FLAGS = {"--max-tokens", "--batch-size", "--max-sentences", "--max-tokens-valid", "--batch-size-valid",
                     "--max-sentences-valid"}
_STORED_BATCHING = ("max_tokens", "batch_size", "max_tokens_valid", "batch_size_valid")


@dataclass
class ValidationJob:
    """What every rank validates: the command line and, where this process read it, the checkpoint."""
    flags: argparse.Namespace
    pretrained: Pretrained | None

    def __getstate__(self) -> dict[str, Any]:
        # A spawned process reads the checkpoint itself rather than receive it through a pipe.
        return {"flags": self.flags, "pretrained": None}


def checkpoint_defaults(pretrained: Pretrained, argv: Sequence[str] | None) -> dict:
    """Flag defaults from the checkpoint: its task, criterion and model flags, and its --seed (so
    validation masks are the training run's; fairseq-validate's default is 1). Batching comes
    from the command line as in fairseq-validate, or from the checkpoint when none is given there
    (fairseq-validate then stops)."""
    flags = pretrained.training_flags()
    run_flags = options.run_flags() - {"seed"}
    defaults = {key: value for key, value in flags.items() if key not in run_flags}
    given = {arg.split("=", 1)[0] for arg in (sys.argv[1:] if argv is None else argv)}
    if not given & _BATCH_SIZE_FLAGS:
        defaults.update({key: flags[key] for key in _STORED_BATCHING if flags.get(key) is not None})
    return defaults


def main(argv: Sequence[str] | None = None) -> None:
    setup_logging()
    watching = watch_settings(argv)
    if watching is not None:
        watch(argv, watching)
        return
    read: list[Pretrained] = []

    def stored_flags(given: dict) -> dict:
        if not given.get("path"):
            if options.wants_help(argv):
                return {}  # the full parse prints the help and exits
            raise UserError("--path is required: the checkpoint to evaluate")
        read.append(load_pretrained(given["path"], unsafe=given.get("unsafe_load", False)))
        return checkpoint_defaults(read[0], argv)

    flags = options.parse_args(argv, train=False, defaults=stored_flags)
    if flags.save_predictions and not Path(flags.save_predictions).absolute().parent.is_dir():
        raise UserError(f"--save-predictions {flags.save_predictions}: the folder it goes in does not exist")
    run = assemble_run(flags)
    distributed.launch(validate, ValidationJob(flags, read[0]), run.distributed, "roberta-validate")


def validate(job: ValidationJob, context: DistributedContext) -> None:
    """One rank's share of the splits; statistics are summed over ranks and rank 0 reports them."""
    flags = job.flags
    import_user_modules(flags.user_dir)
    run = assemble_run(flags, world_size=context.world_size)
    setup_logging(run.log_file if context.is_master else None, rank=context.rank)
    pretrained = job.pretrained or load_pretrained(flags.path, unsafe=flags.unsafe_load)
    trainer, task = build_evaluation(run, flags, pretrained, context)
    validator = Validator(run.validation, task,
                          lambda split: epoch_iterator(run.batching, task, split, train=False, context=context))
    with torch.inference_mode():
        # fairseq-validate names no epoch: the iterator state holds E+1 after epoch E, which would
        # be off by one, and the chance-level warning is about training progress.
        validator(trainer, epoch=None, end_of_epoch=False)


def build_evaluation(run: RunSettings, flags: argparse.Namespace, pretrained: Pretrained,
                     context: DistributedContext) -> tuple[Trainer, Any]:
    """The checkpoint's model, with its task and criterion, in a trainer that only validates."""
    arch = model_arch(arch_settings(vars(flags)), getattr(flags, "tokens_per_sample", None))
    task, model = build_task(run, flags, arch)
    check_tying(pretrained, model.config, flags.path)
    load_model_weights(model, pretrained.state_dict, path=flags.path)
    criterion = CRITERIONS.get(run.criterion_name).build(criterion_settings(run, flags), task)
    device = pick_device(run.cpu)
    trainer = Trainer(model, criterion, optimizer=None, lr_scheduler=None, device=device,
                      precision=resolve_precision(run.precision, device), context=context)
    trainer.num_updates = num_updates(pretrained.training_state or {})
    logger.info("loaded %s (update %d)", flags.path, trainer.num_updates)
    if context.is_distributed:
        logger.info("validating on %d processes", context.world_size)
    return trainer, task


def watch(argv: Sequence[str] | None, settings: WatchSettings) -> None:
    """Validate checkpoints as they appear until the run finishes, the update limit, or a signal."""
    results = WatchResults(settings.watch / "watch")
    poller = CheckpointPoller(settings.watch, results.scored())
    logger.info("watching %s for checkpoints (every %g s); results in %s", settings.watch,
                settings.watch_interval, results.jsonl)
    with StopSignals() as stop_signals:
        while not stop_signals.requested:
            # Read before polling: every file written before the marker is then in this poll or the next.
            finished_at = finished_update(settings.watch)
            for file in poller.poll():
                rows = score(argv, file, stop_signals)
                if rows is None:
                    break  # a stop request abandoned this validation
                poller.mark_handled(file)
                if rows:
                    results.append(rows)
                    limit = settings.watch_until_update
                    if limit is not None and rows[0]["update"] >= limit:
                        logger.info("reached --watch-until-update %d at %s", limit, file.path.name)
                        return
            else:
                if finished_at is not None and poller.all_handled():
                    logger.info("the run finished at update %d; every checkpoint is scored", finished_at)
                    return
                sleep(settings.watch_interval, stop_signals)
    logger.info("stopped by %s; rerun the same command to go on where this left off", stop_signals.name)


def score(argv: Sequence[str] | None, file: CheckpointFile, stop_signals: StopSignals) -> list[dict] | None:
    """One result row per subset; [] when the file cannot be scored (gone, unreadable), None when
    a stop request abandoned the validation."""
    try:
        pretrained = load_pretrained(file.path)
    except UserError as error:
        if file.path.exists():
            logger.warning("skipped %s: %s", file.path.name, error)
        else:
            logger.warning("skipped %s: it was removed before it could be validated (checkpoint retention)",
                           file.path.name)
        return []
    if checkpoint_files(file.path.parent).get(file.path.name) != file:
        # A later save took the name while this version was waiting or being read: that one is next.
        logger.info("%s was replaced by a newer save; validating that one instead", file.path.name)
        return []
    flags = options.parse_args(argv, train=False, defaults=lambda given: {
        **checkpoint_defaults(pretrained, argv), "path": str(file.path)})
    # Each checkpoint gets its own prediction files: preds.tsv -> preds.checkpoint_2_40.tsv.
    if flags.save_predictions:
        target = Path(flags.save_predictions)
        flags.save_predictions = str(target.with_name(f"{target.stem}.{file.path.stem}{target.suffix}"))
    run = assemble_run(flags)
    if run.distributed.distributed_world_size > 1:
        raise UserError("--watch validates in one process; drop --distributed-world-size")
    trainer, task = build_evaluation(run, flags, pretrained, SINGLE_PROCESS)
    stats_by_subset: dict[str, dict] = {}
    validator = Validator(run.validation, task,
                          lambda split: epoch_iterator(run.batching, task, split, train=False, context=SINGLE_PROCESS),
                          should_stop=lambda: stop_signals.requested,
                          report=lambda subset, stats: stats_by_subset.__setitem__(subset, stats))
    try:
        with torch.inference_mode():
            validator(trainer, epoch=None, end_of_epoch=False)
    except ValidationStopped:
        return None
    return [result_row(file, pretrained, subset, stats) for subset, stats in stats_by_subset.items()]


def cli_main() -> None:
    run_cli(main, "roberta-validate")


if __name__ == "__main__":
    cli_main()
