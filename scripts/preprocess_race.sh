#!/usr/bin/env bash
# RACE -> the data folder of `--task sentence_ranking` (fairseq's preprocess_RACE.sh, no downloads):
#   bash scripts/preprocess_race.sh RACE_DIR DATA_BIN [BPE_DIR]
# RACE_DIR is the unpacked release ({train,dev,test}/{middle,high}/*.txt). BPE_DIR (default: the
# BPE_DIR environment variable) holds the GPT-2 encoder.json, vocab.bpe and dict.txt.
# Splits in DATA_BIN: train, valid (dev), test (test-middle), test1 (test-high).
# WORKERS (default 10) sets the processes; PYTHON (default python) runs the extraction and starts
# every step so that it dies with this script (scripts/steps.sh): a killed run publishes nothing,
# and the next run removes the temporary folders it left.
set -euo pipefail
PROG=$(basename "$0")
SCRIPTS=$(cd "$(dirname "$0")" && pwd)
fail() { echo "$PROG: error: $*" >&2; exit 1; }
source "$SCRIPTS/steps.sh"

[ $# -ge 2 ] && [ $# -le 3 ] || fail "usage: $PROG RACE_DIR DATA_BIN [BPE_DIR]"
RACE_DIR=$1 DATA_BIN=${2%/} BPE=${3:-${BPE_DIR:-}}
[ -n "$BPE" ] || fail "no BPE folder given: pass as third argument (or set BPE_DIR to) the folder" \
  "holding the GPT-2 encoder.json, vocab.bpe and dict.txt (fairseq's files from the RoBERTa release)"

mkdir -p "$(dirname "$DATA_BIN")"
remove_dead_leftovers "$DATA_BIN.extracted"
WORK=$(mktemp -d "$DATA_BIN.extracted.$$.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "${PYTHON:-python}" "$SCRIPTS/preprocess_race.py" --input-dir "$RACE_DIR" --output-dir "$WORK/text"
step bash "$SCRIPTS/binarize_multiple_choice.sh" "$WORK/text" "$DATA_BIN" "$BPE" 4 \
  train dev test-middle,test-high
