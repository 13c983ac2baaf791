#!/usr/bin/env bash
# BPE-encode and binarize multiple-choice text files (as written by preprocess_race.py and
# preprocess_cloze.py) into the data folder that `--task sentence_ranking` reads:
#   bash scripts/binarize_multiple_choice.sh EXTRACTED DATA_BIN BPE_DIR NUM_CLASSES \
#       TRAINPREF VALIDPREFS TESTPREFS
# EXTRACTED holds <split>.input0..input<NUM_CLASSES>, <split>.label and <split>.ids per split.
# VALIDPREFS and TESTPREFS are comma-separated split names (TESTPREFS may be ""); as with
# fairseq-preprocess they become valid, valid1, ... and test, test1, ... in DATA_BIN:
#   DATA_BIN/input0..input<NUM_CLASSES>/{dict.txt,<split>.bin,<split>.idx}
#   DATA_BIN/label/<split>.label, DATA_BIN/label/<split>.ids
# BPE_DIR holds the GPT-2 encoder.json, vocab.bpe and dict.txt. WORKERS (default 10) sets the
# processes of each step. DATA_BIN is built as DATA_BIN.tmp.<pid> and renamed at the end (one
# a killed run left is removed at the next start); an existing DATA_BIN that is not an empty
# folder is refused. PYTHON (default python) starts the steps (scripts/steps.sh).
set -euo pipefail
PROG=$(basename "$0")
SCRIPTS=$(cd "$(dirname "$0")" && pwd)
fail() { echo "$PROG: error: $*" >&2; exit 1; }
source "$SCRIPTS/steps.sh"

[ $# -eq 7 ] || fail "expected 7 arguments (EXTRACTED DATA_BIN BPE_DIR NUM_CLASSES TRAINPREF" \
  "VALIDPREFS TESTPREFS), got $#"
EXTRACTED=$1 DATA_BIN=${2%/} BPE_DIR=$3 NUM_CLASSES=$4 TRAINPREF=$5
IFS=, read -r -a VALIDPREFS <<< "$6"
IFS=, read -r -a TESTPREFS <<< "$7"
WORKERS=${WORKERS:-10}

for file in encoder.json vocab.bpe dict.txt; do
  [ -f "$BPE_DIR/$file" ] || fail "$BPE_DIR/$file not found; pass the folder holding the GPT-2" \
    "encoder.json, vocab.bpe and dict.txt (fairseq's files from the RoBERTa release)"
done
[[ $NUM_CLASSES =~ ^[1-9][0-9]*$ ]] || fail "NUM_CLASSES must be a positive integer, got '$NUM_CLASSES'"
if [ -e "$DATA_BIN" ] && { [ ! -d "$DATA_BIN" ] || [ -n "$(ls -A "$DATA_BIN")" ]; }; then
  fail "$DATA_BIN already exists; remove it or choose another output folder"
fi

# Parallel arrays: the split names in EXTRACTED and the names they get in DATA_BIN.
SPLITS=("$TRAINPREF") NAMES=(train)
numbered() { if [ "$2" -eq 0 ]; then echo "$1"; else echo "$1$2"; fi; }
for i in "${!VALIDPREFS[@]}"; do SPLITS+=("${VALIDPREFS[$i]}"); NAMES+=("$(numbered valid "$i")"); done
for i in "${!TESTPREFS[@]}"; do SPLITS+=("${TESTPREFS[$i]}"); NAMES+=("$(numbered test "$i")"); done
for split in "${SPLITS[@]}"; do
  for suffix in $(seq -f 'input%g' 0 "$NUM_CLASSES") label ids; do
    [ -f "$EXTRACTED/$split.$suffix" ] || fail "$EXTRACTED/$split.$suffix not found; run" \
      "preprocess_race.py or preprocess_cloze.py first, or fix the split names"
  done
done

remove_dead_leftovers "$DATA_BIN.tmp"
TMP="$DATA_BIN.tmp.$$"
trap 'rm -rf "$TMP"' EXIT
# An interrupted run must still reach the EXIT trap, which bash skips on an untrapped signal.
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p "$TMP/bpe" "$TMP/label"

# The option files of a split are aligned line by line, so one call encodes them in lock step.
for split in "${SPLITS[@]}"; do
  inputs=() outputs=()
  for k in $(seq 0 "$NUM_CLASSES"); do
    inputs+=("$EXTRACTED/$split.input$k") outputs+=("$TMP/bpe/$split.input$k")
  done
  step roberta-bpe encode --encoder-json "$BPE_DIR/encoder.json" --vocab-bpe "$BPE_DIR/vocab.bpe" \
    --inputs "${inputs[@]}" --outputs "${outputs[@]}" --keep-empty --workers "$WORKERS"
done

# Comma-joined encoded files of input K for the given splits, for --validpref/--testpref.
prefixes() {
  local k=$1 paths=() split
  shift
  for split in "$@"; do paths+=("$TMP/bpe/$split.input$k"); done
  local IFS=,
  echo "${paths[*]}"
}
for k in $(seq 0 "$NUM_CLASSES"); do
  args=(--trainpref "$TMP/bpe/$TRAINPREF.input$k")
  [ ${#VALIDPREFS[@]} -eq 0 ] || args+=(--validpref "$(prefixes "$k" "${VALIDPREFS[@]}")")
  [ ${#TESTPREFS[@]} -eq 0 ] || args+=(--testpref "$(prefixes "$k" "${TESTPREFS[@]}")")
  step roberta-preprocess --only-source --srcdict "$BPE_DIR/dict.txt" "${args[@]}" \
    --destdir "$TMP/input$k" --workers "$WORKERS"
done

# Labels stay plain text (one option index per line), as fairseq's RACE recipe leaves them.
for i in "${!SPLITS[@]}"; do
  cp "$EXTRACTED/${SPLITS[$i]}.label" "$TMP/label/${NAMES[$i]}.label"
  cp "$EXTRACTED/${SPLITS[$i]}.ids" "$TMP/label/${NAMES[$i]}.ids"
done
rm -rf "$TMP/bpe"
# rmdir only succeeds on an empty folder; mv then renames within one filesystem (atomic).
if [ -d "$DATA_BIN" ]; then rmdir "$DATA_BIN"; fi
mv "$TMP" "$DATA_BIN"
echo "wrote $DATA_BIN: input0..input$NUM_CLASSES, label ($(IFS=,; echo "${NAMES[*]}"))"
