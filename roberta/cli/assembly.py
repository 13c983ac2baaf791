"""The typed settings of a run, assembled once from the parsed flags.

Values that depend on other flags are computed here and nowhere else: the number of processes,
the fp16 loss-scale window, the criterion (the task's namesake by default), the log format, and
the model sizes and max positions a restored checkpoint decides.
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, replace
from typing import Any

from roberta import logging as roberta_logging
from roberta.checkpoint.files import plain_config
from roberta.checkpoint.manager import SaveSettings
from roberta.checkpoint.restore import RestoreSettings
from roberta.cli.settings import settings_from_flags
from roberta.data.batching import BatchingSettings
from roberta.distributed import DistributedSettings, resolve_world_size
from roberta.errors import UserError
from roberta.evaluation import ValidationSettings
from roberta.models.architectures import ArchSettings, arch_settings, build_model_config, with_block_positions
from roberta.models.config import DEFAULT_MAX_POSITIONS, ModelConfig
from roberta.optim.loss_scaler import LossScalerSettings, default_scale_window
from roberta.optim.options import OptimizationSettings
from roberta.precision import PrecisionSettings
from roberta.registry import CRITERIONS, LR_SCHEDULERS, OPTIMIZERS, TASKS

logger = logging.getLogger("roberta.setup")

_SIZE_FIELDS = ("encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads",
                "max_positions")


@dataclass(frozen=True)
class LoopSettings:
    """What the training loop itself follows: when to stop, validate and log."""
    train_subset: str = "train"
    disable_validation: bool = False
    validate_interval: int = 1
    validate_interval_updates: int = 0
    log_format: str = "simple"
    log_interval: int = 100
    tensorboard_logdir: str | None = None

    def __post_init__(self) -> None:
        if self.validate_interval < 1:
            raise UserError(f"--validate-interval must be >= 1, got {self.validate_interval}")


@dataclass(frozen=True)
class RunSettings:
    """Everything `roberta-validate` and `roberta-train` share."""
    flags: dict  # the command line as plain data, stored in checkpoints
    task_name: str
    criterion_name: str
    seed: int
    cpu: bool
    user_dir: str | None
    log_file: str | None
    batching: BatchingSettings
    distributed: DistributedSettings
    precision: PrecisionSettings
    validation: ValidationSettings


@dataclass(frozen=True)
class TrainSettings:
    """A training run's settings: the shared ones and those of training alone."""
    run: RunSettings
    loop: LoopSettings
    optimization: OptimizationSettings
    loss_scaler: LossScalerSettings
    save: SaveSettings
    restore: RestoreSettings
    optimizer_name: str
    lr_scheduler_name: str
    arch: ArchSettings  # as given: sizes not given are None
    # The task's --tokens-per-sample where it has one: the default --max-positions (as in fairseq).
    block_size: int | None


def assemble_run(flags: argparse.Namespace, *, world_size: int | None = None) -> RunSettings:
    """The shared settings; `world_size` when known (a rank), else resolved from the flags."""
    batching = settings_from_flags(BatchingSettings, flags)
    world = world_size or resolve_world_size(flags.distributed_world_size, flags.cpu)
    criterion = flags.criterion or flags.task
    if getattr(flags, "save_predictions", None):
        _check_writes_predictions(flags.task, criterion)
    log_format = roberta_logging.resolve_log_format(flags.log_format, no_progress_bar=flags.no_progress_bar)
    values = {**vars(flags), "criterion": criterion, "log_format": log_format, "distributed_world_size": world}
    return RunSettings(
        flags=plain_config(values), task_name=flags.task, criterion_name=criterion, seed=flags.seed, cpu=flags.cpu,
        user_dir=flags.user_dir, log_file=flags.log_file, batching=batching,
        distributed=settings_from_flags(DistributedSettings, flags, {"distributed_world_size": world}),
        precision=settings_from_flags(PrecisionSettings, flags),
        validation=settings_from_flags(ValidationSettings, flags, {"log_format": log_format}))


