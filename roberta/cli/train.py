"""`roberta-train`: the training loop, as a plain loop over epochs and updates."""
from __future__ import annotations

import argparse
import logging
import math
import signal
import time
from dataclasses import dataclass, replace
from typing import Sequence

import torch

from roberta import distributed
from roberta.checkpoint.manager import CheckpointManager
from roberta.checkpoint.restore import RunProgress
from roberta.cli import options
from roberta.cli.assembly import LoopSettings, TrainSettings, assemble_training
from roberta.cli.common import import_user_modules, run_cli
from roberta.cli.setup import build_training, epoch_iterator
from roberta.data.iterators import EpochBatchIterator
from roberta.distributed import DistributedContext
from roberta.errors import UserError
from roberta.evaluation import ValidationStopped, Validator
from roberta.logging import ProgressLogger, ScalarWriter, scalar_writer, setup_logging
from roberta.meters import MeterGroup
from roberta.stop_signals import StoppedBySignal, StopSignals
from roberta.task import Task
from roberta.trainer import Trainer

logger = logging.getLogger("roberta.train")


def main(argv: Sequence[str] | None = None) -> None:
    flags = options.parse_args(argv, train=True)
    settings = assemble_training(flags)
    distributed.launch(train, flags, settings.run.distributed, "roberta-train")


def train(flags: argparse.Namespace, context: DistributedContext) -> None:
    """One rank's run; rank 0 alone logs at INFO level and writes files."""
    # A spawned rank starts with empty registries.
    import_user_modules(flags.user_dir)
    settings = assemble_training(flags, world_size=context.world_size)
    setup_logging(settings.run.log_file if context.is_master else None, rank=context.rank)
    loop = rank_loop_settings(settings.loop, context)
    logger.info("command line arguments: %s", settings.run.flags)
    torch.manual_seed(settings.run.seed)
    manager = CheckpointManager(settings.save, writes_files=context.is_master)
    with StopSignals() as stop_signals, manager.sole_writer():
        built = build_training(settings, flags, manager, context)
        with scalar_writer(loop.tensorboard_logdir, first_step=built.trainer.num_updates + 1) as scalars:
            epoch = train_loop(settings, loop, built.task, built.trainer, manager, built.progress, stop_signals,
                               scalars)
        if not built.trainer.stop_agreed:
            manager.mark_finished(built.trainer.num_updates, epoch)
    # Even at --max-update: the final validation, if any, was skipped or abandoned for the stop.
    if built.trainer.stop_agreed:
        stop_on_signal(settings, built.trainer, manager, stop_signals)


def rank_loop_settings(loop: LoopSettings, context: DistributedContext) -> LoopSettings:
    """Rank 0 speaks for every rank: the others write no TensorBoard events and draw no tqdm bar."""
    if context.is_master:
        return loop
    return replace(loop, tensorboard_logdir=None, log_format="simple" if loop.log_format == "tqdm" else loop.log_format)


def stop_on_signal(settings: TrainSettings, trainer: Trainer, manager: CheckpointManager,
                   stop_signals: StopSignals) -> None:
    """Say where the run stopped and how to go on, then exit with 128 + the signal's number."""
    last = settings.restore.last_checkpoint
    saved = manager.writes_files and settings.save.saves_last
    logger.warning("stopped by %s at update %d: %s", stop_signals.name, trainer.num_updates,
                   f"{last} holds this update; run the same command to resume" if saved else
                   "no checkpoint_last.pt was written (--no-save or --no-last-checkpoints)")
    # Every rank leaves together, after rank 0 has finished writing.
    distributed.barrier()
    raise StoppedBySignal(stop_signals.received or signal.SIGTERM)


