#!/usr/bin/env bash
# SQuAD 2.0 -> the data folder of `--task squad2` (the roberta-squad fork's recipe, no downloads):
#   bash scripts/preprocess_squad.sh TRAIN_JSON DEV_JSON DATA_BIN [BPE_DIR] [OPTIONS]
# TRAIN_JSON and DEV_JSON are train-v2.0.json and dev-v2.0.json (splits train and valid). BPE_DIR
# (default: the BPE_DIR environment variable) holds the GPT-2 encoder.json, vocab.bpe and
# dict.txt. OPTIONS go to preprocess_squad.py: --max-positions 512 --doc-stride 128
# --max-query-length 128 --question-first --workers N (the layout of DATA_BIN is described
# there). PYTHON (default python) runs it.
set -euo pipefail
PROG=$(basename "$0")
SCRIPTS=$(cd "$(dirname "$0")" && pwd)
fail() { echo "$PROG: error: $*" >&2; exit 1; }

[ $# -ge 3 ] || fail "usage: $PROG TRAIN_JSON DEV_JSON DATA_BIN [BPE_DIR] [--max-positions N" \
  "--doc-stride N --max-query-length N --question-first --workers N]"
TRAIN_JSON=$1 DEV_JSON=$2 DATA_BIN=$3 BPE=${BPE_DIR:-}
shift 3
# The optional BPE folder is told apart from the options by their leading dashes.
if [ $# -gt 0 ] && [[ $1 != -* ]]; then BPE=$1; shift; fi
[ -n "$BPE" ] || fail "no BPE folder given: pass as fourth argument (or set BPE_DIR to) the folder" \
  "holding the GPT-2 encoder.json, vocab.bpe and dict.txt (fairseq's files from the RoBERTa release)"

exec "${PYTHON:-python}" "$SCRIPTS/preprocess_squad.py" "$TRAIN_JSON" "$DEV_JSON" "$DATA_BIN" \
  --bpe-dir "$BPE" "$@"
