"""SQuAD-shaped training step: our squad2 update against transformers' RobertaForQuestionAnswering,
and the speed of our post-processing at the size of the SQuAD 2.0 dev set.

Ours is what `roberta-train --task squad2 --criterion squad2 --optimizer adam --lr-scheduler
fixed` runs per update: `Trainer.train_step` with `Squad2Criterion` (span head over all
positions plus the no-answer head on `<s>`) and fairseq's Adam, on batches collated by
`SpanWindowDataset`. The reference is `transformers.RobertaForQuestionAnswering` (SDPA
attention) in a plain loop on the same tokens and answer positions: forward with
start/end positions, backward, `torch.optim.AdamW` step, `zero_grad`. It has no answerability
head, so ours does slightly more work. Updates alternate (`model_forward_backward.measure`); the
median of undisturbed updates gives windows per second.

Post-processing: 12,000 questions with 1-2 windows each and random logits go through
`roberta.squad_postprocess.postprocess` and `roberta.squad_metrics.squad2_metrics`; the wall
time of both is printed.

    python benchmarks/squad_training_step.py --preset small --seq-len 384 512   # ~2 min on 2 cores
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import time
from typing import Callable

import numpy as np
import torch
import transformers

from criterions.squad2 import Squad2Criterion
from roberta.data.span_windows import SpanWindowDataset
from roberta.models import ModelConfig, RobertaModel
from roberta.models.heads import SQUAD_ANSWERABLE_HEAD, SQUAD_SPAN_HEAD
from roberta.optim.adam import Adam
from roberta.optim.lr_scheduler.fixed import FixedSchedule
from roberta.squad_metrics import squad2_metrics
from roberta.squad_postprocess import Windows, postprocess
from roberta.trainer import Trainer

from model_forward_backward import PAD, PRESETS, VOCAB, measure
from race_training_step import TokenLines

BOS, EOS = 0, 2
BETAS, EPS, WEIGHT_DECAY, LR = (0.9, 0.98), 1e-6, 0.01, 3e-5
TARGET = 1.2  # issue 5: ours / HF on CPU


def window_batches(count: int, batch: int, length: int, seed: int = 1) -> list[dict]:
    """Full windows of `length` tokens; two thirds answerable (a span inside), the rest at `<s>`."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(count * batch):
        tokens = rng.integers(4, VOCAB - 1, size=length)
        tokens[0], tokens[-1] = BOS, EOS
        lines.append(torch.from_numpy(tokens))
    starts = rng.integers(1, length - 40, size=len(lines))
    ends = starts + rng.integers(0, 30, size=len(lines))
    no_answer = rng.random(len(lines)) < 1 / 3
    starts[no_answer], ends[no_answer] = 0, 0
    dataset = SpanWindowDataset(TokenLines(lines), starts, ends, pad_idx=PAD)
    return [dataset.collater([dataset[i] for i in range(b * batch, (b + 1) * batch)]) for b in range(count)]


def build_ours(preset: str) -> Trainer:
    layers, dim, ffn, heads = PRESETS[preset][0]
    model = RobertaModel(ModelConfig(vocab_size=VOCAB, encoder_layers=layers, encoder_embed_dim=dim,
                                     encoder_ffn_embed_dim=ffn, encoder_attention_heads=heads, max_positions=512,
                                     dropout=0.1, attention_dropout=0.1))
    model.register_span_head(SQUAD_SPAN_HEAD)
    model.register_classification_head(SQUAD_ANSWERABLE_HEAD, num_classes=1)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = Adam(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    return Trainer(model, Squad2Criterion(padding_idx=PAD), optimizer, FixedSchedule(optimizer, [LR]),
                   device=torch.device("cpu"), clip_norm=0.0, seed=1)


def build_hf(preset: str) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    layers, dim, ffn, heads = PRESETS[preset][0]
    model = transformers.RobertaForQuestionAnswering(transformers.RobertaConfig(
        vocab_size=VOCAB, hidden_size=dim, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=ffn, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
        pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1, attn_implementation="sdpa")).train()
    return model, torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)


