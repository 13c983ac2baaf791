"""GLUE fine-tuning throughput: our dynamic padding over length-sorted batches against transformers
padding every example to the maximum length, on the real dev sets' length distributions.

For each task whose dev tsv is in `--glue-dir`: `scripts/preprocess_glue.py --splits dev` extracts
the sentences, the GPT-2 BPE gives each example's length as `--task sentence_prediction` builds it
(`<s> a </s> </s> b </s>`), and random tokens of those lengths stand in for the text (speed does
not depend on which tokens). The same examples form the same batches for both loops:
- ours: `SentencePairDataset` (padded to each batch's longest example, batches of length-sorted
  examples as `roberta-train --sort-by-length` builds them; fairseq's own order is random) through `Trainer.train_step` with the
  `sentence_prediction` criterion and fairseq's Adam;
- reference: `transformers.RobertaForSequenceClassification` with `torch.optim.AdamW`, each batch
  padded to `--max-length` (run_glue's `pad_to_max_length`, 128 by default), longer examples cut.
Both alternate in one process with the same threads; the median update time gives examples/s.

    python benchmarks/glue_training_step.py                  # 4 x 256, batch 16; ~3 min on 2 cores
    python benchmarks/glue_training_step.py --max-length 512
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers

from criterions.sentence_prediction import SentencePredictionCriterion
from roberta.data.batching import batch_by_size
from roberta.data.gpt2_bpe import GPT2BPE
from roberta.data.sentence_pairs import SentencePairDataset
from roberta.models import ModelConfig, RobertaModel
from roberta.optim.adam import Adam
from roberta.optim.lr_scheduler.fixed import FixedSchedule
from roberta.trainer import Trainer

# Run as a script, this file's directory is on sys.path: shared presets and the measurement.
from model_forward_backward import PAD, PRESETS, VOCAB, measure

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
HEAD = "sentence_classification_head"
BETAS, EPS, WEIGHT_DECAY = (0.9, 0.98), 1e-6, 0.1
TARGET = 2.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--glue-dir", type=Path, default=SHARED / "glue", help="GLUE folders with dev.tsv")
    parser.add_argument("--bpe-dir", type=Path, default=SHARED / "gpt2_bpe", help="encoder.json and vocab.bpe")
    parser.add_argument("--tasks", nargs="+", default=["CoLA", "SST-2", "MRPC", "RTE", "STS-B"])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--batch-size", type=int, default=16, help="examples per update (the recipe's 16)")
    parser.add_argument("--max-length", type=int, default=128, help="the reference pads (and cuts) to this")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--max-steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=1e-5)
    return parser.parse_args()


def example_lengths(task: str, args: argparse.Namespace, bpe: GPT2BPE) -> np.ndarray:
    """Tokens per dev example as sentence_prediction lays it out (init, eos, separator included)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "text"
        subprocess.run([sys.executable, str(REPO / "scripts" / "preprocess_glue.py"), "--glue-dir", str(args.glue_dir),
                        "--task", task, "--output-dir", str(out), "--splits", "dev"],
                       check=True, capture_output=True, text=True)
        fields = sorted(out.glob("dev.raw.input*"))
        columns = [path.read_text(encoding="utf-8").splitlines() for path in fields]
    lengths = np.ones(len(columns[0]), dtype=np.int64)  # <s>
    for number, column in enumerate(columns):
        lengths += np.array([len(bpe.encode_ids(line)) + 1 for line in column]) + (number > 0)
    return lengths


class _Sentences(list):
    """Token tensors with the `sizes` array a dataset reads."""

    def __init__(self, tokens: list[torch.Tensor]) -> None:
        super().__init__(tokens)
        self.sizes = np.array([len(t) for t in tokens], dtype=np.int64)


