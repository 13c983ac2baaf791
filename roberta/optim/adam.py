"""fairseq's `adam`: decoupled weight decay, eps on the raw sqrt(v), fp32 math, foreach kernels.

One update, for every parameter p with gradient g at its step t:

    p <- p - lr * wd * p
    m <- b1 * m + (1 - b1) * g;   v <- b2 * v + (1 - b2) * g^2
    p <- p - lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)

This is torch's AdamW except where eps goes (torch adds it to the bias-corrected sqrt(v_hat)),
which changes small-gradient updates, so fairseq recipes are reproduced only with this form.
fp16/bf16 parameters are updated in fp32 and rounded back; the moments are always fp32.

On CUDA with apex installed, apex's FusedAdam runs the update, with its eps rescaled every
step so that both forms agree (see `_with_fairseq_eps`); otherwise `Adam` below does.
"""
from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, overload

import torch
from torch.optim import Optimizer

from roberta.errors import UserError
from roberta.flag_types import non_negative_float, positive_float
from roberta.optim.options import parse_float_tuple
from roberta.registry import OPTIMIZERS

logger = logging.getLogger(__name__)

Params = Iterable[torch.Tensor] | Iterable[dict[str, Any]]
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def parse_betas(text: str) -> tuple[float, float]:
    """`--adam-betas '(0.9, 0.98)'`: two numbers in [0, 1)."""
    beta1, beta2 = parse_float_tuple(text, "--adam-betas", 2)
    if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
        raise UserError(f"--adam-betas {text!r}: both betas must be in [0, 1)")
    return beta1, beta2


def betas_flag(text: str) -> str:
    """`--adam-betas` checked when the flags are parsed, and kept as typed: the tuple literal is
    what fairseq stores in its checkpoints."""
    parse_betas(text)
    return text


def as_param_groups(params: Params, lr: float) -> list[dict[str, Any]]:
    """Normalise tensors or group dicts into group dicts whose LR is `lr * lr_scale`."""
    items: list[Any] = list(params)
    if not items:
        raise ValueError("the optimizer got no parameters to train")
    if not isinstance(items[0], dict):
        items = [{"params": items}]
    groups = []
    for item in items:
        group = dict(item)
        tensors = group["params"]
        group["params"] = [tensors] if isinstance(tensors, torch.Tensor) else list(tensors)
        group.setdefault("lr", lr * group.get("lr_scale", 1.0))
        groups.append(group)
    return groups


@dataclass
class _Bucket:
    """Tensors that share device, dtype, step and hyper-parameters: one foreach call each."""

    params: list[torch.Tensor] = field(default_factory=list)
    grads: list[torch.Tensor] = field(default_factory=list)
    exp_avgs: list[torch.Tensor] = field(default_factory=list)
    exp_avg_sqs: list[torch.Tensor] = field(default_factory=list)


