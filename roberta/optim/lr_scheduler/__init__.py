"""LR schedulers, one per file; importing this package registers them in `LR_SCHEDULERS`."""
from roberta.optim.lr_scheduler import cosine, fixed, inverse_sqrt, polynomial_decay, tri_stage  # noqa: F401
from roberta.optim.lr_scheduler.base import LRScheduler

__all__ = ["LRScheduler"]
