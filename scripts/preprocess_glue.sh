#!/usr/bin/env bash
# GLUE tsv files -> the data folders of `--task sentence_prediction` (fairseq's
# examples/roberta/preprocess_GLUE_tasks.sh, no downloads):
#   bash scripts/preprocess_glue.sh GLUE_DIR TASK|ALL DATA_ROOT [BPE_DIR] [OPTIONS]
# GLUE_DIR holds one folder per task as the GLUE download script unpacks them (CoLA/train.tsv, ...).
# TASK is one of CoLA SST-2 MRPC QQP STS-B MNLI QNLI RTE WNLI; ALL does every task whose folder
# GLUE_DIR has. BPE_DIR (default: the BPE_DIR environment variable) holds the GPT-2
# encoder.json, vocab.bpe and dict.txt. OPTIONS go to preprocess_glue.py (--splits dev,
# --allow-empty, --drop-malformed; its --help has the column layout of every task). Writes:
#   DATA_ROOT/<TASK>-bin/input0/{dict.txt,train.bin,train.idx,valid.bin,valid.idx,...}
#   DATA_ROOT/<TASK>-bin/input1/  the same, for sentence-pair tasks (all but CoLA and SST-2)
#   DATA_ROOT/<TASK>-bin/label/   labels binarized through their own dict.txt, built from the
#                                 train labels (train and valid splits only); STS-B: train.label,
#                                 valid.label as text, the score divided by 5.0
# Splits: train, valid (dev), test (test, when GLUE_DIR has it); MNLI: valid = dev_matched,
# valid1 = dev_mismatched, test = test_matched, test1 = test_mismatched. Without train (e.g.
# --splits dev) label/dict.txt is built from the labels of valid instead.
# Each <TASK>-bin is built as <TASK>-bin.tmp.<pid> and renamed at the end (one a killed run left
# is removed at the next start); an existing <TASK>-bin that is not an empty folder is refused
# (all are checked before any work). WORKERS (default 10) sets the processes of each step; PYTHON
# (default python) runs the extraction and starts the steps (scripts/steps.sh).
set -euo pipefail
PROG=$(basename "$0")
SCRIPTS=$(cd "$(dirname "$0")" && pwd)
fail() { echo "$PROG: error: $*" >&2; exit 1; }
source "$SCRIPTS/steps.sh"
ALL_TASKS=(CoLA SST-2 MRPC QQP STS-B MNLI QNLI RTE WNLI)