def build_batches(lengths: np.ndarray, args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    """The same example batches, ours padded to the batch's longest, the reference's to --max-length."""
    rng = np.random.default_rng(1)
    # One sentence per example with the full length: the pair layout does not change the cost.
    tokens = [torch.from_numpy(rng.integers(4, VOCAB - 1, size=int(n) - 1)) for n in lengths]
    labels = rng.integers(0, 2, size=len(lengths))
    dataset = SentencePairDataset(_Sentences(tokens), None, labels, pad_idx=PAD, init_token=0, seed=1,
                                  sort_by_length=True)  # --sort-by-length
    batches = batch_by_size(dataset.ordered_indices(), dataset.sizes, max_sentences=args.batch_size)
    batches = [batches[i] for i in rng.permutation(len(batches))]
    ours, reference = [], []
    for batch in batches:
        sample = dataset.collater([dataset[i] for i in batch])
        ours.append(sample)
        padded = torch.full((len(batch), args.max_length), PAD, dtype=torch.long)
        width = min(sample["net_input"]["src_tokens"].size(1), args.max_length)
        padded[:, :width] = sample["net_input"]["src_tokens"][:, :width]
        reference.append({"input_ids": padded, "attention_mask": padded.ne(PAD).long(), "labels": sample["target"]})
    return ours, reference


def build_ours(args: argparse.Namespace) -> Trainer:
    (layers, dim, ffn, heads), _ = PRESETS[args.preset]
    model = RobertaModel(ModelConfig(vocab_size=VOCAB, encoder_layers=layers, encoder_embed_dim=dim,
                                     encoder_ffn_embed_dim=ffn, encoder_attention_heads=heads, max_positions=512,
                                     dropout=0.1, attention_dropout=0.1))
    model.register_classification_head(HEAD, num_classes=2)
    optimizer = Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr, betas=BETAS, eps=EPS,
                     weight_decay=WEIGHT_DECAY)
    return Trainer(model, SentencePredictionCriterion(HEAD, regression=False), optimizer,
                   FixedSchedule(optimizer, [args.lr]), device=torch.device("cpu"), seed=1)


def build_reference(args: argparse.Namespace) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    (layers, dim, ffn, heads), _ = PRESETS[args.preset]
    model = transformers.RobertaForSequenceClassification(transformers.RobertaConfig(
        vocab_size=VOCAB, hidden_size=dim, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=ffn, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
        pad_token_id=PAD, bos_token_id=0, eos_token_id=2, num_labels=2, attn_implementation="sdpa")).train()
    return model, torch.optim.AdamW(model.parameters(), lr=args.lr, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)


def run_task(task: str, args: argparse.Namespace, bpe: GPT2BPE) -> tuple[float, float, float, float]:
    lengths = example_lengths(task, args, bpe)
    ours_batches, reference_batches = build_batches(lengths, args)
    torch.manual_seed(0)
    trainer = build_ours(args)
    model, optimizer = build_reference(args)
    ours_cycle, reference_cycle = itertools.cycle(ours_batches), itertools.cycle(reference_batches)

    def ours() -> None:
        trainer.train_step([next(ours_cycle)])

    def reference() -> None:
        model(**next(reference_cycle)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    timings = measure({"ours": ours, "hf": reference}, args)
    ours_rate = args.batch_size / statistics.median(timings["ours"])
    reference_rate = args.batch_size / statistics.median(timings["hf"])
    real = sum(int(b["ntokens"]) for b in ours_batches)
    ours_fill = real / sum(b["net_input"]["src_tokens"].numel() for b in ours_batches)
    reference_fill = min(real, int(np.minimum(lengths, args.max_length).sum())) / (len(lengths) * args.max_length)
    return ours_rate, reference_rate, ours_fill, reference_fill


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    bpe = GPT2BPE(args.bpe_dir / "encoder.json", args.bpe_dir / "vocab.bpe")
    print(f"preset={args.preset} batch={args.batch_size} reference padded to {args.max_length} threads={args.threads}")
    rows = []
    for task in args.tasks:
        if not (args.glue_dir / task / "dev.tsv").is_file():
            print(f"  {task}: no dev.tsv in {args.glue_dir / task}, skipped")
            continue
        ours, reference, ours_fill, reference_fill = run_task(task, args, bpe)
        rows.append((task, ours, reference))
        print(f"  {task:6s} ours {ours:7.1f} examples/s ({ours_fill:.0%} of batch tokens real)  "
              f"HF {reference:7.1f} examples/s ({reference_fill:.0%} real)  ratio {ours / reference:.2f}x", flush=True)
    geometric = float(np.exp(np.mean([np.log(o / r) for _, o, r in rows])))
    print("RESULT " + " ".join([f"preset={args.preset}", f"max_length={args.max_length}"]
                               + [f"{task}={o / r:.2f}" for task, o, r in rows]
                               + [f"geomean={geometric:.2f}", f"target={TARGET}",
                                  f"meets_target={'yes' if geometric >= TARGET else 'no'}"]))


if __name__ == "__main__":
    main()