@OPTIMIZERS.register("adam")
class Adam(Optimizer):
    """fairseq's Adam (see the module docstring), with multi-tensor updates.

    Parameter groups may carry `lr_scale`; the LR schedulers set each group's LR to
    `lr * lr_scale`. Per-parameter state is `step` (int), `exp_avg`, `exp_avg_sq` (fp32),
    as in fairseq's checkpoints.
    """

    @dataclass(frozen=True, kw_only=True, slots=True)
    class Settings:
        """The flags Adam reads, by dest. `lr` is --lr: its first value sets the initial group LRs."""

        lr: tuple[float, ...]
        adam_betas: str = "(0.9, 0.999)"  # as typed: fairseq's checkpoints store the literal
        adam_eps: float = 1e-8
        weight_decay: float = 0.0
        fp16_adam_stats: bool = False

        def __post_init__(self) -> None:
            parse_betas(self.adam_betas)

        @property
        def betas(self) -> tuple[float, float]:
            return parse_betas(self.adam_betas)

    def __init__(self, params: Params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        super().__init__(as_param_groups(params, lr), defaults)

    @staticmethod
    def add_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--adam-betas", type=betas_flag, default="(0.9, 0.999)", metavar="B",
                            help="betas for Adam as a tuple literal, e.g. '(0.9, 0.98)'")
        # 0 would divide 0 by 0 for every weight without gradient yet (embedding rows not seen).
        parser.add_argument("--adam-eps", type=positive_float("--adam-eps"), default=1e-8, metavar="D",
                            help="epsilon added to sqrt(v) before bias correction (fairseq's placement)")
        parser.add_argument("--weight-decay", "--wd", type=non_negative_float("--weight-decay"), default=0.0,
                            metavar="WD",
                            help="decoupled weight decay (p -= lr*wd*p), applied to every parameter")
        parser.add_argument("--use-old-adam", action="store_true",
                            help="accepted for fairseq compatibility: this is always fairseq's Adam")
        parser.add_argument("--fp16-adam-stats", action="store_true",
                            help="accepted for fairseq compatibility: the moments are always kept in fp32")

    @classmethod
    def build(cls, settings: Adam.Settings, params: Params) -> Optimizer:
        """An apex FusedAdam when it can run, else `Adam`."""
        if settings.fp16_adam_stats:
            logger.warning("--fp16-adam-stats has no effect: Adam moments are kept in fp32")
        return build_adam(params, lr=settings.lr[0], betas=settings.betas, eps=settings.adam_eps,
                          weight_decay=settings.weight_decay)

    # torch.optim.Optimizer declares `step` as these two overloads; subclasses must match them.
    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for (_, _, lr, wd, beta1, beta2, eps, step), bucket in self._buckets().items():
            _adam_update(bucket, lr=lr, weight_decay=wd, beta1=beta1, beta2=beta2, eps=eps, step=step)
        return loss

    def _buckets(self) -> dict[tuple, _Bucket]:
        """Advance each parameter's step and group the parameters that can share kernels."""
        buckets: dict[tuple, _Bucket] = {}
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("adam does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                state["step"] += 1
                key = (p.device, p.dtype, group["lr"], group["weight_decay"], beta1, beta2,
                       group["eps"], state["step"])
                bucket = buckets.setdefault(key, _Bucket())
                bucket.params.append(p)
                bucket.grads.append(p.grad)
                bucket.exp_avgs.append(state["exp_avg"])
                bucket.exp_avg_sqs.append(state["exp_avg_sq"])
        return buckets

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        _restore_fp32_moments(self, state_dict)
        for group in self.param_groups:
            # A checkpoint written by the apex path keeps fairseq's eps and the step per group.
            if "fairseq_eps" in group:
                group["eps"] = group.pop("fairseq_eps")
            group_step = group.pop("step", None)
            for p in group["params"]:
                state = self.state[p]
                if state and "step" not in state and group_step is not None:
                    state["step"] = int(group_step)


def _adam_update(bucket: _Bucket, *, lr: float, weight_decay: float, beta1: float, beta2: float,
                 eps: float, step: int) -> None:
    params, grads = bucket.params, bucket.grads
    low_precision = params[0].dtype in _LOW_PRECISION
    if low_precision:
        params = [p.float() for p in params]
        grads = [g.float() for g in grads]
    if weight_decay != 0:
        # fairseq's p + (-lr*wd) * p; the factor 1 - lr*wd would be rounded in fp32 (1 - 1e-7 becomes
        # 1 - 1.19e-7), biasing every decay step.
        torch._foreach_add_(params, params, alpha=-lr * weight_decay)
    torch._foreach_mul_(bucket.exp_avgs, beta1)
    torch._foreach_add_(bucket.exp_avgs, grads, alpha=1 - beta1)
    torch._foreach_mul_(bucket.exp_avg_sqs, beta2)
    torch._foreach_addcmul_(bucket.exp_avg_sqs, grads, grads, value=1 - beta2)
    denom = torch._foreach_sqrt(bucket.exp_avg_sqs)
    torch._foreach_add_(denom, eps)
    step_size = lr * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
    torch._foreach_addcdiv_(params, bucket.exp_avgs, denom, value=-step_size)
    if low_precision:
        torch._foreach_copy_(bucket.params, params)


def _restore_fp32_moments(optimizer: Optimizer, state_dict: dict[str, Any]) -> None:
    """Undo torch's cast of loaded state to the parameter dtype: our moments stay fp32."""
    saved_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for saved_id, p in zip(saved_ids, params):
        saved = state_dict["state"].get(saved_id, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in saved:
                optimizer.state[p][key] = saved[key].to(device=p.device, dtype=torch.float32)


def build_adam(params: Params, *, lr: float, betas: tuple[float, float] = (0.9, 0.999),
               eps: float = 1e-8, weight_decay: float = 0.0) -> Optimizer:
    """apex's FusedAdam (fairseq's eps) when apex is installed and every parameter is fp32 on CUDA.

    16-bit weights (--memory-efficient-*) stay with `Adam`, which keeps their moments in fp32.
    """
    groups = as_param_groups(params, lr)
    fused_adam = _apex_fused_adam() if _all_fp32_on_cuda(groups) else None
    if fused_adam is not None:
        try:
            return _with_fairseq_eps(fused_adam)([dict(g) for g in groups], lr=lr, betas=betas,
                                                 eps=eps, weight_decay=weight_decay)
        except RuntimeError as error:  # apex installed without its CUDA extensions
            logger.warning("apex FusedAdam cannot run (%s); using the foreach Adam", error)
    return Adam(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def _all_fp32_on_cuda(groups: list[dict[str, Any]]) -> bool:
    return all(p.is_cuda and p.dtype == torch.float32 for group in groups for p in group["params"])


def _apex_fused_adam() -> type[Optimizer] | None:
    try:
        from apex.optimizers import FusedAdam
    except ImportError:
        return None
    return FusedAdam


def _with_fairseq_eps(fused_adam: type[Optimizer]) -> Callable[..., Optimizer]:
    """Subclass apex's FusedAdam so that it computes fairseq's update exactly.

    apex (adam_w_mode) adds eps to sqrt(v_hat) = sqrt(v) / sqrt(1 - b2^t); fairseq adds it to
    sqrt(v). The two agree when apex's eps is `eps / sqrt(1 - b2^t)`, so each group's eps is
    rewritten before every step from `fairseq_eps`. Remaining differences from `Adam`: apex
    counts steps per group (a parameter without a gradient still advances the count) and its
    `zero_grad` sets gradients to None. Checkpoints move between the two in both directions.
    """

    # A base class known only at run time (apex is optional), which mypy cannot check.
    class FairseqEpsFusedAdam(fused_adam):  # type: ignore[misc, valid-type]
        def __init__(self, params: Params, *, lr: float, betas: tuple[float, float], eps: float,
                     weight_decay: float) -> None:
            super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                             adam_w_mode=True)
            for group in self.param_groups:
                group.setdefault("fairseq_eps", group["eps"])

        def step(self, closure: Callable[[], float] | None = None) -> float | None:
            for group in self.param_groups:
                next_step = int(group.get("step", 0)) + 1
                group["eps"] = group["fairseq_eps"] / math.sqrt(1 - group["betas"][1] ** next_step)
            return super().step(closure)

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            super().load_state_dict(state_dict)
            _restore_fp32_moments(self, state_dict)
            for group in self.param_groups:
                group.setdefault("fairseq_eps", group["eps"])
                steps = [self.state[p].pop("step") for p in group["params"] if "step" in self.state[p]]
                if "step" not in group and steps:  # written by `Adam`, which counts per parameter
                    group["step"] = max(int(s) for s in steps)

    return FairseqEpsFusedAdam
