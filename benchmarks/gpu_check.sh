#!/usr/bin/env bash
# The one-shot GPU check (benchmarks/gpu_check.py): run once on a lent GPU, no network needed.
#   benchmarks/gpu_check.sh [--out FILE] [--dry-run] [...]   (--help lists the flags)
# The JSON summary is the last line of stdout and is written to --out (default gpu_check.json; a
# relative path is taken from the repository root, where the check runs); without a CUDA device
# it reports {"status": "skipped", ...} and exits 0.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# The checkout first on the path: the check must import this tree's roberta, tasks and criterions.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
OUT=gpu_check.json
previous=""
for arg in "$@"; do
  case "$arg" in --out=*) OUT=${arg#--out=} ;; esac
  [ "$previous" = "--out" ] && OUT=$arg
  previous=$arg
done
"${PYTHON:-python}" benchmarks/gpu_check.py "$@"
echo "gpu_check: summary written to $(realpath -m "$OUT")" >&2