def train_loop(settings: TrainSettings, loop: LoopSettings, task: Task, trainer: Trainer,
               manager: CheckpointManager, progress: RunProgress, stop_signals: StopSignals,
               scalars: ScalarWriter) -> int:
    """Train until a stop condition; returns the epoch the run ended in."""
    context, batching, optimization = trainer.context, settings.run.batching, settings.optimization
    epoch_itr = epoch_iterator(batching, task, loop.train_subset, train=True, context=context,
                               state=progress.train_iterator)
    validator = Validator(settings.run.validation, task,
                          lambda split: epoch_iterator(batching, task, split, train=False, context=context),
                          should_stop=lambda: stop_signals.requested, scalars=scalars)
    epoch_meters = MeterGroup()
    if progress.meters:
        epoch_meters.load_state_dict(progress.meters)
    wall_start = time.perf_counter() - progress.previous_training_time
    max_epoch = optimization.max_epoch or math.inf
    if optimization.max_update and trainer.num_updates >= optimization.max_update:
        logger.info("the restored checkpoint is at update %d, already at --max-update %d: nothing to train",
                    trainer.num_updates, optimization.max_update)
        return epoch_itr.epoch
    run = TrainingLoop(settings, loop, validator, trainer, manager, epoch_itr, epoch_meters, wall_start, stop_signals,
                       scalars)
    lr = trainer.lr_scheduler.step_epoch(epoch_itr.next_epoch_idx)
    while epoch_itr.next_epoch_idx <= max_epoch:
        if lr <= optimization.stop_min_lr:
            logger.info("stopping: learning rate %g reached --stop-min-lr %g", lr, optimization.stop_min_lr)
            break
        should_stop = train_epoch(run)
        if should_stop:
            break
        epoch_meters.reset()
        lr = trainer.lr_scheduler.step_epoch(epoch_itr.next_epoch_idx)
    if not trainer.stop_agreed:
        logger.info("done training in %.1f seconds", time.perf_counter() - wall_start)
    return epoch_itr.epoch


@dataclass
class TrainingLoop:
    """What the epochs of one run share."""
    settings: TrainSettings
    loop: LoopSettings
    validator: Validator
    trainer: Trainer
    manager: CheckpointManager
    epoch_itr: EpochBatchIterator
    epoch_meters: MeterGroup
    wall_start: float
    stop_signals: StopSignals
    scalars: ScalarWriter


def train_epoch(run: TrainingLoop) -> bool:
    """Train one epoch (or its remainder after a resume); returns True when training should stop."""
    trainer, epoch_itr, epoch_meters, wall_start = run.trainer, run.epoch_itr, run.epoch_meters, run.wall_start
    itr = epoch_itr.next_epoch_itr()
    epoch = epoch_itr.epoch
    progress = ProgressLogger(run.loop.log_format, epoch=epoch, total=len(itr), log_interval=run.loop.log_interval,
                              scalars=run.scalars)
    window = MeterGroup()
    window_start = time.perf_counter()
    should_stop = False
    steps = updates = 0
    skipped_before = trainer.oom_updates, trainer.overflow_updates
    for samples in progress.wrap(itr, offset=itr.n):
        result = trainer.train_step(samples, stop_requested=run.stop_signals.requested)
        steps += 1
        if trainer.oom_backoff.parts != epoch_itr.micro_batch_parts:
            epoch_itr.split_micro_batches(trainer.oom_backoff.parts)
        if result is not None:
            updates += 1
            for meters in (window, epoch_meters):
                record_update(meters, result)
        num_updates = trainer.num_updates
        if result is not None and progress.should_log(num_updates):
            stats = update_stats(window, trainer, time.perf_counter() - window_start, wall_start)
            progress.log(stats, tag="train_inner", step=num_updates)
            window.reset()
            window_start = time.perf_counter()
        end_of_epoch = epoch_itr.end_of_epoch()
        if end_of_epoch and not updates and not trainer.stop_agreed:
            check_epoch_trained(epoch, steps, trainer.oom_updates - skipped_before[0],
                                trainer.overflow_updates - skipped_before[1])
        if result is None and not end_of_epoch and not trainer.stop_agreed:
            # A skipped update (fp16 overflow, OOM) leaves num_updates as it was: nothing new to save.
            continue
        should_stop = validate_and_save(run, end_of_epoch, stopping=trainer.stop_agreed)
        if should_stop:
            break
    epoch_stats = update_stats(epoch_meters, trainer, None, wall_start)
    progress.print(epoch_stats, tag="train", step=trainer.num_updates)
    max_update = run.settings.optimization.max_update
    return should_stop or bool(max_update and trainer.num_updates >= max_update)


