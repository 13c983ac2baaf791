"""Optimizers and LR schedulers; importing this package registers them by name.

`OPTIMIZERS.get("adam").from_args(args, params)` builds fairseq's Adam and
`LR_SCHEDULERS.get(name).from_args(args, optimizer)` a schedule that writes `lr * lr_scale`
into every param group. `add_optimization_args` declares `--lr`, `--update-freq`, ...
"""
from roberta.optim import adam, lr_scheduler  # noqa: F401
from roberta.optim.adam import Adam, build_adam, parse_betas
from roberta.optim.lr_scheduler.base import LRScheduler
from roberta.optim.options import add_optimization_args, parse_lr, parse_update_freq

__all__ = ["Adam", "LRScheduler", "add_optimization_args", "build_adam", "parse_betas", "parse_lr",
           "parse_update_freq"]
