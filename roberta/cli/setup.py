"""Building a run from parsed flags: task, model, criterion, optimizer, trainer, data iterators."""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from roberta import checkpoint, fairseq_resume
from roberta.data.batching import batch_by_size, filter_by_size
from roberta.data.iterators import EpochBatchIterator
from roberta.distributed import SINGLE_PROCESS, DistributedContext
from roberta.errors import UserError
from roberta.models import build_model_config
from roberta.models.pretrained import Pretrained, check_tying, load_pretrained
from roberta.optim.layer_decay import (align_saved_groups, count_encoder_layers, describe_param_groups,
                                       layer_decay_param_groups)
from roberta.precision import build_loss_scaler, resolve_precision
from roberta.registry import CRITERIONS, LR_SCHEDULERS, OPTIMIZERS, TASKS
from roberta.trainer import Trainer

logger = logging.getLogger("roberta.setup")

_SIZE_FLAGS = ("encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads",
               "max_positions")


def checkpoint_manager(args: argparse.Namespace, context: DistributedContext = SINGLE_PROCESS
                       ) -> checkpoint.CheckpointManager:
    """The run's checkpoint policy; only rank 0 writes files."""
    manager = checkpoint.CheckpointManager.from_args(args)
    manager.writes_files = context.is_master
    return manager


def build_and_restore(args: argparse.Namespace, manager: checkpoint.CheckpointManager,
                      context: DistributedContext = SINGLE_PROCESS):
    """Task, trainer and the extra state to resume. The starting checkpoint is read once, before
    the model is built, and let go once restored (it can be gigabytes)."""
    start = starting_point(args)
    task, trainer = build_components(args, manager, context, start)
    return task, trainer, restore(args, trainer, manager, start)


def pick_device(cpu: bool) -> torch.device:
    if not cpu and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@dataclass(frozen=True)
class StartingPoint:
    """The checkpoint a run starts from (none for a fresh run) and what of it to reset."""
    path: Path | None = None
    resets: checkpoint.Resets = checkpoint.Resets()
    pretrained: Pretrained | None = None


def starting_point(args: argparse.Namespace) -> StartingPoint:
    """Find and read --restore-file (or checkpoint_last.pt) before anything is built."""
    path, resets = checkpoint.resolve_restore_file(args.restore_file, args.save_dir, args.finetune_from_model,
                                                   suffix=args.checkpoint_suffix)
    if path is None:
        return StartingPoint()
    return StartingPoint(path, resets.merged_with(checkpoint.Resets.from_args(args)),
                         load_pretrained(path, unsafe=args.unsafe_load))


def adopt_model_sizes(args: argparse.Namespace, pretrained: Pretrained | None) -> None:
    """Sizes and --max-positions that the command line leaves to the --arch preset are taken from
    the checkpoint, so restoring a fairseq or resized model needs no flags repeated."""
    if pretrained is None or pretrained.config is None:
        return
    preset = build_model_config(args, pretrained.config.vocab_size)
    taken = {}
    for name in _SIZE_FLAGS:
        if getattr(args, name, None) is None:
            setattr(args, name, getattr(pretrained.config, name))
            if getattr(args, name) != getattr(preset, name):
                taken[name] = getattr(args, name)
    if taken:
        logger.info("model sizes from the checkpoint: %s",
                    ", ".join(f"--{name.replace('_', '-')} {value}" for name, value in taken.items()))


def build_components(args: argparse.Namespace, manager: checkpoint.CheckpointManager,
                     context: DistributedContext = SINGLE_PROCESS, start: StartingPoint = StartingPoint()):
    """Task and trainer for a training run (this rank's part of it)."""
    adopt_model_sizes(args, start.pretrained)
    device = pick_device(args.cpu)
    precision = resolve_precision(args, device)
    task = TASKS.get(args.task).setup_task(args)
    # On its device and in its storage type before the optimizer sees it (apex needs CUDA weights).
    model = task.build_model(args).to(device=device, dtype=precision.param_dtype)
    criterion = CRITERIONS.get(args.criterion).from_args(args, task)
    logger.info("model %s: %s parameters (%s trained)", args.arch,
                f"{sum(p.numel() for p in model.parameters()):,}",
                f"{sum(p.numel() for p in model.parameters() if p.requires_grad):,}")
    optimizer = OPTIMIZERS.get(args.optimizer).from_args(args, trainable_param_groups(args, model))
    lr_scheduler = LR_SCHEDULERS.get(args.lr_scheduler).from_args(args, optimizer)
    trainer = Trainer(model, criterion, optimizer, lr_scheduler, device=device, clip_norm=args.clip_norm,
                      seed=args.seed, precision=precision, loss_scaler=build_loss_scaler(args, precision),
                      context=context, ddp_backend=args.ddp_backend,
                      find_unused_parameters=args.find_unused_parameters, oom_backoff=args.oom_backoff)
    manager.faults = trainer.faults
    if context.is_distributed:
        logger.info("training on %d processes (%s, --ddp-backend %s)", context.world_size,
                    "NCCL" if device.type == "cuda" else "gloo", args.ddp_backend)
    return task, trainer


