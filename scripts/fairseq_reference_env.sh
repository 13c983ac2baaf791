#!/usr/bin/env bash
# The reference fairseq 0.12.2 in its own Python 3.10 venv, for the opt-in interop tests:
#   bash scripts/fairseq_reference_env.sh [DIR]        (default DIR: .fairseq-venv)
#   eval "$(bash scripts/fairseq_reference_env.sh)"    then: pytest tests/test_fairseq_interop.py
# fairseq 0.12.2 does not import on Python >= 3.11 and needs numpy < 2, hence a venv of its own.
# Python 3.10 is $PYTHON310, else python3.10 on PATH, else pyenv's ~/.pyenv/versions/3.10.*.
# Idempotent: a DIR that already imports fairseq 0.12.2 is kept as it is. The install itself
# needs the package index (or a local mirror pip is configured for); progress goes to stderr,
# stdout gets only the `export FAIRSEQ_PYTHON=...` line.
set -euo pipefail
PROG=$(basename "$0")
fail() { echo "$PROG: error: $*" >&2; exit 1; }

[ $# -le 1 ] || fail "usage: $PROG [DIR]"
DIR=${1:-.fairseq-venv}
VENV_PYTHON=$DIR/bin/python

has_fairseq() {
  [ -x "$VENV_PYTHON" ] && [ "$("$VENV_PYTHON" -c 'import fairseq; print(fairseq.__version__)' 2>/dev/null \
    | tail -n 1)" = "0.12.2" ]
}

find_python310() {
  local candidate
  for candidate in "${PYTHON310:-}" "$(command -v python3.10 || true)" "$HOME"/.pyenv/versions/3.10.*/bin/python; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] \
        && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

if ! has_fairseq; then
  PYTHON=$(find_python310) || fail "no Python 3.10 found: set PYTHON310 to a python3.10 interpreter" \
    "(fairseq 0.12.2 does not run on newer Pythons), e.g. PYTHON310=~/.pyenv/versions/3.10.13/bin/python"
  echo "$PROG: building $DIR with $PYTHON (torch 2.1.2, fairseq 0.12.2, numpy<2; a few minutes)" >&2
  [ -x "$VENV_PYTHON" ] || "$PYTHON" -m venv "$DIR" >&2
  "$VENV_PYTHON" -m pip install torch==2.1.2 fairseq==0.12.2 'numpy<2' >&2 \
    || fail "pip could not install fairseq 0.12.2 into $DIR (see its output above); fix that and rerun"
  has_fairseq || fail "$DIR was built but does not import fairseq 0.12.2; remove $DIR and rerun"
fi
echo "export FAIRSEQ_PYTHON=$(cd "$DIR" && pwd)/bin/python"
