"""Numeric precision of a training run: fairseq's --fp16/--bf16 flags, resolved against the device.

fairseq casts the model to 16 bits and keeps an fp32 master copy of the weights inside its
optimizer wrapper. `--fp16`/`--bf16` get the same arithmetic from `torch.autocast` over fp32
weights: the weights *are* the master copy, so checkpoints hold fp32 weights and a resume is
exact. The memory-efficient variants store the weights themselves in 16 bits, as fairseq's
do; Adam updates them in fp32 on the fly and keeps its moments in fp32. Autocast stays on for
them too, so that softmax, layer norm and the losses still run in fp32 where torch deems it
necessary. Only float16 needs loss scaling; bfloat16 has fp32's exponent range.
"""
from __future__ import annotations

import argparse
import logging
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from roberta.errors import UserError
from roberta.flag_types import non_negative_float, positive_float, positive_int, probability
from roberta.optim.loss_scaler import NO_LOSS_SCALING, DynamicLossScaler, LossScaler, LossScalerSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Precision:
    """How the forward pass computes (`autocast_dtype`, None = fp32), what the weights are
    stored in, and whether the loss is scaled before backward."""

    autocast_dtype: torch.dtype | None = None
    param_dtype: torch.dtype = torch.float32
    loss_scaling: bool = False

    def autocast(self, device: torch.device) -> AbstractContextManager:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device.type, dtype=self.autocast_dtype)


FP32 = Precision()


def add_precision_args(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """fairseq's precision and loss-scaling flags (a parser or an argument group)."""
    parser.add_argument("--fp16", action="store_true",
                        help="float16 arithmetic (autocast) with dynamic loss scaling; weights, gradients "
                             "and Adam state stay fp32, like fairseq's fp32 master copy. Needs a CUDA GPU: "
                             "on the CPU the run trains in fp32 (with a warning)")
    parser.add_argument("--memory-efficient-fp16", action="store_true",
                        help="--fp16 with the weights and gradients themselves in float16 (no fp32 copy: "
                             "4 bytes less per parameter, though Adam's step briefly upcasts them to fp32); "
                             "Adam keeps fp32 moments; checkpoints hold float16 weights")
    parser.add_argument("--bf16", action="store_true",
                        help="bfloat16 arithmetic (autocast), no loss scaling; weights stay fp32. "
                             "Works on CUDA GPUs with bfloat16 support and on the CPU")
    parser.add_argument("--memory-efficient-bf16", action="store_true",
                        help="--bf16 with the weights and gradients themselves in bfloat16 (no fp32 copy); "
                             "small updates can be lost to rounding")
    parser.add_argument("--fp16-init-scale", type=positive_float("--fp16-init-scale"), default=2.0 ** 7,
                        metavar="S",
                        help="initial loss scale for float16 training")
    parser.add_argument("--fp16-scale-window", type=positive_int("--fp16-scale-window"), metavar="N",
                        help="updates without overflow before the loss scale is doubled "
                             "(default: 2**14 / world size / --update-freq)")
    parser.add_argument("--fp16-scale-tolerance", default=0.0, metavar="P",
                        type=probability("--fp16-scale-tolerance"),
                        help="share of updates since the last rescale that may overflow before the loss "
                             "scale is halved (0: halve on every overflow)")
    parser.add_argument("--threshold-loss-scale", type=positive_float("--threshold-loss-scale"), metavar="S",
                        help="never lower the loss scale below this value")
    parser.add_argument("--min-loss-scale", type=non_negative_float("--min-loss-scale"), default=1e-4, metavar="S",
                        help="stop training when the loss scale would fall to this value")
    parser.add_argument("--fp16-no-flatten-grads", action="store_true",
                        help="accepted for fairseq compatibility; no effect: gradients are never "
                             "flattened into one buffer")


@dataclass(frozen=True)
class PrecisionSettings:
    """The precision flags, checked together."""
    fp16: bool = False
    memory_efficient_fp16: bool = False
    bf16: bool = False
    memory_efficient_bf16: bool = False

    def __post_init__(self) -> None:
        if self.float16_flags and self.bfloat16_flags:
            raise UserError(f"{'/'.join(self.float16_flags)} and {'/'.join(self.bfloat16_flags)} cannot be "
                            f"combined; choose float16 (with loss scaling) or bfloat16 (no scaling needed)")

    @property
    def float16_flags(self) -> list[str]:
        return [flag for flag, given in (("--fp16", self.fp16), ("--memory-efficient-fp16",
                                                                   self.memory_efficient_fp16)) if given]

    @property
    def bfloat16_flags(self) -> list[str]:
        return [flag for flag, given in (("--bf16", self.bf16), ("--memory-efficient-bf16",
                                                                  self.memory_efficient_bf16)) if given]


def resolve_precision(settings: PrecisionSettings, device: torch.device) -> Precision:
    """The precision the flags ask for, as far as `device` can run it (logged once)."""
    # The memory-efficient flag names the mode when both are given.
    half, bfloat = settings.float16_flags[::-1], settings.bfloat16_flags[::-1]
    if half and device.type != "cuda":
        logger.warning("%s needs a CUDA GPU; running in fp32 on the CPU (the loss-scaling flags are ignored)",
                       half[0])
        return FP32
    if bfloat and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError(f"{bfloat[0]}: {torch.cuda.get_device_name(device)} has no bfloat16 support; "
                        f"use --fp16 instead")
    memory_efficient = settings.memory_efficient_fp16 or settings.memory_efficient_bf16
    if half or bfloat:
        dtype = torch.float16 if half else torch.bfloat16
        precision = Precision(autocast_dtype=dtype, param_dtype=dtype if memory_efficient else torch.float32,
                              loss_scaling=bool(half))
    else:
        precision = FP32
    logger.info("precision: %s arithmetic, %s weights%s", _name(precision.autocast_dtype or torch.float32),
                _name(precision.param_dtype), ", dynamic loss scaling" if precision.loss_scaling else "")
    return precision


def build_loss_scaler(precision: Precision, settings: LossScalerSettings) -> LossScaler:
    """A dynamic loss scaler for float16, none otherwise."""
    return DynamicLossScaler.build(settings) if precision.loss_scaling else NO_LOSS_SCALING


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