[ $# -ge 3 ] || fail "usage: $PROG GLUE_DIR TASK|ALL DATA_ROOT [BPE_DIR] [--splits KINDS" \
  "--allow-empty --drop-malformed]"
GLUE_DIR=$1 TASK_ARG=$2 DATA_ROOT=${3%/} BPE=${BPE_DIR:-}
shift 3
# The optional BPE folder is told apart from the options by their leading dashes.
if [ $# -gt 0 ] && [[ $1 != -* ]]; then BPE=$1; shift; fi
OPTIONS=("$@")
WORKERS=${WORKERS:-10}
[ -n "$BPE" ] || fail "no BPE folder given: pass as fourth argument (or set BPE_DIR to) the folder" \
  "holding the GPT-2 encoder.json, vocab.bpe and dict.txt (fairseq's files from the RoBERTa release)"
for file in encoder.json vocab.bpe dict.txt; do
  [ -f "$BPE/$file" ] || fail "$BPE/$file not found; pass the folder holding the GPT-2" \
    "encoder.json, vocab.bpe and dict.txt (fairseq's files from the RoBERTa release)"
done
[ -d "$GLUE_DIR" ] || fail "$GLUE_DIR: folder not found; pass the GLUE folder holding one folder" \
  "per task (${ALL_TASKS[*]})"

TASKS=()
if [ "$TASK_ARG" = ALL ]; then
  for task in "${ALL_TASKS[@]}"; do
    if [ -d "$GLUE_DIR/$task" ]; then TASKS+=("$task"); else echo "$task: no $GLUE_DIR/$task; skipped"; fi
  done
  [ ${#TASKS[@]} -gt 0 ] || fail "$GLUE_DIR holds none of the task folders ${ALL_TASKS[*]}"
else
  [[ " ${ALL_TASKS[*]} " == *" $TASK_ARG "* ]] || fail "unknown task '$TASK_ARG'; expected ALL or" \
    "one of ${ALL_TASKS[*]}"
  TASKS=("$TASK_ARG")
fi
for task in "${TASKS[@]}"; do
  out="$DATA_ROOT/$task-bin"
  if [ -e "$out" ] && { [ ! -d "$out" ] || [ -n "$(ls -A "$out")" ]; }; then
    fail "$out already exists; remove it or choose another DATA_ROOT"
  fi
done

mkdir -p "$DATA_ROOT"
remove_dead_leftovers "$DATA_ROOT/.glue-work"
for task in "${TASKS[@]}"; do remove_dead_leftovers "$DATA_ROOT/$task-bin.tmp"; done
WORK=$(mktemp -d "$DATA_ROOT/.glue-work.$$.XXXXXX")
TMP=""
trap 'rm -rf "$WORK" ${TMP:+"$TMP"}' EXIT
# An interrupted run must still reach the EXIT trap, which bash skips on an untrapped signal.
trap 'exit 130' INT
trap 'exit 143' TERM

numbered() { if [ "$2" -eq 0 ]; then echo "$1"; else echo "$1$2"; fi; }
# Comma-joined paths "$1/<split><suffix>" of the remaining split names, for --validpref/--testpref.
joined() {
  local dir=$1 suffix=$2 paths=() split
  shift 2
  for split in "$@"; do paths+=("$dir/$split$suffix"); done
  local IFS=,
  echo "${paths[*]}"
}

# Binarize the extracted text of one task ($1) from $2 into the folder $3.
binarize_task() {
  local task=$1 text=$2 dest=$3 bpe=$2/bpe split k
  local inputs=1 train=() valid=() test=()
  case $task in CoLA|SST-2) ;; *) inputs=2 ;; esac
  # preprocess_glue.py wrote only the splits it found, so the files tell which splits to bin.
  for split in train dev dev_matched dev_mismatched test test_matched test_mismatched; do
    if [ ! -f "$text/$split.raw.input0" ]; then continue; fi
    case $split in train) train=(train) ;; dev*) valid+=("$split") ;; *) test+=("$split") ;; esac
  done
  mkdir -p "$bpe"

  # The input files of a split are aligned line by line, so one call encodes them in lock step.
  for split in "${train[@]}" "${valid[@]}" "${test[@]}"; do
    local sources=() targets=()
    for ((k = 0; k < inputs; k++)); do
      sources+=("$text/$split.raw.input$k") targets+=("$bpe/$split.input$k")
    done
    step roberta-bpe encode --encoder-json "$BPE/encoder.json" --vocab-bpe "$BPE/vocab.bpe" \
      --inputs "${sources[@]}" --outputs "${targets[@]}" --keep-empty --workers "$WORKERS"
  done
  local args
  for ((k = 0; k < inputs; k++)); do
    args=()
    [ ${#train[@]} -eq 0 ] || args+=(--trainpref "$bpe/train.input$k")
    [ ${#valid[@]} -eq 0 ] || args+=(--validpref "$(joined "$bpe" ".input$k" "${valid[@]}")")
    [ ${#test[@]} -eq 0 ] || args+=(--testpref "$(joined "$bpe" ".input$k" "${test[@]}")")
    step roberta-preprocess --only-source --srcdict "$BPE/dict.txt" "${args[@]}" \
      --destdir "$dest/input$k" --workers "$WORKERS"
  done

  # Test files carry no labels; with test splits alone there is no label folder.
  if [ ${#train[@]} -gt 0 ] || [ ${#valid[@]} -gt 0 ]; then
    binarize_labels "$task" "$text" "$dest/label" "${train[@]}" "${valid[@]}"
  fi
}

# Binarize the labels of task $1 from $2 into the folder $3; the other arguments are the
# labeled splits, train (when present) first.
binarize_labels() {
  local task=$1 text=$2 dest=$3 train=() valid=() k
  shift 3
  if [ "$1" = train ]; then train=(train); shift; fi
  valid=("$@")
  mkdir -p "$dest"
  if [ "$task" = STS-B ]; then
    # Regression targets stay text; preprocess_glue.py already divided them by 5.0.
    if [ ${#train[@]} -gt 0 ]; then cp "$text/train.label" "$dest/train.label"; fi
    for k in "${!valid[@]}"; do
      cp "$text/${valid[$k]}.label" "$dest/$(numbered valid "$k").label"
    done
    return
  fi
  local args=()
  if [ ${#train[@]} -gt 0 ]; then
    args+=(--trainpref "$text/train.label")
  else
    # Without train data the label dictionary comes from the first labeled split.
    step roberta-preprocess --only-source --dict-only --trainpref "$text/${valid[0]}.label" \
      --destdir "$dest" --workers "$WORKERS"
    args+=(--srcdict "$dest/dict.txt")
  fi
  [ ${#valid[@]} -eq 0 ] || args+=(--validpref "$(joined "$text" .label "${valid[@]}")")
  step roberta-preprocess --only-source "${args[@]}" --destdir "$dest" --workers "$WORKERS"
}

for task in "${TASKS[@]}"; do
  echo "preprocessing $task"
  step "${PYTHON:-python}" "$SCRIPTS/preprocess_glue.py" --glue-dir "$GLUE_DIR" --task "$task" \
    --output-dir "$WORK/$task" ${OPTIONS[@]+"${OPTIONS[@]}"}
  TMP="$DATA_ROOT/$task-bin.tmp.$$"
  binarize_task "$task" "$WORK/$task" "$TMP"
  # rmdir only succeeds on an empty folder; mv then renames within one filesystem (atomic).
  out="$DATA_ROOT/$task-bin"
  if [ -d "$out" ]; then rmdir "$out"; fi
  mv "$TMP" "$out"
  TMP=""
  rm -rf "${WORK:?}/$task"
  echo "wrote $out"
done
