"""One-shot GPU check (issue 17, part 3): all a short GPU loan must answer, in one run.

Run once on one GPU with no network (`benchmarks/gpu_check.sh`), it builds its own models and
data. Each section has its own time budget; one that fails is recorded as {"status": "error"}
and the others still run:
- environment: torch, CUDA, GPU, NCCL, apex and transformers versions;
- throughput: a masked-LM update of ours (`Trainer.train_step` as mlm_training_throughput.py
  builds it, with roberta-train's precision and loss scaler) against transformers'
  RobertaForMaskedLM (SDPA, autocast, fused AdamW, GradScaler in fp16) on the same batches,
  roberta-base and -large in bf16 and fp16: tokens/s, ratio, MFU;
- race: fairseq's RACE recipe at roberta-large through `python -m roberta.cli.train` on
  generated RACE data (peak memory, updates/s), then with a far too high loss scale, whose
  overflows must be skipped while the scale falls and training goes on;
- oom: a batch far too large, without --oom-backoff (updates skipped, then one error line) and
  with it (micro-batches split until they fit);
- learning: a tiny masked-LM learns as well in fp16 and bf16 as in fp32;
- apex: an Adam-factory step with apex FusedAdam and with apex hidden.
The JSON summary is stdout's last line and is written atomically to --out; a table goes to
stderr. Without CUDA: {"status": "skipped", "reason": "no CUDA device"}, exit 0. --dry-run runs
every section's code on the CPU at tiny sizes (fp16 falls back to fp32 as in roberta-train; the
OOM is injected with ROBERTA_INJECT_FAULTS), to prove the script before a GPU sees it.

    benchmarks/gpu_check.sh --out gpu_check.json                  # about 4-5 minutes on an H100
    benchmarks/gpu_check.sh --dry-run --out /tmp/gpu_check.json   # about 1.5 minutes on 2 cores
"""
from __future__ import annotations

import argparse
import gc
import importlib
import importlib.metadata
import itertools
import json
import platform
import statistics
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import transformers

from roberta.cli.common import run_cli
from roberta.fileio import atomic_write
from roberta.flag_types import NumberFlag, non_negative_int, positive_float, positive_int
from roberta.models import ModelConfig, RobertaModel
from roberta.optim.adam import build_adam
from roberta.optim.loss_scaler import LossScalerSettings, default_scale_window
from roberta.precision import Precision, PrecisionSettings, build_loss_scaler, resolve_precision

# Run as a script, this file's directory is on sys.path: the sections that run roberta-train
# (gpu_check_runs.py) and the throughput benchmarks' helpers (model sizes, batches from our data
# pipeline, the HF reference, FLOPs per token) are imported.
from gpu_check_runs import learning_section, oom_section, race_section
from mlm_training_throughput import (BETAS, EPS, WEIGHT_DECAY, Preset, build_hf, build_ours, flops_per_token,
                                     reference_update, training_batches)
from model_forward_backward import PRESETS, VOCAB

SECTION_BUDGET_S = {"environment": 10, "throughput": 160, "race": 100, "oom": 100, "learning": 60, "apex": 30}
# The budgets are sized for the GPU run; --dry-run's tiny sizes run on CPUs that other work may share.
DRY_RUN_BUDGET_FACTOR = 3
MODEL_SIZES = {"roberta-base": PRESETS["base"][0], "roberta-large": (24, 1024, 4096, 16), "tiny": PRESETS["tiny"][0]}
TARGETS = {("roberta-large", "bf16"): {"mfu": 0.45, "ratio": 1.5}}
LR = 1e-4
MASKED_SHARE = 0.15  # the LM head runs on the masked positions only: the model FLOPs of masked-LM training


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="where the JSON summary goes")
    parser.add_argument("--dry-run", action="store_true",
                        help="every section on the CPU at tiny sizes, to prove the script before a GPU runs it")
    parser.add_argument("--peak-tflops", type=positive_float("--peak-tflops"), default=989.0,
                        help="the GPU's dense bf16/fp16 peak, the denominator of MFU (H100 SXM: 989)")
    parser.add_argument("--base-batch-size", type=positive_int("--base-batch-size"), default=32,
                        help="roberta-base sequences per update")
    parser.add_argument("--large-batch-size", type=positive_int("--large-batch-size"), default=16,
                        help="roberta-large sequences per update")
    parser.add_argument("--seq-len", type=NumberFlag("--seq-len", int, "in [2, 512]", lambda n: 2 <= n <= 512),
                        default=512, help="tokens per sequence in the throughput section")
    parser.add_argument("--warmup", type=non_negative_int("--warmup"), default=5,
                        help="untimed updates per throughput measurement")
    parser.add_argument("--steps", type=positive_int("--steps"), default=10,
                        help="timed updates per throughput measurement")
    parser.add_argument("--oom-batch-size", type=positive_int("--oom-batch-size"), default=512,
                        help="roberta-large sequences of 512 tokens per mini-batch in the OOM section")
    parser.add_argument("--overflow-init-scale", type=positive_float("--overflow-init-scale"), default=2.0 ** 24,
                        help="--fp16-init-scale of the RACE run that must overflow")
    parser.add_argument("--work-dir", type=Path,
                        help="keep the generated data and the training logs here (default: a temporary folder)")
    return parser.parse_args(argv)


