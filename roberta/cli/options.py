"""Command-line flags: the fairseq names, declared once, validated before any data is read.

Parsing happens in two passes. The first pass reads only the component choices (`--task`,
`--criterion`, `--arch`, `--optimizer`, `--lr-scheduler`, `--user-dir`); the chosen
components then declare their own flags and the second pass parses everything, rejecting
any flag nobody declared.
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Any, Callable, NoReturn, Sequence, Union

from roberta import distributed, logging as roberta_logging, precision
from roberta.checkpoint.manager import add_save_args
from roberta.checkpoint.restore import add_restore_args
from roberta.cli.assembly import assemble_run, assemble_training
from roberta.cli.common import import_user_modules
from roberta.cli.fairseq_flags import add_fairseq_flags
from roberta.cli.watch import add_watch_args
from roberta.errors import UserError
from roberta.flag_types import non_negative_int, seed_int
from roberta.models import add_model_args
from roberta.optim import add_optimization_args
from roberta.registry import ARCHS, CRITERIONS, LR_SCHEDULERS, OPTIMIZERS, TASKS


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2, without the usage wall, and a
    flag declared `type=float` refuses NaN and +-inf."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Flags with a range declare a roberta.flag_types parser; this covers the rest, a
        # --user-dir plugin's included (argument groups share the parser's registry).
        self.register("type", float, _finite_float)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


_CHOICE_DEFAULTS = {"user_dir": None, "task": "masked_lm", "criterion": None, "arch": None, "optimizer": "adam",
                    "lr_scheduler": "fixed"}
StoredFlags = Union[dict, Callable[[dict], dict], None]


def _add_component_choices(parser: argparse.ArgumentParser, *, train: bool, defaults: bool = True) -> None:
    def default(dest: str) -> dict:
        return {"default": _CHOICE_DEFAULTS[dest]} if defaults else {}

    parser.add_argument("--user-dir", help="a Python package with extra tasks, criterions or architectures",
                        **default("user_dir"))
    parser.add_argument("--task", help="task name (see --help for choices)", **default("task"))
    parser.add_argument("--criterion", help="loss; defaults to the task's namesake", **default("criterion"))
    if train:
        parser.add_argument("--arch", "-a", help="model architecture preset, e.g. roberta_base", **default("arch"))
        parser.add_argument("--optimizer", help="optimizer", **default("optimizer"))
        parser.add_argument("--lr-scheduler", help="learning-rate schedule", **default("lr_scheduler"))


def _add_common_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("common")
    group.add_argument("--seed", type=seed_int("--seed"), default=1,
                       help="seed for data order, masking and dropout (dropout uses seed + update)")
    group.add_argument("--cpu", action="store_true", help="train on the CPU even if a GPU is visible")
    roberta_logging.add_logging_args(parser)


def _add_dataset_args(parser: argparse.ArgumentParser, *, train: bool) -> None:
    group = parser.add_argument_group("dataset and batching")
    group.add_argument("--max-tokens", type=int, help="maximum padded tokens per mini-batch")
    group.add_argument("--batch-size", "--max-sentences", dest="batch_size", type=int,
                       help="maximum examples per mini-batch")
    group.add_argument("--required-batch-size-multiple", type=int, default=8,
                       help="round batch sizes down to a multiple of this (1 disables)")
    group.add_argument("--num-workers", type=int, default=1,
                       help="data-loading worker processes (0 loads in the training process)")
    group.add_argument("--valid-subset", default="valid",
                       help="comma-separated splits to validate on; the first one picks the best checkpoint")
    group.add_argument("--skip-invalid-size-inputs-valid-test", action="store_true",
                       help="drop validation examples longer than the model allows instead of failing")
    group.add_argument("--max-tokens-valid", type=int, help="--max-tokens for validation (default: same)")
    group.add_argument("--batch-size-valid", "--max-sentences-valid", dest="batch_size_valid", type=int,
                       help="--batch-size for validation (default: same)")
    if train:
        group.add_argument("--train-subset", default="train", help="split to train on")
        group.add_argument("--disable-validation", action="store_true", help="never validate")
        group.add_argument("--validate-interval", type=int, default=1, help="validate every N epochs")
        group.add_argument("--validate-interval-updates", default=0,
                           type=non_negative_int("--validate-interval-updates"),
                           help="also validate every N updates (0: off)")


def run_flags() -> set[str]:
    """The flags of a run rather than of its model and task (logging, batching, precision,
    processes): roberta-validate, like fairseq-validate, takes these from its own command line
    and the task, criterion and model flags from the checkpoint."""
    parser = argparse.ArgumentParser(add_help=False)
    _add_common_args(parser)
    _add_dataset_args(parser, train=True)
    distributed.add_distributed_args(parser)
    precision.add_precision_args(parser.add_argument_group("precision"))
    return {action.dest for action in parser._actions}


def build_parser(*, train: bool) -> argparse.ArgumentParser:
    prog = "roberta-train" if train else "roberta-validate"
    parser = _Parser(prog=prog, allow_abbrev=False, description=(
        "Train a RoBERTa model (fairseq-train compatible flags)." if train else
        "Evaluate a checkpoint on one or more splits (fairseq-validate compatible flags)."))
    parser.add_argument("data", help="data directory written by roberta-preprocess")
    _add_component_choices(parser, train=train)
    _add_common_args(parser)
    _add_dataset_args(parser, train=train)
    distributed.add_distributed_args(parser)
    precision.add_precision_args(parser.add_argument_group("precision"))
    if not train:
        parser.add_argument("--path", help="checkpoint to evaluate (required unless --watch)")
        parser.add_argument("--unsafe-load", action="store_true",
                            help="allow a checkpoint that needs full unpickling (only for files you trust)")
        parser.add_argument("--save-predictions", metavar="PATH",
                            help="write the task's per-example predictions here, in dataset order "
                                 "(a file or a folder, depending on the task); with several "
                                 "--valid-subset values the subset name is added to the name")
        add_model_args(parser.add_argument_group("model"))
        add_watch_args(parser.add_argument_group("watching a training run"))
    return parser


def parse_args(argv: Sequence[str] | None, *, train: bool, defaults: StoredFlags = None) -> argparse.Namespace:
    """Parse in two passes so each chosen component declares its own flags.

    `defaults` (the flags a checkpoint was trained with, for roberta-validate) replace the
    built-in defaults; flags given on the command line still win. A function instead of a dict is
    called with the first pass's flags (`--path` among them for roberta-validate) to get them.
    """
    parser = full_parser(argv, train=train, stored=defaults)
    args = parser.parse_args(argv)
    check_flags(args, train=train)
    return args


def full_parser(argv: Sequence[str] | None, *, train: bool, stored: StoredFlags = None) -> argparse.ArgumentParser:
    """The parser with the flags of the components `argv` chooses (first pass), fairseq's
    unimplemented flags last, and `stored` values as defaults."""
    # The first pass has no --help of its own, so --help lists every chosen component's flags.
    # It records only the flags given, so a stored value can fill in the others.
    first_pass = argparse.ArgumentParser(add_help=False, allow_abbrev=False, argument_default=argparse.SUPPRESS)
    _add_component_choices(first_pass, train=train, defaults=False)
    if not train:
        first_pass.add_argument("--path")
        first_pass.add_argument("--unsafe-load", action="store_true")
    given = vars(first_pass.parse_known_args(argv)[0])
    stored = stored(given) if callable(stored) else (stored or {})
    stored = {key: value for key, value in stored.items() if key != "data"}
    choices = argparse.Namespace(**{**_CHOICE_DEFAULTS, **{key: value for key, value in stored.items()
                                                            if key in _CHOICE_DEFAULTS}, **given})
    parser = build_parser(train=train)
    parser.set_defaults(**stored)
    import_user_modules(choices.user_dir)
    task_cls = TASKS.get(choices.task)
    criterion_cls = CRITERIONS.get(choices.criterion or choices.task)
    task_cls.add_args(parser.add_argument_group(f"task {choices.task}"))
    criterion_cls.add_args(parser.add_argument_group("criterion"))
    if train:
        if not choices.arch and not wants_help(argv):
            raise UserError(f"--arch is required; choose from: {', '.join(ARCHS.names())}")
        if choices.arch:
            ARCHS.get(choices.arch)
        add_model_args(parser.add_argument_group("model"))
        add_optimization_args(parser.add_argument_group("optimization"))
        OPTIMIZERS.get(choices.optimizer).add_args(parser.add_argument_group(f"optimizer {choices.optimizer}"))
        LR_SCHEDULERS.get(choices.lr_scheduler).add_args(
            parser.add_argument_group(f"lr-scheduler {choices.lr_scheduler}"))
        checkpoint_group = parser.add_argument_group("checkpoint")
        add_restore_args(checkpoint_group)
        add_save_args(checkpoint_group)
    add_fairseq_flags(parser, train=train)
    # Again now that every flag is declared, so stored values replace each flag's own default.
    parser.set_defaults(**stored)
    return parser


def wants_help(argv: Sequence[str] | None) -> bool:
    return any(arg in ("-h", "--help") for arg in (sys.argv[1:] if argv is None else argv))


def check_flags(args: argparse.Namespace, *, train: bool) -> None:
    """Fail fast, before any data is read, on values that cannot work: the settings check
    themselves as they are assembled."""
    if train:
        assemble_training(args)
    else:
        assemble_run(args)
