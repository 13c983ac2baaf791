#!/usr/bin/env bash
# Masked-LM pretraining end to end on a generated corpus, on CPU, in a few minutes:
# corpus -> byte-level BPE -> binarized data -> roberta-train -> roberta-validate, then a summary:
# where the model is, its perplexity, what to try next, the logs and (with matplotlib) the curves.
#   bash scripts/quickstart.sh [OUT_DIR]      (MAX_UPDATE=600 by default)
set -euo pipefail
OUT=${1:-quickstart}
MAX_UPDATE=${MAX_UPDATE:-600}
WORKERS=${WORKERS:-2}
cd "$(dirname "$0")/.." && mkdir -p "$OUT"

python scripts/make_demo_corpus.py "$OUT/raw" --documents 2000
roberta-bpe train --type gpt2 --vocab-size 1000 --inputs "$OUT/raw/train.txt" --output-dir "$OUT/bpe"
for split in train valid test; do
  roberta-bpe encode --encoder-json "$OUT/bpe/encoder.json" --vocab-bpe "$OUT/bpe/vocab.bpe" \
    --inputs "$OUT/raw/$split.txt" --outputs "$OUT/raw/$split.bpe" --keep-empty --workers "$WORKERS"
done
roberta-preprocess --only-source --srcdict "$OUT/bpe/dict.txt" --trainpref "$OUT/raw/train.bpe" \
  --validpref "$OUT/raw/valid.bpe" --testpref "$OUT/raw/test.bpe" --destdir "$OUT/data-bin" --workers "$WORKERS"

roberta-train "$OUT/data-bin" --task masked_lm --criterion masked_lm --arch roberta_tiny \
  --encoder-embed-dim 128 --encoder-ffn-embed-dim 512 \
  --sample-break-mode complete --tokens-per-sample 128 --max-tokens 2048 \
  --optimizer adam --adam-betas '(0.9, 0.98)' --adam-eps 1e-6 --weight-decay 0.01 --clip-norm 1.0 \
  --lr-scheduler polynomial_decay --lr 3e-3 --warmup-updates $((MAX_UPDATE / 10 + 1)) \
  --total-num-update "$MAX_UPDATE" --max-update "$MAX_UPDATE" \
  --log-interval $((MAX_UPDATE / 20 > 0 ? MAX_UPDATE / 20 : 1)) --log-format json --log-file "$OUT/train.log" \
  --save-dir "$OUT/checkpoints" --num-workers 1 --cpu

roberta-validate "$OUT/data-bin" --path "$OUT/checkpoints/checkpoint_best.pt" --valid-subset valid,test --cpu \
  --log-format json --log-file "$OUT/validate.log"
python scripts/quickstart_summary.py "$OUT"
