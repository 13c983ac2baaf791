"""Masked-LM training throughput: our full training step against a plain transformers loop.

Ours is what `roberta-train --task masked_lm --criterion masked_lm --optimizer adam
--lr-scheduler fixed` runs per update: `Trainer.train_step` over `--update-freq` micro-batches
(criterion forward with the masked-only LM head, backward, gradient normalisation, fairseq's
Adam, the LR schedule). Its batches come from our data pipeline: an in-memory token corpus
packed by `TokenBlockDataset` (break mode `none`, `<s>` prepended), masked by
`MaskedLMDataset`, batched by `batch_by_size` and collated by the dataset's `collater` through
`EpochBatchIterator`. The reference is `transformers.RobertaForMaskedLM` (SDPA attention) with
its plain loop: forward with labels (-100 where not masked), backward, `torch.optim.AdamW`
step, `zero_grad`, on exactly the same tokens and masked positions.

Both run in this process with the same threads; their updates alternate. After warm-up the
median update time over undisturbed updates (see `model_forward_backward.timed`) gives real
(non-pad) tokens per second. Batches are built before timing; the data pipeline's own cost
per update is printed separately.

    python benchmarks/mlm_training_throughput.py --preset small        # 4 x 256, batch 16 x 128
    python benchmarks/mlm_training_throughput.py --preset small base   # one RESULT line each
    python benchmarks/mlm_training_throughput.py --preset base --bf16 --profile 5

`--bf16` runs our step as `roberta-train --bf16` does (autocast to bfloat16 over fp32 weights;
`--memory-efficient-bf16` stores the weights in bfloat16 too) and the reference under
`torch.autocast("cpu", torch.bfloat16)`, and also times our fp32 step on the same batches, so
one run gives both ratios the bf16 targets are stated in. Efficiency is then against a
bfloat16 GEMM roof, printed beside the fp32 one: on a CPU without bf16 matrix units (no AMX or
AVX512-BF16) the bf16 roof is far below the fp32 one and bf16 figures say nothing about AMX
machines. `--profile N` profiles N more of our updates and prints where their time goes
(`step_profile.py`'s categories).
"""
from __future__ import annotations

import argparse
import gc
import itertools
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import transformers

from criterions.masked_lm import MaskedLMCriterion
from roberta.data.batching import batch_by_size
from roberta.data.iterators import EpochBatchIterator
from roberta.data.masking import MaskedLMDataset
from roberta.data.token_blocks import TokenBlockDataset
from roberta.models import ModelConfig, RobertaModel
from roberta.optim.adam import Adam
from roberta.optim.loss_scaler import NO_LOSS_SCALING, LossScaler
from roberta.optim.lr_scheduler.fixed import FixedSchedule
from roberta.precision import FP32, Precision
from roberta.trainer import Trainer

# Run as a script, this file's directory is on sys.path, so the model-only benchmark's helpers
# (presets, GEMM roof, disturbance filter, alternating measurement) are imported, not copied.
from model_forward_backward import MASK, PAD, PRESETS, VOCAB, gemm_roof, measure
from step_profile import breakdown