def check_epoch_trained(epoch: int, steps: int, skipped_for_oom: int, skipped_for_overflow: int) -> None:
    """An epoch without a single update would be followed by more like it, each saved at the same
    update, forever. fp16 overflows are the exception: the loss scale falls until updates succeed
    (or --min-loss-scale stops the run)."""
    if skipped_for_overflow:
        return
    if skipped_for_oom == steps:
        cause = "every update ran out of memory; lower --max-tokens or --batch-size, or pass --oom-backoff"
    else:
        cause = (f"{steps - skipped_for_oom} step(s) had nothing to train on (sample size 0: every example "
                 f"filtered out or without a target); check the data, the task's flags (e.g. --mask-prob) "
                 f"and any --user-dir criterion")
    raise UserError(f"epoch {epoch} made no update in {steps} step(s): {cause}")


def record_update(meters: MeterGroup, result: dict) -> None:
    """Add one update's statistics to a group of meters (a logging window or an epoch)."""
    for key, value in result["logging_output"].items():
        meters.update(f"sum:{key}", value, kind="sum")
    meters.update("updates", 1, kind="sum")
    meters.update("gnorm", result["gnorm"])
    meters.update("clip", 100.0 if result["clipped"] else 0.0)
    meters.update("lr", result["lr"], kind="last")
    meters.update("train_wall", result["train_wall"], kind="sum")


def update_stats(meters: MeterGroup, trainer: Trainer, elapsed: float | None, wall_start: float) -> dict:
    """fairseq's per-interval/per-epoch fields from summed criterion outputs and trainer meters."""
    values = meters.smoothed_values()
    sums = {key[4:]: value for key, value in values.items() if key.startswith("sum:")}
    updates = max(values.get("updates", 0), 1)
    train_wall = values.get("train_wall", 0.0)
    seconds = elapsed if elapsed is not None else train_wall
    stats = dict(trainer.criterion.reduce_metrics(sums))
    ntokens = sums.get("ntokens", 0)
    stats.update({
        "wps": ntokens / seconds if seconds > 0 else 0.0,
        "ups": updates / seconds if seconds > 0 else 0.0,
        "wpb": ntokens / updates,
        "bsz": sums.get("nsentences", 0) / updates,
        "num_updates": trainer.num_updates,
        "lr": values.get("lr", trainer.get_lr()),
        "gnorm": values.get("gnorm", 0.0),
    })
    if trainer.clip_norm > 0:
        stats["clip"] = values.get("clip", 0.0)
    stats.update(trainer.extra_stats())
    stats["train_wall"] = train_wall
    stats["wall"] = time.perf_counter() - wall_start
    return stats


def validate_and_save(run: TrainingLoop, end_of_epoch: bool, *, stopping: bool = False) -> bool:
    """fairseq's schedule: save at epoch ends and every --save-interval-updates, validate alongside.
    `stopping` (a signal) adds a save of checkpoint_last.pt but no validation, which would only
    spend the scheduler's grace period; a signal during the validation abandons it (its score is
    not used) and stops the same way."""
    trainer, manager, loop = run.trainer, run.manager, run.loop
    epoch, num_updates = run.epoch_itr.epoch, trainer.num_updates
    max_update = run.settings.optimization.max_update
    reached_max = bool(max_update) and num_updates >= max_update
    scheduled_save = manager.is_save_time(epoch, num_updates, end_of_epoch) or reached_max
    do_validate = not stopping and not loop.disable_validation and (
        scheduled_save
        or (end_of_epoch and epoch % loop.validate_interval == 0)
        or (loop.validate_interval_updates > 0 and num_updates % loop.validate_interval_updates == 0))
    val_metric = None
    if do_validate:
        try:
            val_metric = run.validator(trainer, epoch, manager, end_of_epoch=end_of_epoch)
        except ValidationStopped:
            logger.info("validation abandoned for the stop request")
            trainer.stop_agreed = stopping = True
    should_stop = stopping or reached_max or (val_metric is not None and manager.should_stop_early(val_metric))
    if scheduled_save or manager.is_save_time(epoch, num_updates, end_of_epoch, stopping=stopping):
        extra_state = {
            "train_iterator": run.epoch_itr.state_dict(),
            "metrics": run.epoch_meters.state_dict(),
            "previous_training_time": time.perf_counter() - run.wall_start,
        }
        state = trainer.checkpoint_state(run.settings.run.flags, extra_state,
                                         save_optimizer_state=not run.settings.save.no_save_optimizer_state)
        manager.save(state, epoch=epoch, num_updates=num_updates, end_of_epoch=end_of_epoch, val_metric=val_metric)
    return should_stop


def cli_main() -> None:
    run_cli(main, "roberta-train")


if __name__ == "__main__":
    cli_main()
