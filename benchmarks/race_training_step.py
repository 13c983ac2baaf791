"""RACE-shaped training step: our sentence_ranking update against transformers' RobertaForMultipleChoice.

One example per micro-batch with 4 options of 512 tokens each (the recipe's `--max-sentences 1`
with `--max-positions 512 --truncate-sequence`: RACE articles fill the window).

Ours is what `roberta-train --task sentence_ranking --criterion sentence_ranking --optimizer
adam --lr-scheduler fixed` runs per update: `Trainer.train_step` with `SentenceRankingCriterion`
(all options in one forward pass, scores from the 1-output `sentence_classification_head`),
fairseq's Adam; batches come from `MultipleChoiceDataset` (`<s> option </s> </s> context`,
option capped at 128, truncated to 512) through its collater. The reference is
`transformers.RobertaForMultipleChoice` (SDPA attention) on the same tokens, in a plain loop:
forward with labels, backward, `torch.optim.AdamW` step, `zero_grad`.

Updates of the two loops alternate in this process (`model_forward_backward.measure`), and the
median of undisturbed updates gives examples and real tokens per second. Peak memory of one
update is measured for each side in a fresh child process: the rise of peak RSS over the RSS
after building the model and optimizer (CPU), or `torch.cuda.max_memory_allocated` (CUDA).

    python benchmarks/race_training_step.py --preset small          # ~1 min on 2 cores
    python benchmarks/race_training_step.py --preset base --steps 5 # ~5 min on 2 cores
"""
from __future__ import annotations

import argparse
import itertools
import multiprocessing
import resource
import statistics
from typing import Callable

import numpy as np
import torch
import transformers

from criterions.sentence_ranking import SentenceRankingCriterion
from roberta.data.multiple_choice import MultipleChoiceDataset
from roberta.models import ModelConfig, RobertaModel
from roberta.optim.adam import Adam
from roberta.optim.lr_scheduler.fixed import FixedSchedule
from roberta.trainer import Trainer

from model_forward_backward import PAD, PRESETS, VOCAB, gemm_roof, measure

BOS, EOS = 0, 2
NUM_OPTIONS, MAX_POSITIONS, MAX_OPTION_LENGTH = 4, 512, 128
HEAD = "sentence_classification_head"
BETAS, EPS, WEIGHT_DECAY, LR = (0.9, 0.98), 1e-6, 0.01, 1e-5
TARGET = 1.2  # issue 4: ours / HF on CPU


class TokenLines:
    """In-memory stand-in for an indexed dataset: token tensors plus their `sizes`."""

    def __init__(self, lines: list[torch.Tensor]) -> None:
        self.lines = lines
        self.sizes = np.array([len(line) for line in lines], dtype=np.int32)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.lines[index]

    def __len__(self) -> int:
        return len(self.lines)


def race_batches(count: int, seed: int = 1) -> list[dict]:
    """`count` one-example batches: articles of 450-700 tokens, question+option of 12-40 tokens."""
    rng = np.random.default_rng(seed)

    def line(low: int, high: int) -> torch.Tensor:
        tokens = rng.integers(4, VOCAB - 1, size=int(rng.integers(low, high)))
        tokens[-1] = EOS
        return torch.from_numpy(tokens)

    contexts = TokenLines([line(450, 700) for _ in range(count)])
    options = [TokenLines([line(12, 40) for _ in range(count)]) for _ in range(NUM_OPTIONS)]
    labels = rng.integers(0, NUM_OPTIONS, size=count)
    dataset = MultipleChoiceDataset(contexts, options, labels, pad_idx=PAD, init_token=BOS,
                                    separator_token=EOS, max_option_length=MAX_OPTION_LENGTH,
                                    shorten_method="truncate", max_positions=MAX_POSITIONS)
    return [dataset.collater([dataset[index]]) for index in range(count)]


def model_sizes(preset: str) -> tuple[int, int, int, int]:
    return PRESETS[preset][0]


