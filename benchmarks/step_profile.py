"""Where a training run's update time goes: torch.profiler over a few updates of a real command
line run, grouped into categories (matrix multiplies, softmax, layer norm, GELU, dropout,
optimizer, ...), in milliseconds per update.

It wraps one method (the trainer's update) of the program it runs: the profiler starts when
update `--skip` begins and stops when update `--skip + --updates` begins, so the window holds
whole updates and everything between them (data loading, logging). It runs under our Python
and under fairseq's (Python 3.10, torch 2.1.2), so it needs nothing but torch.

    python benchmarks/step_profile.py --step roberta.trainer:Trainer.train_step --out prof.json \
        -- -m roberta.cli.train DATA --task masked_lm ...
    $FAIRSEQ_PYTHON benchmarks/step_profile.py --step fairseq.trainer:Trainer.train_step \
        --out fairseq.json -- -m fairseq_cli.train DATA --task masked_lm ...

`vs_fairseq.py --profile` runs both and prints them side by side.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import runpy
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import torch
from torch.profiler import ProfilerActivity, profile

# Checked in order against an op's own name; the first match names its category.
OP_CATEGORIES = (
    ("matrix multiply", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation")),
    ("softmax & loss", ("aten::_softmax", "aten::_log_softmax", "aten::_softmax_backward_data",
                        "aten::_log_softmax_backward_data", "aten::nll_loss", "aten::nll_loss_forward",
                        "aten::nll_loss_backward", "aten::nll_loss2d_forward")),
    ("layer norm", ("aten::native_layer_norm", "aten::native_layer_norm_backward")),
    ("gelu", ("aten::gelu", "aten::gelu_backward")),
    ("embedding", ("aten::embedding", "aten::embedding_dense_backward", "aten::embedding_backward",
                   "aten::index_select", "aten::index_add_", "aten::embedding_renorm_")),
    ("copies & casts", ("aten::copy_", "aten::_to_copy", "aten::clone", "aten::contiguous")),
    ("dropout & random", ("aten::bernoulli_", "aten::random_", "aten::uniform_", "aten::native_dropout",
                          "aten::native_dropout_backward")),
)
# An op inside one of these ranges belongs to it, whatever the op is.
ENCLOSING_CATEGORIES = (
    ("optimizer step", ("Optimizer.step",)),
    ("zero grad", ("Optimizer.zero_grad",)),
    ("dropout & random", ("aten::dropout", "aten::native_dropout", "_BitDropout", "NativeDropoutBackward")),
)
UNATTRIBUTED = "Python, data, logging (not in an op)"


def category(event: Any) -> str:
    """The category of one profiler event, from its enclosing ranges first, then its own name."""
    enclosing = event.cpu_parent
    while enclosing is not None:
        for name, prefixes in ENCLOSING_CATEGORIES:
            if enclosing.name.startswith(prefixes):
                return name
        enclosing = enclosing.cpu_parent
    for name, prefixes in ENCLOSING_CATEGORIES + OP_CATEGORIES:
        if event.name.startswith(prefixes):
            return name
    return "other ops (elementwise, norms, fills)"


def breakdown(events: Any, wall_seconds: float, updates: int) -> Dict[str, float]:
    """Milliseconds per update in each category; what no op accounts for is `UNATTRIBUTED`."""
    totals: Dict[str, float] = {}
    for event in events:
        # Only aten ops carry time of their own; record_function ranges are wrappers.
        if not event.name.startswith("aten::") or event.device_type.name != "CPU":
            continue
        key = category(event)
        totals[key] = totals.get(key, 0.0) + event.self_cpu_time_total / 1e3
    per_update = {key: value / updates for key, value in sorted(totals.items(), key=lambda kv: -kv[1])}
    per_update[UNATTRIBUTED] = max(0.0, wall_seconds * 1e3 / updates - sum(per_update.values()))
    per_update["total (wall)"] = wall_seconds * 1e3 / updates
    return per_update


class UpdateWindow:
    """Profiles updates [skip, skip + updates) of whatever calls the wrapped method."""

    def __init__(self, skip: int, updates: int, out: str) -> None:
        self.skip, self.updates, self.out = skip, updates, out
        self.calls = 0
        self.profiler: Optional[profile] = None
        self.started = 0.0

    def wrap(self, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def profiled(*args: Any, **kwargs: Any) -> Any:
            self.before_update()
            return method(*args, **kwargs)
        return profiled

    def before_update(self) -> None:
        if self.calls == self.skip:
            self.profiler = profile(activities=[ProfilerActivity.CPU])
            self.profiler.__enter__()
            self.started = time.perf_counter()
        elif self.calls == self.skip + self.updates and self.profiler is not None:
            self.finish()
        self.calls += 1

    def finish(self) -> None:
        assert self.profiler is not None
        wall = time.perf_counter() - self.started
        self.profiler.__exit__(None, None, None)
        result = {"torch": torch.__version__, "threads": torch.get_num_threads(), "updates": self.updates,
                  "ms_per_update": breakdown(self.profiler.events(), wall, self.updates)}
        self.profiler = None
        temporary = f"{self.out}.tmp{os.getpid()}"
        with open(temporary, "w") as file:
            json.dump(result, file, indent=1)
        os.replace(temporary, self.out)


def patch(target: str, window: UpdateWindow) -> None:
    """`module:Class.method` -> the same method, profiled by `window`."""
    module_name, _, attribute = target.partition(":")
    owner_name, _, method_name = attribute.rpartition(".")
    owner = importlib.import_module(module_name)
    for part in owner_name.split(".") if owner_name else []:
        owner = getattr(owner, part)
    setattr(owner, method_name, window.wrap(getattr(owner, method_name)))


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--step", required=True, help="module:Class.method run once per update")
    parser.add_argument("--skip", type=int, default=10, help="updates before the window (warm-up)")
    parser.add_argument("--updates", type=int, default=5, help="updates in the window")
    parser.add_argument("--out", required=True, help="JSON file for the breakdown")
    parser.add_argument("program", nargs=argparse.REMAINDER, help="-- -m MODULE ARGS...")
    args = parser.parse_args(argv)
    program = args.program[1:] if args.program[:1] == ["--"] else args.program
    if program[:1] != ["-m"] or len(program) < 2:
        parser.error("give the program to profile as: -- -m MODULE ARGS...")
    window = UpdateWindow(args.skip, args.updates, args.out)
    patch(args.step, window)
    sys.argv = [program[1], *program[2:]]
    try:
        runpy.run_module(program[1], run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        if exit_.code:
            raise
    if not os.path.exists(args.out):
        raise SystemExit(f"step_profile: the run made {window.calls} updates; it needs "
                         f"--skip + --updates = {args.skip + args.updates} + 1")


if __name__ == "__main__":
    main(sys.argv[1:])
