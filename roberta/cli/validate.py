"""`roberta-validate`: score a checkpoint on one or more splits, with the training run's settings.

As fairseq-validate does, the task is rebuilt from the flags stored in the checkpoint; flags
given on this command line override them. `--path` may also be a fairseq `model.pt` or a
Hugging Face folder: the model's sizes are read from the file, the task flags from the command line.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

import torch

from roberta import checkpoint, distributed, options
from roberta.cli.common import run_cli
from roberta.cli.setup import epoch_iterator, pick_device
from roberta.distributed import SINGLE_PROCESS, DistributedContext
from roberta.errors import UserError
from roberta.evaluation import Validator
from roberta.logging import setup_logging
from roberta.models.pretrained import Pretrained, check_tying, load_pretrained
from roberta.models.weights import load_model_weights
from roberta.precision import resolve_precision
from roberta.registry import CRITERIONS, TASKS
from roberta.trainer import Trainer

logger = logging.getLogger("roberta.validate")

_BATCH_SIZE_FLAGS = {"--max-tokens", "--batch-size", "--max-sentences", "--max-tokens-valid", "--batch-size-valid",
                     "--max-sentences-valid"}
_STORED_BATCHING = ("max_tokens", "batch_size", "max_tokens_valid", "batch_size_valid")


def _checkpoint_path(argv: Sequence[str] | None) -> tuple[str, bool]:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--path")
    pre.add_argument("--unsafe-load", action="store_true")
    known, _ = pre.parse_known_args(argv)
    if not known.path and options.wants_help(argv):
        options.parse_args(argv, train=False)  # prints the help and exits
    if not known.path:
        raise UserError("--path is required: the checkpoint to evaluate")
    return known.path, known.unsafe_load


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
    path, unsafe = _checkpoint_path(argv)
    setup_logging()
    pretrained = load_pretrained(path, unsafe=unsafe)
    args = options.parse_args(argv, train=False, defaults=checkpoint_defaults(pretrained, argv))
    if args.save_predictions and not Path(args.save_predictions).absolute().parent.is_dir():
        raise UserError(f"--save-predictions {args.save_predictions}: the folder it goes in does not exist")
    if distributed.resolve_world_size(args) == 1:
        validate(args, SINGLE_PROCESS, pretrained)
    else:
        # Each process reads the checkpoint itself.
        del pretrained
        distributed.launch(validate, args, "roberta-validate")


def validate(args: argparse.Namespace, context: DistributedContext, pretrained: Pretrained | None = None) -> None:
    """One rank's share of the splits; statistics are summed over ranks and rank 0 reports them."""
    setup_logging(args.log_file if context.is_master else None, rank=context.rank)
    if pretrained is None:
        pretrained = load_pretrained(args.path, unsafe=args.unsafe_load)
    state = pretrained.training_state or {}
    task = TASKS.get(args.task).setup_task(args)
    model = task.build_model(args)
    check_tying(pretrained, model.config, args.path)
    load_model_weights(model, pretrained.state_dict, path=args.path)
    criterion = CRITERIONS.get(args.criterion).from_args(args, task)
    device = pick_device(args.cpu)
    trainer = Trainer(model, criterion, optimizer=None, lr_scheduler=None, device=device,
                      precision=resolve_precision(args, device), context=context)
    trainer.num_updates = checkpoint.num_updates(state)
    logger.info("loaded %s (update %d)", args.path, trainer.num_updates)
    if context.is_distributed:
        logger.info("validating on %d processes", context.world_size)
    validator = Validator(args, task, lambda split: epoch_iterator(args, task, split, train=False, context=context))
    with torch.inference_mode():
        # fairseq-validate names no epoch: the iterator state holds E+1 after epoch E, which would
        # be off by one, and the chance-level warning is about training progress.
        validator(trainer, epoch=None, end_of_epoch=False)


def cli_main() -> None:
    run_cli(main, "roberta-validate")


if __name__ == "__main__":
    cli_main()