@dataclass
class Check:
    """What every section reads: the flags, the device, the work folder and its own deadline."""
    args: argparse.Namespace
    device: torch.device
    work: Path
    deadline: float = 0.0

    @property
    def dry(self) -> bool:
        return bool(self.args.dry_run)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


def run_section(name: str, check: Check, body: Callable[[Check], dict]) -> dict:
    budget = SECTION_BUDGET_S[name] * (DRY_RUN_BUDGET_FACTOR if check.dry else 1)
    start = time.monotonic()
    check.deadline = start + budget
    try:
        result = {"status": "ok", **body(check)}
    except Exception as error:  # recorded in the summary, so that the other sections still run
        result = failure(error)
    release_memory()
    return {**result, "seconds": round(time.monotonic() - start, 1), "budget_s": budget}


def failure(error: Exception) -> dict:
    traceback.print_exc()  # to stderr: the one GPU run may be all there is to debug from
    return {"status": "error", "error": f"{type(error).__name__}: {error}"[:1000]}


def release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def environment_section(check: Check) -> dict:
    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                           "transformers": transformers.__version__, "apex": apex_version(),
                           "device": str(check.device)}
    if check.device.type == "cuda":
        props = torch.cuda.get_device_properties(check.device)
        nccl = torch.cuda.nccl.version()
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2 ** 30, 1),
                   compute_capability=f"{props.major}.{props.minor}", bf16_supported=torch.cuda.is_bf16_supported(),
                   nccl=".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl))
    return env


def apex_version() -> str | None:
    try:
        importlib.import_module("apex")
    except Exception:  # not only ImportError: an install without its extensions fails in many ways
        return None
    try:
        return importlib.metadata.version("apex")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# ---- throughput ----

def throughput_section(check: Check) -> dict:
    results: list[dict[str, Any]] = []
    for model, precision in itertools.product(["tiny"] if check.dry else ["roberta-large", "roberta-base"],
                                              ("bf16", "fp16")):
        config = {"model": model, "precision": precision}
        if check.remaining() <= 0:
            results.append({**config, "status": "skipped", "reason": "section budget spent"})
            continue
        try:
            results.append({**config, "status": "ok", **measure_throughput(check, model, precision)})
        except Exception as error:  # one size failing (an OOM, say) must not hide the others
            results.append({**config, **failure(error)})
        release_memory()
    met = [all(row["meets_target"].values()) for row in results if "meets_target" in row]
    warmup, steps = update_counts(check)
    return {"peak_tflops": check.args.peak_tflops, "warmup": warmup, "steps": steps,
            "mfu_flops": "masked-LM model FLOPs per token (LM head on the 15% masked positions), for both sides",
            "results": results, "meets_target": all(met) if met else None}