BOS, EOS = 0, 2
TARGETS = {"small": 2.5, "base": 1.4}  # ours / HF gates from perf-notes section 3(b)
# Issue 17's bf16 gates at roberta-base: ours / HF under autocast, ours bf16 / ours fp32, and
# the share of the bf16 GEMM roof.
BF16_TARGETS = {"base": {"ratio": 2.0, "vs_fp32": 3.0, "efficiency": 0.40}}
BF16_ROOF_SIZE = 1024  # a 2048 bf16 probe takes minutes on CPUs without bf16 units
BETAS, EPS, WEIGHT_DECAY = (0.9, 0.98), 1e-6, 0.01


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", nargs="+", choices=sorted(PRESETS), default=["small"],
                        help="model sizes to run, in order (small: 4 x 256, base: 12 x 768)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="sequences per micro-batch (default: 16 for small, 8 for base)")
    parser.add_argument("--seq-len", type=int, default=128,
                        help="tokens per sequence (--tokens-per-sample), <s> included")
    parser.add_argument("--update-freq", type=int, default=1,
                        help="micro-batches accumulated per update, by both loops")
    parser.add_argument("--lr", type=float, default=1e-4, help="learning rate of both optimizers")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--warmup", type=int, default=3, help="untimed updates per loop")
    parser.add_argument("--steps", type=int, default=10,
                        help="undisturbed timed updates wanted per loop")
    parser.add_argument("--max-steps", type=int, default=25,
                        help="give up waiting for undisturbed updates after this many")
    parser.add_argument("--distinct-updates", type=int, default=8,
                        help="distinct batches (per micro-batch slot) cycled through while timing")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--bf16", action="store_true",
                           help="bfloat16 autocast for both loops (ours keeps fp32 weights); our fp32 "
                                "step is timed too")
    precision.add_argument("--memory-efficient-bf16", action="store_true",
                           help="--bf16 with our weights stored in bfloat16 (roberta-train's flag)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="after timing, profile N more of our updates and print the breakdown")
    args = parser.parse_args()
    args.bf16 = args.bf16 or args.memory_efficient_bf16
    for flag in ("batch_size", "seq_len", "update_freq", "threads", "steps", "distinct_updates"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if args.max_steps < args.steps:
        parser.error(f"--max-steps {args.max_steps} is below --steps {args.steps}; raise --max-steps")
    if args.seq_len < 2 or args.seq_len > 512:
        parser.error(f"--seq-len must be in [2, 512] (the models have 512 positions), got {args.seq_len}")
    return args


@dataclass
class Preset:
    name: str
    layers: int
    dim: int
    ffn: int
    heads: int
    batch: int


def resolve_preset(name: str, args: argparse.Namespace) -> Preset:
    (layers, dim, ffn, heads), default_batch = PRESETS[name]
    return Preset(name, layers, dim, ffn, heads, args.batch_size or default_batch)


def token_corpus(n_tokens: int, seed: int) -> tuple[list[torch.Tensor], np.ndarray]:
    """Lines of 8-200 random non-special tokens, each ending in `</s>`, `n_tokens` in all."""
    rng = np.random.default_rng(seed)
    lines: list[torch.Tensor] = []
    left = n_tokens
    while left > 0:
        length = min(left, int(rng.integers(8, 201)))
        line = rng.integers(4, MASK, size=length)
        line[-1] = EOS
        lines.append(torch.from_numpy(line))
        left -= length
    return lines, np.array([len(line) for line in lines], dtype=np.int64)


def training_batches(preset: Preset, args: argparse.Namespace) -> tuple[list[list[dict]], float]:
    """Update groups drawn from our pipeline, and the median seconds it took to draw one."""
    n_blocks = args.distinct_updates * args.update_freq * preset.batch
    # Exactly n_blocks full blocks: every sequence is seq_len long, so no batch is padded.
    lines, sizes = token_corpus(n_blocks * (args.seq_len - 1), seed=1)
    blocks = TokenBlockDataset(lines, sizes, block_size=args.seq_len, break_mode="none",
                               pad=PAD, eos=EOS, bos=BOS)
    dataset = MaskedLMDataset(blocks, seed=1, mask_idx=MASK, vocab_size=VOCAB, pad_idx=PAD)
    batches = batch_by_size(dataset.ordered_indices(), dataset.sizes, max_sentences=preset.batch)
    iterator = EpochBatchIterator(dataset, batches, seed=1, num_workers=0,
                                  update_freq=args.update_freq).next_epoch_itr()
    groups, seconds = [], []
    while True:
        start = time.perf_counter()
        group = next(iterator, None)
        if group is None:
            break
        seconds.append(time.perf_counter() - start)
        groups.append(group)
    return groups, statistics.median(seconds)


def our_precision(args: argparse.Namespace) -> Precision:
    """What `roberta-train --bf16` / `--memory-efficient-bf16` resolve to on the CPU."""
    if not args.bf16:
        return FP32
    weights = torch.bfloat16 if args.memory_efficient_bf16 else torch.float32
    return Precision(autocast_dtype=torch.bfloat16, param_dtype=weights)


def build_ours(preset: Preset, lr: float, *, device: torch.device = torch.device("cpu"),
               precision: Precision = FP32, loss_scaler: LossScaler = NO_LOSS_SCALING) -> Trainer:
    model = RobertaModel(ModelConfig(vocab_size=VOCAB, encoder_layers=preset.layers,
                                     encoder_embed_dim=preset.dim, encoder_ffn_embed_dim=preset.ffn,
                                     encoder_attention_heads=preset.heads, max_positions=512,
                                     dropout=0.1, attention_dropout=0.1))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = Adam(params, lr=lr, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    return Trainer(model, MaskedLMCriterion(padding_idx=PAD), optimizer, FixedSchedule(optimizer, [lr]),
                   device=device, clip_norm=0.0, seed=1, precision=precision, loss_scaler=loss_scaler)


def build_hf(preset: Preset, lr: float) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = transformers.RobertaForMaskedLM(transformers.RobertaConfig(
        vocab_size=VOCAB, hidden_size=preset.dim, num_hidden_layers=preset.layers,
        num_attention_heads=preset.heads, intermediate_size=preset.ffn, max_position_embeddings=514,
        type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS,
        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
        attn_implementation="sdpa")).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=BETAS, eps=EPS,
                                  weight_decay=WEIGHT_DECAY)
    return model, optimizer


def hf_inputs(sample: dict) -> dict[str, torch.Tensor]:
    """The same tokens and masked positions in transformers' form (-100: no loss there)."""
    tokens, target = sample["net_input"]["src_tokens"], sample["target"]
    return {"input_ids": tokens, "attention_mask": tokens.ne(PAD).long(),
            "labels": target.masked_fill(target.eq(PAD), -100)}


def update_steps(trainer: Trainer, hf: torch.nn.Module, hf_optimizer: torch.optim.Optimizer,
                 groups: list[list[dict]], autocast_dtype: torch.dtype | None = None
                 ) -> dict[str, Callable[[], None]]:
    """One update of each loop per call, on the same groups in the same order; the reference
    runs its forward under autocast to `autocast_dtype` when one is given."""
    return {"ours": our_update(trainer, groups),
            "hf": reference_update(hf, hf_optimizer, groups, autocast_dtype)}


def our_update(trainer: Trainer, groups: list[list[dict]]) -> Callable[[], None]:
    """One of our updates per call, cycling through `groups`."""
    ours_groups = itertools.cycle(groups)

    def ours() -> None:
        if trainer.train_step(next(ours_groups)) is None:
            raise RuntimeError("train_step skipped an update: a batch had no masked token")
    return ours


def reference_update(hf: torch.nn.Module, hf_optimizer: torch.optim.Optimizer, groups: list[list[dict]],
                     autocast_dtype: torch.dtype | None,
                     scaler: torch.amp.GradScaler | None = None) -> Callable[[], None]:
    """One transformers update per call, cycling through the same `groups`: its usual loop, with
    each micro-batch moved to the model's device, and `scaler` (fp16's GradScaler) when given."""
    hf_groups = itertools.cycle([[hf_inputs(sample) for sample in group] for group in groups])
    device = next(hf.parameters()).device
    scaler = scaler or torch.amp.GradScaler(device.type, enabled=False)

    def reference() -> None:
        group = next(hf_groups)
        for inputs in group:
            inputs = {key: value.to(device, non_blocking=True) for key, value in inputs.items()}
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                loss = hf(**inputs).loss
            scaler.scale(loss / len(group)).backward()
        scaler.step(hf_optimizer)
        scaler.update()
        hf_optimizer.zero_grad()
    return reference


def optimizer_seconds(step: Callable[[], object], repeats: int = 5) -> float:
    """Median wall time of an optimizer step on the gradients already in place."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def flops_per_token(preset: Preset, n_enc: int, attended: int, head_share: float) -> float:
    """perf-notes section 0: 6*N_enc + 12*L*s*d + 6*(d^2 + d*V)*f (training, matmuls only)."""
    d = preset.dim
    return 6 * n_enc + 12 * preset.layers * attended * d + 6 * (d * d + d * VOCAB) * head_share


@dataclass
class Result:
    preset: Preset
    tokens_per_update: int
    ours_tok_s: float
    hf_tok_s: float
    ours_gflop_s: float
    hf_gflop_s: float
    roof: float  # of the precision the loops ran in
    kept: tuple[int, int]
    data_ms: float
    ours_opt_ms: float
    hf_opt_ms: float
    fp32_roof: float
    ours_fp32_tok_s: float | None = None  # with --bf16: our fp32 step on the same batches
    profile: dict[str, float] | None = None

    def line(self, args: argparse.Namespace) -> str:
        """The parsable summary: space-separated key=value pairs after `RESULT`."""
        ratio = self.ours_tok_s / self.hf_tok_s
        fields = {
            "preset": self.preset.name, "batch": f"{self.preset.batch}x{args.seq_len}",
            "update_freq": args.update_freq, "threads": args.threads,
            "ours_tok_s": f"{self.ours_tok_s:.0f}", "hf_tok_s": f"{self.hf_tok_s:.0f}",
            "ratio": f"{ratio:.2f}", "ours_gflop_s": f"{self.ours_gflop_s:.1f}",
            "hf_gflop_s": f"{self.hf_gflop_s:.1f}", "roof_gflop_s": f"{self.roof:.1f}",
            "efficiency": f"{self.ours_gflop_s / self.roof:.2f}",
            "ours_steps": self.kept[0], "hf_steps": self.kept[1],
            "precision": "memory-efficient-bf16" if args.memory_efficient_bf16 else "bf16" if args.bf16 else "fp32",
        }
        if self.ours_fp32_tok_s is not None:
            return "RESULT " + " ".join(f"{key}={value}" for key, value in {**fields, **self.bf16_fields()}.items())
        target = TARGETS.get(self.preset.name)
        if target is not None:
            fields.update(target=target, meets_target="yes" if ratio >= target else "no")
        return "RESULT " + " ".join(f"{key}={value}" for key, value in fields.items())


    def bf16_fields(self) -> dict[str, object]:
        """Our fp32 speed on the same batches, and the bf16 gates where the preset has them."""
        assert self.ours_fp32_tok_s is not None
        reached = {"ratio": self.ours_tok_s / self.hf_tok_s, "vs_fp32": self.ours_tok_s / self.ours_fp32_tok_s,
                   "efficiency": self.ours_gflop_s / self.roof}
        fields: dict[str, object] = {"ours_fp32_tok_s": f"{self.ours_fp32_tok_s:.0f}",
                                     "vs_fp32": f"{reached['vs_fp32']:.2f}",
                                     "fp32_roof_gflop_s": f"{self.fp32_roof:.1f}"}
        gates = BF16_TARGETS.get(self.preset.name)
        if gates is not None:
            fields["targets"] = ",".join(f"{key}>={value}" for key, value in gates.items())
            fields["meets_target"] = "yes" if all(reached[key] >= value for key, value in gates.items()) else "no"
        return fields


def run_preset(preset: Preset, args: argparse.Namespace) -> Result:
    groups, data_seconds = training_batches(preset, args)
    real_tokens = {sum(sample["ntokens"] for sample in group) for group in groups}
    if len(real_tokens) != 1:
        raise RuntimeError(f"updates differ in real tokens ({sorted(real_tokens)}); expected full blocks")
    tokens = real_tokens.pop()
    torch.manual_seed(0)
    trainer = build_ours(preset, args.lr, precision=our_precision(args))
    hf, hf_optimizer = build_hf(preset, args.lr)
    steps = update_steps(trainer, hf, hf_optimizer, groups, torch.bfloat16 if args.bf16 else None)
    if args.bf16:
        torch.manual_seed(0)
        steps["ours_fp32"] = our_update(build_ours(preset, args.lr), groups)
    roofs = roof_probes(args.bf16)
    timings = measure(steps, args)
    # A burst from another process during a roof probe lowers it; the better of two probes is
    # closer to the machine's true ceiling.
    fp32_roof, roof = (max(before, after) for before, after in zip(roofs, roof_probes(args.bf16)))
    # Optimizer steps alone, after the measurement: ours still holds the last update's
    # gradients; the reference needs one more backward since its loop clears them.
    ours_opt = optimizer_seconds(trainer.optimizer.step)
    hf(**hf_inputs(groups[0][0])).loss.backward()
    hf_opt = optimizer_seconds(hf_optimizer.step)
    n_enc = sum(p.numel() for p in trainer.model.encoder.sentence_encoder.layers.parameters())
    attended = int(groups[0][0]["net_input"]["src_tokens"].size(1))
    ours_tok_s = tokens / statistics.median(timings["ours"])
    hf_tok_s = tokens / statistics.median(timings["hf"])
    return Result(preset=preset, tokens_per_update=tokens, ours_tok_s=ours_tok_s, hf_tok_s=hf_tok_s,
                  ours_gflop_s=flops_per_token(preset, n_enc, attended, 0.15) * ours_tok_s / 1e9,
                  hf_gflop_s=flops_per_token(preset, n_enc, attended, 1.0) * hf_tok_s / 1e9,
                  roof=roof, kept=(len(timings["ours"]), len(timings["hf"])),
                  data_ms=data_seconds * 1e3, ours_opt_ms=ours_opt * 1e3, hf_opt_ms=hf_opt * 1e3,
                  fp32_roof=fp32_roof,
                  ours_fp32_tok_s=tokens / statistics.median(timings["ours_fp32"]) if args.bf16 else None,
                  profile=profile_updates(steps["ours"], args.profile) if args.profile else None)


def roof_probes(bf16: bool) -> tuple[float, float]:
    """(fp32 roof, roof of the run's precision) in GFLOP/s."""
    fp32 = gemm_roof()
    return fp32, gemm_roof(torch.bfloat16, BF16_ROOF_SIZE) if bf16 else fp32


def profile_updates(update: Callable[[], None], count: int) -> dict[str, float]:
    """Milliseconds per update by category over `count` more of our updates."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        start = time.perf_counter()
        for _ in range(count):
            update()
        wall = time.perf_counter() - start
    return breakdown(profiler.events(), wall, count)


def report(result: Result, args: argparse.Namespace) -> None:
    p = result.preset
    print(f"preset={p.name} ({p.layers} layers x {p.dim} wide x {p.ffn} ffn x {p.heads} heads) "
          f"micro-batch {p.batch}x{args.seq_len} update_freq={args.update_freq} threads={args.threads} "
          f"real tokens/update {result.tokens_per_update}")
    print(f"  ours  {result.ours_tok_s:8.0f} tokens/s  {result.ours_gflop_s:6.1f} GFLOP/s "
          f"(masked-head FLOPs)  optimizer step {result.ours_opt_ms:6.1f} ms (fairseq Adam, foreach)")
    print(f"  HF    {result.hf_tok_s:8.0f} tokens/s  {result.hf_gflop_s:6.1f} GFLOP/s "
          f"(all-token head FLOPs)  optimizer step {result.hf_opt_ms:6.1f} ms (torch AdamW default)")
    precision = "bf16" if args.bf16 else "fp32"
    print(f"  ratio {result.ours_tok_s / result.hf_tok_s:.2f}x  {precision} GEMM roof {result.roof:.0f} GFLOP/s  "
          f"ours at {result.ours_gflop_s / result.roof:.0%} of roof  undisturbed updates: "
          f"ours {result.kept[0]}, HF {result.kept[1]}")
    if result.ours_fp32_tok_s is not None:
        print(f"  ours fp32 on the same batches {result.ours_fp32_tok_s:8.0f} tokens/s: bf16 is "
              f"{result.ours_tok_s / result.ours_fp32_tok_s:.2f}x fp32  (fp32 roof {result.fp32_roof:.0f} GFLOP/s)")
        if result.roof < result.fp32_roof:
            print("  note: bf16 matmuls are slower than fp32 on this CPU (no AMX or AVX512-BF16 units); "
                  "these bf16 figures do not carry over to CPUs that have them")
    if result.profile is not None:
        print(f"  where one of our updates goes ({args.profile} profiled):")
        for category, ms in result.profile.items():
            print(f"    {category:40s} {ms:8.1f} ms")
    print(f"  data pipeline (masking + collate, num_workers=0, not in the times above): "
          f"{result.data_ms:.1f} ms per update", flush=True)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for name in args.preset:
        results.append(run_preset(resolve_preset(name, args), args))
        report(results[-1], args)
        gc.collect()
    for result in results:
        print(result.line(args))


if __name__ == "__main__":
    main()