def _check_writes_predictions(task_name: str, criterion_name: str) -> None:
    task, criterion = TASKS.get(task_name), CRITERIONS.get(criterion_name)
    if not criterion.writes_records:
        raise UserError(f"--save-predictions: the {criterion.__name__} criterion does not produce "
                        f"per-example predictions")
    if not task.writes_predictions:
        raise UserError(f"--save-predictions: this task ({task.__name__}) has no prediction format")


def assemble_training(flags: argparse.Namespace, *, world_size: int | None = None) -> TrainSettings:
    """Every setting of a training run, checked together before any data is read."""
    run = assemble_run(flags, world_size=world_size)
    restore = settings_from_flags(RestoreSettings, flags)
    problems = restore.problems()
    try:
        save = settings_from_flags(SaveSettings, flags)
    except UserError as error:
        problems.append(str(error))
    if problems:
        raise UserError("; ".join(problems))
    optimization = settings_from_flags(OptimizationSettings, flags)
    if run.precision.float16_flags and flags.fp16_scale_window is None and len(optimization.update_freq) > 1:
        raise UserError(f"--update-freq {','.join(map(str, optimization.update_freq))} changes per epoch, so the "
                        f"default --fp16-scale-window (2**14 / --update-freq) is ambiguous; give "
                        f"--fp16-scale-window explicitly")
    window = flags.fp16_scale_window or default_scale_window(run.distributed.distributed_world_size,
                                                             optimization.update_freq[0])
    return TrainSettings(
        run=run, loop=settings_from_flags(LoopSettings, flags, {"log_format": run.validation.log_format}),
        optimization=optimization,
        loss_scaler=settings_from_flags(LossScalerSettings, flags, {"fp16_scale_window": window}),
        save=save, restore=restore, optimizer_name=flags.optimizer, lr_scheduler_name=flags.lr_scheduler,
        arch=arch_settings(vars(flags)), block_size=getattr(flags, "tokens_per_sample", None))


def task_settings(run: RunSettings, flags: argparse.Namespace, max_positions: int) -> Any:
    """The chosen task's own settings; `max_positions` is the model's."""
    task_cls = TASKS.get(run.task_name)
    return settings_from_flags(task_cls.Settings, flags,
                               {"max_positions": max_positions, "criterion": run.criterion_name})


def criterion_settings(run: RunSettings, flags: argparse.Namespace) -> Any:
    return settings_from_flags(CRITERIONS.get(run.criterion_name).Settings, flags)


def optimizer_settings(settings: TrainSettings, flags: argparse.Namespace) -> Any:
    return settings_from_flags(OPTIMIZERS.get(settings.optimizer_name).Settings, flags)


def lr_scheduler_settings(settings: TrainSettings, flags: argparse.Namespace) -> Any:
    return settings_from_flags(LR_SCHEDULERS.get(settings.lr_scheduler_name).Settings, flags)


def model_arch(arch: ArchSettings, block_size: int | None, stored: ModelConfig | None = None) -> ArchSettings:
    """The architecture to build: the flags, then for sizes and --max-positions they leave to the
    --arch preset, a restored checkpoint's values (so restoring a fairseq or resized model needs no
    flags repeated), then --tokens-per-sample (`block_size`) for --max-positions, then the preset."""
    if stored is not None:
        preset = build_model_config(with_block_positions(ArchSettings(arch.arch), block_size), 2)
        taken = {name: getattr(stored, name) for name in _SIZE_FIELDS if getattr(arch, name) is None}
        changed = {name: value for name, value in taken.items() if value != getattr(preset, name)}
        if changed:
            logger.info("model sizes from the checkpoint: %s",
                        ", ".join(f"--{name.replace('_', '-')} {value}" for name, value in changed.items()))
        arch = replace(arch, **taken)
    return with_block_positions(arch, block_size)


def max_positions(arch: ArchSettings) -> int:
    """The model's longest input, which tasks size their examples by."""
    return arch.max_positions if arch.max_positions is not None else DEFAULT_MAX_POSITIONS