def build_ours(preset: str, device: torch.device) -> Trainer:
    layers, dim, ffn, heads = model_sizes(preset)
    model = RobertaModel(ModelConfig(vocab_size=VOCAB, encoder_layers=layers, encoder_embed_dim=dim,
                                     encoder_ffn_embed_dim=ffn, encoder_attention_heads=heads,
                                     max_positions=MAX_POSITIONS, dropout=0.1, attention_dropout=0.1))
    model.register_classification_head(HEAD, num_classes=1)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = Adam(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    return Trainer(model, SentenceRankingCriterion(HEAD), optimizer, FixedSchedule(optimizer, [LR]),
                   device=device, clip_norm=0.0, seed=1)


def build_hf(preset: str, device: torch.device) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    layers, dim, ffn, heads = model_sizes(preset)
    model = transformers.RobertaForMultipleChoice(transformers.RobertaConfig(
        vocab_size=VOCAB, hidden_size=dim, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=ffn, max_position_embeddings=MAX_POSITIONS + 2, type_vocab_size=1,
        layer_norm_eps=1e-5, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS,
        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
        attn_implementation="sdpa")).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    return model, optimizer


def hf_inputs(batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
    tokens = batch["net_input"]["src_tokens"].to(device)
    return {"input_ids": tokens, "attention_mask": tokens.ne(PAD).long(), "labels": batch["target"].to(device)}


def step_functions(preset: str, batches: list[dict], device: torch.device) -> dict[str, Callable[[], None]]:
    torch.manual_seed(0)
    updates = {side: one_update(side, preset, device) for side in ("ours", "hf")}
    cycles = {side: itertools.cycle(batches) for side in updates}

    def timed_step(side: str) -> Callable[[], None]:
        def step() -> None:
            updates[side](next(cycles[side]))
            synchronize(device)
        return step

    return {side: timed_step(side) for side in updates}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def one_update(side: str, preset: str, device: torch.device) -> Callable[[dict], None]:
    """A function running one training update of `side` ("ours" or "hf") on a batch."""
    if side == "ours":
        trainer = build_ours(preset, device)
        return lambda batch: trainer.train_step([batch])
    hf, optimizer = build_hf(preset, device)

    def update(batch: dict) -> None:
        hf(**hf_inputs(batch, device)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return update


def _peak_memory_child(side: str, preset: str, device_name: str, queue) -> None:
    device = torch.device(device_name)
    batches = race_batches(2)
    update = one_update(side, preset, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _rss_bytes()
    for batch in batches:
        update(batch)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _max_rss_bytes()
    queue.put(peak - base)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_memory_mib(side: str, preset: str, device: str) -> float:
    """Peak memory an update adds on top of the built model and optimizer, in a fresh process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_peak_memory_child, args=(side, preset, device, queue))
    child.start()
    value = queue.get()
    child.join()
    return value / 2 ** 20


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", nargs="+", choices=sorted(PRESETS), default=["small"],
                        help="model sizes (small: 4 x 256, base: 12 x 768)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--warmup", type=int, default=2, help="untimed updates per loop")
    parser.add_argument("--steps", type=int, default=8, help="undisturbed timed updates wanted per loop")
    parser.add_argument("--max-steps", type=int, default=20, help="stop waiting for undisturbed updates here")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    args = parser.parse_args()
    if args.max_steps < args.steps:
        parser.error(f"--max-steps {args.max_steps} is below --steps {args.steps}")
    return args


def run_preset(preset: str, args: argparse.Namespace) -> str:
    device = torch.device(args.device)
    batches = race_batches(4)
    tokens = statistics.mean(batch["ntokens"] for batch in batches)
    timings = measure(step_functions(preset, batches, device), args)
    ours_s, hf_s = statistics.median(timings["ours"]), statistics.median(timings["hf"])
    fields = {"preset": preset, "shape": f"1x{NUM_OPTIONS}x{MAX_POSITIONS}", "device": args.device,
              "threads": args.threads, "ours_ex_s": f"{1 / ours_s:.3f}", "hf_ex_s": f"{1 / hf_s:.3f}",
              "ours_tok_s": f"{tokens / ours_s:.0f}", "hf_tok_s": f"{tokens / hf_s:.0f}",
              "ratio": f"{hf_s / ours_s:.2f}", "target": TARGET,
              "ours_steps": len(timings["ours"]), "hf_steps": len(timings["hf"])}
    if args.device == "cpu":
        fields["roof_gflop_s"] = f"{gemm_roof():.0f}"
    if not args.no_memory:
        fields["ours_peak_mib"] = f"{peak_memory_mib('ours', preset, args.device):.0f}"
        fields["hf_peak_mib"] = f"{peak_memory_mib('hf', preset, args.device):.0f}"
    print(f"preset {preset}: ours {float(fields['ours_ex_s']):.3f} examples/s, HF RobertaForMultipleChoice "
          f"{float(fields['hf_ex_s']):.3f} examples/s, ratio {fields['ratio']}x", flush=True)
    return "RESULT " + " ".join(f"{key}={value}" for key, value in fields.items())


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    lines = [run_preset(preset, args) for preset in args.preset]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