def measure_throughput(check: Check, model: str, precision_name: str) -> dict:
    layers, dim, ffn, heads = MODEL_SIZES[model]
    batch = (2 if check.dry else check.args.large_batch_size if model == "roberta-large"
             else check.args.base_batch_size)
    seq_len = 32 if check.dry else check.args.seq_len
    preset = Preset(model, layers, dim, ffn, heads, batch)
    groups, _ = training_batches(preset, argparse.Namespace(distinct_updates=4, update_freq=1, seq_len=seq_len))
    tokens = statistics.mean(sum(sample["ntokens"] for sample in group) for group in groups)
    # As roberta-train resolves --fp16/--bf16 on this device (fp16 falls back to fp32 on the CPU).
    precision = resolve_precision(PrecisionSettings(fp16=precision_name == "fp16", bf16=precision_name == "bf16"),
                                  check.device)
    ours, n_enc = time_ours(check, preset, precision, groups)
    release_memory()  # before the reference's peak is measured
    hf = time_hf(check, preset, precision.autocast_dtype, groups)
    flops = flops_per_token(preset, n_enc, seq_len, MASKED_SHARE)
    peak = check.args.peak_tflops * 1e12
    result = {"ran_as": str(precision.autocast_dtype or torch.float32).removeprefix("torch."),
              "batch": f"{batch}x{seq_len}", "tokens_per_update": tokens, "model_flops_per_token": flops,
              "ours_tok_s": tokens / ours.seconds, "hf_tok_s": tokens / hf.seconds, "ratio": hf.seconds / ours.seconds,
              "ours_mfu": flops * tokens / ours.seconds / peak, "hf_mfu": flops * tokens / hf.seconds / peak,
              "ours_peak_gib": ours.peak_gib, "hf_peak_gib": hf.peak_gib, "ours_skipped_updates": ours.skipped,
              "ours_optimizer": ours.optimizer, "hf_optimizer": hf.optimizer}
    target = None if check.dry else TARGETS.get((model, precision_name))
    if target is not None:
        result.update(target=target, meets_target={"mfu": result["ours_mfu"] >= target["mfu"],
                                                   "ratio": result["ratio"] >= target["ratio"]})
    return result


@dataclass
class Timing:
    seconds: float  # median of the timed updates
    skipped: int  # timed updates skipped for an fp16 overflow (left out of the median)
    peak_gib: float | None
    optimizer: str


def time_ours(check: Check, preset: Preset, precision: Precision, groups: list[list[dict]]) -> tuple[Timing, int]:
    """Our update, with the loss scaler roberta-train builds for this precision; and N_enc."""
    reset_peak_memory(check.device)
    torch.manual_seed(0)
    scaler = build_loss_scaler(precision, LossScalerSettings(fp16_scale_window=default_scale_window(1, 1)))
    trainer = build_ours(preset, LR, device=check.device, precision=precision, loss_scaler=scaler)
    batches = itertools.cycle(groups)
    times, skipped = time_updates(check, lambda: trainer.train_step(next(batches)) is not None)
    n_enc = sum(p.numel() for p in trainer.model.encoder.sentence_encoder.layers.parameters())
    return Timing(statistics.median(times), skipped, peak_memory_gib(check.device),
                  type(trainer.optimizer).__name__), n_enc


def time_hf(check: Check, preset: Preset, dtype: torch.dtype | None, groups: list[list[dict]]) -> Timing:
    """transformers' usual mixed-precision loop: autocast, GradScaler for fp16, fused AdamW."""
    device = check.device
    reset_peak_memory(device)
    torch.manual_seed(0)
    model, _ = build_hf(preset, LR)  # its optimizer was built for CPU parameters: replaced below
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY,
                                  fused=True if device.type == "cuda" else None)
    update = reference_update(model, optimizer, groups, dtype,
                              torch.amp.GradScaler(device.type, enabled=dtype == torch.float16))

    def applied() -> bool:
        update()
        return True  # GradScaler skips an overflowed step silently; the usual loop counts it all the same

    times, _ = time_updates(check, applied)
    return Timing(statistics.median(times), 0, peak_memory_gib(device),
                  f"AdamW(fused={optimizer.defaults.get('fused')})")


def time_updates(check: Check, update: Callable[[], bool]) -> tuple[list[float], int]:
    """Seconds of the timed updates that were applied, and how many were skipped, after warm-up."""
    warmup, steps = update_counts(check)
    for _ in range(warmup):
        update()
    times, skipped = [], 0
    for _ in range(steps):
        seconds, applied = timed(update, check.device)
        if applied:
            times.append(seconds)
        else:
            skipped += 1
    if not times:
        raise RuntimeError(f"all {steps} timed updates were skipped (fp16 overflow)")
    return times, skipped


def update_counts(check: Check) -> tuple[int, int]:
    """Untimed and timed updates per measurement."""
    return (1, 2) if check.dry else (check.args.warmup, check.args.steps)


def timed(update: Callable[[], bool], device: torch.device) -> tuple[float, bool]:
    if device.type != "cuda":
        start = time.perf_counter()
        applied = update()
        return time.perf_counter() - start, applied
    # Events time the GPU's own timeline; the synchronize before keeps the last update's tail out.
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize(device)
    begin.record()
    applied = update()
    end.record()
    torch.cuda.synchronize(device)
    return begin.elapsed_time(end) / 1e3, applied


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None


# ---- apex ----