def trainable_param_groups(args: argparse.Namespace, model: torch.nn.Module) -> list[torch.Tensor] | list[dict]:
    """The trainable parameters, in --lr-decay groups when layer-wise LR decay is on."""
    if args.lr_decay == 1.0:
        if args.lr_decay_layers is not None:
            logger.warning("--lr-decay-layers %d has no effect without --lr-decay", args.lr_decay_layers)
        return [p for p in model.parameters() if p.requires_grad]
    num_layers = args.lr_decay_layers if args.lr_decay_layers is not None else count_encoder_layers(model)
    groups = layer_decay_param_groups(model, args.lr_decay, num_layers)
    logger.info("%s", describe_param_groups(args.lr_decay, groups))
    return groups


def restore(args: argparse.Namespace, trainer: Trainer, manager: checkpoint.CheckpointManager,
            start: StartingPoint) -> dict | None:
    """Load the starting checkpoint into the trainer; returns the extra state to resume.

    Ours and fairseq's (0.10-0.12, and 2019 files that carry training state) continue as
    fairseq would: update count, optimizer, schedule and data position, less what --reset-*
    drops. A Hugging Face folder has only weights.
    """
    path, pretrained, resets = start.path, start.pretrained, start.resets
    if path is None or pretrained is None:
        logger.info("no checkpoint found in %s: starting from scratch", args.save_dir)
        return None
    check_tying(pretrained, trainer.model.config, path)
    state = pretrained.training_state
    if state is None:
        logger.info("%s is a %s model: starting from its weights with a fresh optimizer, LR schedule, update "
                    "count, data position and meters (as with --reset-optimizer --reset-dataloader "
                    "--reset-meters)", path, pretrained.source)
        state, resets = {"model": pretrained.state_dict}, checkpoint.Resets(True, True, True, True)
    if not resets.optimizer and state.get(fairseq_resume.STATE_KEY):
        state = {**state, "last_optimizer_state": fairseq_resume.optimizer_state_for(
            state[fairseq_resume.STATE_KEY], trainer.optimizer, trainer.model, path)}
    elif not resets.optimizer and state.get("last_optimizer_state") is not None:
        state = {**state, "last_optimizer_state": align_saved_groups(state["last_optimizer_state"],
                                                                     trainer.optimizer, path=path)}
    extra_state = trainer.load_checkpoint(state, resets, path=path,
                                          optimizer_overrides=checkpoint.parse_optimizer_overrides(
                                              args.optimizer_overrides))
    manager.load_state(extra_state)
    logger.info("restored %s (update %d)", path, trainer.num_updates)
    return extra_state


def epoch_iterator(args: argparse.Namespace, task, split: str, *, train: bool, state: dict | None = None,
                   context: DistributedContext = SINGLE_PROCESS) -> EpochBatchIterator:
    """Batches for `split`: length-filtered, token-budgeted, sharded over ranks, resumable."""
    dataset = task.load_dataset(split)
    max_positions = task.max_positions()
    indices = dataset.ordered_indices()
    indices = filter_by_size(indices, dataset.sizes, max_positions,
                             raise_on_long=not train and not args.skip_invalid_size_inputs_valid_test,
                             split_name=split)
    max_tokens = args.max_tokens if train else (args.max_tokens_valid or args.max_tokens)
    max_sentences = args.batch_size if train else (args.batch_size_valid or args.batch_size)
    if max_tokens is not None and max_tokens < max_positions and train:
        logger.warning("--max-tokens %d is below the longest allowed example (%d tokens): "
                       "longer examples are skipped", max_tokens, max_positions)
    batches = batch_by_size(indices, dataset.sizes, max_tokens=max_tokens, max_sentences=max_sentences,
                            required_batch_size_multiple=args.required_batch_size_multiple if train else 1)
    if not batches:
        raise UserError(f"split '{split}' has no example that fits --max-positions {max_positions} "
                        f"and --max-tokens {max_tokens}")
    if train and len(batches) < context.world_size:
        raise UserError(f"split '{split}' has {len(batches)} mini-batches, fewer than the {context.world_size} "
                        f"processes; lower --max-tokens/--batch-size or use fewer processes")
    iterator = EpochBatchIterator(dataset, batches, seed=args.seed, shuffle=train,
                                  num_workers=args.num_workers, num_shards=context.world_size,
                                  shard_id=context.rank,
                                  update_freq=args.update_freq if train else [1])
    if state is not None:
        iterator.load_state_dict(state)
    return iterator
