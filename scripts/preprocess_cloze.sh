#!/usr/bin/env bash
# Cloze exams (CLOTH-style JSON) -> the data folder of `--task sentence_ranking`:
#   bash scripts/preprocess_cloze.sh CLOZE_DIR DATA_BIN [BPE_DIR] [MODE ARGS]
# MODE ARGS go to preprocess_cloze.py: `--mode passage` (default) or
# `--mode window --window-words N`. CLOZE_DIR holds train/, dev/ and test/ of *.json exams.
# BPE_DIR (default: the BPE_DIR environment variable) holds the GPT-2 encoder.json, vocab.bpe and
# dict.txt. Splits in DATA_BIN: train, valid (dev), test. WORKERS (default 10); PYTHON (default
# python) runs the extraction and starts every step so that it dies with this script
# (scripts/steps.sh): a killed run publishes nothing, and the next run removes what it left.
set -euo pipefail
PROG=$(basename "$0")
SCRIPTS=$(cd "$(dirname "$0")" && pwd)
fail() { echo "$PROG: error: $*" >&2; exit 1; }
source "$SCRIPTS/steps.sh"

[ $# -ge 2 ] || fail "usage: $PROG CLOZE_DIR DATA_BIN [BPE_DIR] [--mode passage |" \
  "--mode window --window-words N]"
CLOZE_DIR=$1 DATA_BIN=${2%/} BPE=${BPE_DIR:-}
shift 2
# The optional BPE folder is told apart from the mode flags by their leading dashes.
if [ $# -gt 0 ] && [[ $1 != -* ]]; then BPE=$1; shift; fi
[ -n "$BPE" ] || fail "no BPE folder given: pass as third argument (or set BPE_DIR to) the folder" \
  "holding the GPT-2 encoder.json, vocab.bpe and dict.txt (fairseq's files from the RoBERTa release)"

mkdir -p "$(dirname "$DATA_BIN")"
remove_dead_leftovers "$DATA_BIN.extracted"
WORK=$(mktemp -d "$DATA_BIN.extracted.$$.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "${PYTHON:-python}" "$SCRIPTS/preprocess_cloze.py" --input-dir "$CLOZE_DIR" \
  --output-dir "$WORK/text" "$@"
step bash "$SCRIPTS/binarize_multiple_choice.sh" "$WORK/text" "$DATA_BIN" "$BPE" 4 train dev test