def apex_section(check: Check) -> dict:
    version = apex_version()
    if version is None and not check.dry:
        return {"status": "skipped", "reason": "apex not importable"}
    # --dry-run times the same code path on the CPU, where the factory never picks apex.
    with_apex = time_adam_factory(check)
    with apex_hidden():
        without_apex = time_adam_factory(check)
    return {"apex": version, "with_apex": with_apex, "apex_hidden": without_apex,
            "speedup": without_apex["step_ms"] / with_apex["step_ms"]}


def time_adam_factory(check: Check) -> dict:
    """An optimizer step of `build_adam` (what --optimizer adam builds) on the device, over fp32
    weights shaped as roberta-base's."""
    layers, dim, ffn, heads = MODEL_SIZES["tiny" if check.dry else "roberta-base"]
    torch.manual_seed(0)
    model = RobertaModel(ModelConfig(vocab_size=VOCAB, encoder_layers=layers, encoder_embed_dim=dim,
                                     encoder_ffn_embed_dim=ffn, encoder_attention_heads=heads)).to(check.device)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    optimizer = build_adam(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)

    def step() -> bool:
        optimizer.step()
        return True

    times, _ = time_updates(check, step)
    kind = type(optimizer)
    return {"optimizer": kind.__name__, "uses_apex": any(c.__module__.startswith("apex") for c in kind.__mro__),
            "step_ms": statistics.median(times) * 1e3}


@contextmanager
def apex_hidden() -> Iterator[None]:
    """`import apex...` fails meanwhile, as if apex were not installed (None entries in sys.modules)."""
    saved = {name: sys.modules.get(name) for name in ("apex", "apex.optimizers")}
    for name in saved:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


# ---- the run ----

SECTIONS: dict[str, Callable[[Check], dict]] = {
    "environment": environment_section, "throughput": throughput_section, "race": race_section,
    "oom": oom_section, "learning": learning_section, "apex": apex_section}


def table(summary: dict) -> list[str]:
    """One line per section (its status, numbers and verdicts), one per throughput measurement."""
    lines = [f"gpu_check: {summary['status']} ({summary['mode']}, {summary['seconds']} s)"]
    for name in SECTIONS:
        section = summary[name]
        lines.append(f"  {name:<12} {section['status']:<8} " + " ".join(
            f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}" for key, value in section.items()
            if isinstance(value, (bool, int, float, str)) and key not in ("status", "budget_s", "flags", "mfu_flops")))
        for row in section.get("results", []):
            lines.append(f"    {row['model']} {row['precision']}: " + (
                f"ours {row['ours_tok_s']:.0f} tok/s (MFU {row['ours_mfu']:.2f}), HF {row['hf_tok_s']:.0f} tok/s "
                f"(MFU {row['hf_mfu']:.2f}), ratio {row['ratio']:.2f}, meets_target {row.get('meets_target')}"
                if row["status"] == "ok" else f"{row['status']}: {row.get('error') or row.get('reason')}"))
    return lines


def write_summary(summary: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
        handle.write("\n")


def summarise(sections: dict[str, dict], args: argparse.Namespace, started: str, start: float, *,
              finished: bool) -> dict:
    failed = [name for name, section in sections.items() if section["status"] == "error"]
    return {"status": ("errors" if failed else "ok") if finished else "incomplete", "failed_sections": failed,
            "mode": "dry-run" if args.dry_run else "gpu", "started": started,
            "seconds": round(time.monotonic() - start, 1), **sections}


@contextmanager
def work_folder(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="gpu_check.") as temporary:
        yield Path(temporary)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        skipped = {"status": "skipped", "reason": "no CUDA device"}
        write_summary(skipped, args.out)
        print(json.dumps(skipped), flush=True)
        return
    start, started = time.monotonic(), time.strftime("%Y-%m-%dT%H:%M:%S%z")
    device = torch.device("cpu") if args.dry_run else torch.device("cuda", torch.cuda.current_device())
    if args.dry_run:
        torch.set_num_threads(1)  # as in the roberta-train runs (gpu_check_runs.child_env): the two cores are shared
    sections: dict[str, dict] = {}
    with work_folder(args.work_dir) as work:
        check = Check(args, device, work)
        for name, body in SECTIONS.items():
            print(f"gpu_check: {name}", file=sys.stderr, flush=True)
            sections[name] = run_section(name, check, body)
            # After every section: a run cut short from outside still leaves what it found.
            write_summary(summarise(sections, args, started, start, finished=False), args.out)
    summary = summarise(sections, args, started, start, finished=True)
    write_summary(summary, args.out)
    print("\n".join(table(summary)), file=sys.stderr, flush=True)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    run_cli(main, "gpu_check.py")
