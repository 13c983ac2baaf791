"""Building a run from its settings: task, model, criterion, optimizer, trainer, data iterators, and
the restore of a starting checkpoint into them."""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass

import torch

from roberta.checkpoint.manager import CheckpointManager
from roberta.checkpoint.restore import RestorePlan, RunProgress, plan_restore
from roberta.cli.assembly import (RunSettings, TrainSettings, criterion_settings, lr_scheduler_settings,
                                  max_positions, model_arch, optimizer_settings, task_settings)
from roberta.data.batching import BatchingSettings, batch_by_size, filter_by_size
from roberta.data.iterators import EpochBatchIterator
from roberta.distributed import SINGLE_PROCESS, DistributedContext
from roberta.errors import UserError
from roberta.gradient_sync import choose_gradient_sync
from roberta.models.architectures import ArchSettings, build_model_config
from roberta.models.pretrained import check_tying
from roberta.models.roberta import RobertaModel
from roberta.models.weights import load_model_weights
from roberta.optim.layer_decay import count_encoder_layers, describe_param_groups, layer_decay_param_groups
from roberta.optim.options import OptimizationSettings
from roberta.precision import build_loss_scaler, resolve_precision
from roberta.registry import CRITERIONS, LR_SCHEDULERS, OPTIMIZERS, TASKS
from roberta.task import Task
from roberta.trainer import Trainer

logger = logging.getLogger("roberta.setup")


@dataclass
class BuiltRun:
    """A training run ready to go: its task and trainer, and the progress of the run it continues
    (a fresh run's is empty)."""
    task: Task
    trainer: Trainer
    progress: RunProgress


def pick_device(cpu: bool) -> torch.device:
    if not cpu and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def build_task(run: RunSettings, flags: argparse.Namespace, arch: ArchSettings) -> tuple[Task, RobertaModel]:
    """The task and its model (built on the CPU in fp32)."""
    task = TASKS.get(run.task_name).setup_task(task_settings(run, flags, max_positions(arch)))
    model = task.build_model(build_model_config(arch, len(task.dictionary)))
    return task, model


def build_training(settings: TrainSettings, flags: argparse.Namespace, manager: CheckpointManager,
                   context: DistributedContext = SINGLE_PROCESS) -> BuiltRun:
    """Task, trainer and checkpoint manager for this rank, with the starting checkpoint (read once,
    before the model is built, and let go once restored: it can be gigabytes) restored into them."""
    run = settings.run
    plan = plan_restore(settings.restore)
    arch = model_arch(settings.arch, settings.block_size, plan.pretrained.config if plan is not None else None)
    task, model = build_task(run, flags, arch)
    device = pick_device(run.cpu)
    precision = resolve_precision(run.precision, device)
    # On its device and in its storage type before the optimizer sees it (apex needs CUDA weights).
    model = model.to(device=device, dtype=precision.param_dtype)
    criterion = CRITERIONS.get(run.criterion_name).build(criterion_settings(run, flags), task)
    logger.info("model %s: %s parameters (%s trained)", arch.arch,
                f"{sum(p.numel() for p in model.parameters()):,}",
                f"{sum(p.numel() for p in model.parameters() if p.requires_grad):,}")
    optimizer = OPTIMIZERS.get(settings.optimizer_name).build(
        optimizer_settings(settings, flags), trainable_param_groups(settings.optimization, model))
    lr_scheduler = LR_SCHEDULERS.get(settings.lr_scheduler_name).build(lr_scheduler_settings(settings, flags),
                                                                        optimizer)
    gradient_sync = choose_gradient_sync(context, run.distributed.ddp_backend, device,
                                         run.distributed.find_unused_parameters)
    trainer = Trainer(model, criterion, optimizer, lr_scheduler, device=device,
                      clip_norm=settings.optimization.clip_norm, seed=run.seed, precision=precision,
                      loss_scaler=build_loss_scaler(precision, settings.loss_scaler), context=context,
                      gradient_sync=gradient_sync, oom_backoff=settings.optimization.oom_backoff)
    if context.is_distributed:
        logger.info("training on %d processes (%s, --ddp-backend %s)", context.world_size,
                    "NCCL" if device.type == "cuda" else "gloo", run.distributed.ddp_backend)
    manager.faults = trainer.faults
    progress = restore(plan, trainer, manager) if plan is not None else RunProgress()
    return BuiltRun(task, trainer, progress)


def trainable_param_groups(settings: OptimizationSettings, model: torch.nn.Module) -> list[torch.nn.Parameter] | list[dict]:
    """The trainable parameters, in --lr-decay groups when layer-wise LR decay is on."""
    if settings.lr_decay == 1.0:
        if settings.lr_decay_layers is not None:
            logger.warning("--lr-decay-layers %d has no effect without --lr-decay", settings.lr_decay_layers)
        return [p for p in model.parameters() if p.requires_grad]
    num_layers = settings.lr_decay_layers if settings.lr_decay_layers is not None else count_encoder_layers(model)
    groups = layer_decay_param_groups(model, settings.lr_decay, num_layers)
    logger.info("%s", describe_param_groups(settings.lr_decay, groups))
    return groups


def restore(plan: RestorePlan, trainer: Trainer, manager: CheckpointManager) -> RunProgress:
    """Give each stateful object its part of the starting checkpoint; returns the loop's part."""
    check_tying(plan.pretrained, trainer.model.config, plan.path)
    load_model_weights(trainer.model, plan.pretrained.state_dict, path=plan.path)
    trainer.restore(plan.trainer, path=plan.path)
    manager.restore_best(plan.progress.best)
    logger.info("restored %s (update %d)", plan.path, trainer.num_updates)
    return plan.progress


def epoch_iterator(settings: BatchingSettings, task: Task, split: str, *, train: bool, state: dict | None = None,
                   context: DistributedContext = SINGLE_PROCESS) -> EpochBatchIterator:
    """Batches for `split`: length-filtered, token-budgeted, sharded over ranks, resumable."""
    dataset = task.load_dataset(split)
    max_positions = task.max_positions()
    indices = dataset.ordered_indices()
    indices = filter_by_size(indices, dataset.sizes, max_positions,
                             raise_on_long=not train and not settings.skip_invalid_size_inputs_valid_test,
                             split_name=split)
    max_tokens, max_sentences = settings.limits(train=train)
    if max_tokens is not None and max_tokens < max_positions and train:
        logger.warning("--max-tokens %d is below the longest allowed example (%d tokens): "
                       "longer examples are skipped", max_tokens, max_positions)
    batches = batch_by_size(indices, dataset.sizes, max_tokens=max_tokens, max_sentences=max_sentences,
                            required_batch_size_multiple=settings.required_batch_size_multiple if train else 1)
    if not batches:
        raise UserError(f"split '{split}' has no example that fits --max-positions {max_positions} "
                        f"and --max-tokens {max_tokens}")
    if train and len(batches) < context.world_size:
        raise UserError(f"split '{split}' has {len(batches)} mini-batches, fewer than the {context.world_size} "
                        f"processes; lower --max-tokens/--batch-size or use fewer processes")
    iterator = EpochBatchIterator(dataset, batches, seed=settings.seed, shuffle=train,
                                  num_workers=settings.num_workers, num_shards=context.world_size,
                                  shard_id=context.rank, update_freq=settings.update_freq if train else [1])
    if state is not None:
        iterator.load_state_dict(state)
    return iterator
