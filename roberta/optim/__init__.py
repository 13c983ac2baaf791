"""Optimizers and LR schedulers; importing this package registers them by name.

Each registered class declares its flags (`add_args`) and a frozen `Settings` dataclass whose
fields are those flags' dests. `OPTIMIZERS.get("adam").build(settings, params)` builds fairseq's
Adam and `LR_SCHEDULERS.get(name).build(settings, optimizer)` a schedule that writes
`lr * lr_scale` into every param group. `add_optimization_args` declares `--lr`,
`--update-freq`, ..., which `OptimizationSettings` holds.
"""
from roberta.optim import adam, lr_scheduler  # noqa: F401
from roberta.optim.adam import Adam, build_adam, parse_betas
from roberta.optim.lr_scheduler.base import LRScheduler
from roberta.optim.options import OptimizationSettings, add_optimization_args, parse_lr, parse_update_freq

__all__ = ["Adam", "LRScheduler", "OptimizationSettings", "add_optimization_args", "build_adam", "parse_betas",
           "parse_lr", "parse_update_freq"]