def step_functions(preset: str, batches: list[dict]) -> dict[str, Callable[[], None]]:
    torch.manual_seed(0)
    trainer = build_ours(preset)
    hf, hf_optimizer = build_hf(preset)
    ours_batches = itertools.cycle(batches)
    hf_batches = itertools.cycle([{"input_ids": b["net_input"]["src_tokens"],
                                   "attention_mask": b["net_input"]["src_tokens"].ne(PAD).long(),
                                   "start_positions": b["start_positions"], "end_positions": b["end_positions"]}
                                  for b in batches])

    def ours() -> None:
        trainer.train_step([next(ours_batches)])

    def reference() -> None:
        hf(**next(hf_batches)).loss.backward()
        hf_optimizer.step()
        hf_optimizer.zero_grad()

    return {"ours": ours, "hf": reference}


def postprocess_seconds(num_questions: int = 12000, top_k: int = 20, length: int = 384) -> tuple[float, float]:
    """Wall time of post-processing and of the official metrics on a dev-set-sized input."""
    rng = np.random.default_rng(0)
    windows_per_question = rng.integers(1, 3, size=num_questions)
    question = np.repeat(np.arange(num_questions), windows_per_question)
    first_window = np.r_[0, np.cumsum(windows_per_question)[:-1]]
    doc_start = (np.arange(len(question)) - first_window[question]) * 128
    windows = Windows(question=question, passage_position=np.ones(len(question), dtype=np.int64),
                      doc_start=doc_start, doc_length=np.full(len(question), length - 20))
    passage_tokens = int(doc_start.max()) + length
    context = " ".join(f"w{i}" for i in range(passage_tokens))
    spans = []
    position = 0
    for i in range(passage_tokens):
        spans.append((position, position + len(f"w{i}")))
        position += len(f"w{i}") + 1
    offsets = np.asarray(spans).reshape(-1)
    questions = [{"id": f"q{i}", "paragraph": 0, "answers": ["w5 w6"] if i % 2 else []} for i in range(num_questions)]
    records = [{"id": w, "start_index": rng.integers(0, length, top_k).tolist(), "start_logit": rng.normal(size=top_k).tolist(),
                "end_index": rng.integers(0, length, top_k).tolist(), "end_logit": rng.normal(size=top_k).tolist(),
                "no_answer_logit": float(rng.normal())} for w in range(len(question))]
    start = time.perf_counter()
    answers = postprocess(records, windows, questions, [context], [offsets] * num_questions, n_best_size=top_k)
    middle = time.perf_counter()
    squad2_metrics({q["id"]: q["answers"] for q in questions}, answers.predictions, na_probs=answers.null_odds)
    return middle - start, time.perf_counter() - middle


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", nargs="+", choices=sorted(PRESETS), default=["small"], help="model sizes")
    parser.add_argument("--seq-len", nargs="+", type=int, default=[384, 512], help="window lengths")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per update")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--warmup", type=int, default=2, help="untimed updates per loop")
    parser.add_argument("--steps", type=int, default=8, help="undisturbed timed updates wanted per loop")
    parser.add_argument("--max-steps", type=int, default=20, help="stop waiting for undisturbed updates here")
    args = parser.parse_args()
    if any(not 64 <= length <= 512 for length in args.seq_len):
        parser.error("--seq-len values must be in [64, 512]")
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    lines = []
    for preset, length in itertools.product(args.preset, args.seq_len):
        batches = window_batches(4, args.batch_size, length)
        timings = measure(step_functions(preset, batches), args)
        ours_s, hf_s = statistics.median(timings["ours"]), statistics.median(timings["hf"])
        windows = args.batch_size
        print(f"preset {preset}, {windows} x {length}: ours {windows / ours_s:.2f} windows/s, "
              f"HF RobertaForQuestionAnswering {windows / hf_s:.2f} windows/s, ratio {hf_s / ours_s:.2f}x", flush=True)
        lines.append(f"RESULT preset={preset} batch={windows}x{length} threads={args.threads} "
                     f"ours_windows_s={windows / ours_s:.2f} hf_windows_s={windows / hf_s:.2f} "
                     f"ratio={hf_s / ours_s:.2f} target={TARGET} ours_steps={len(timings['ours'])} "
                     f"hf_steps={len(timings['hf'])}")
    post, metrics = postprocess_seconds()
    lines.append(f"RESULT postprocess questions=12000 postprocess_s={post:.2f} metrics_s={metrics:.2f}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
