"""Official SQuAD 2.0 evaluation, same interface as `evaluate-v2.0.py`:

    python scripts/squad2_eval.py data.json pred.json [-n na_prob.json] [-t 1.0] [-o eval.json]

`pred.json` maps every question id to its answer text ("" for no answer); `na_prob.json` maps
question ids to a no-answer score (larger = more likely unanswerable; probabilities or logits).
Prints the metrics as JSON (indent 2) or writes them to `-o`: the official keys, then, with
`-n`, `best_exact_null_score_diff_threshold` and `best_f1_null_score_diff_threshold`, the `-t`
that gives `best_exact` and `best_f1` back (the official `best_*_thresh` does not where
abstaining everywhere is best). The official plotting options (`-p`, `-v`) are not offered. The
metric itself is roberta/squad_metrics.py.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
from typing import Any, Sequence

from roberta.cli.common import run_cli
from roberta.errors import UserError
from roberta.fileio import atomic_write
from roberta.logging import setup_logging
from roberta.squad_metrics import gold_answers, squad2_metrics

PROG = "squad2_eval.py"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG,
                                     description="Official evaluation script for SQuAD version 2.0.")
    parser.add_argument("data_file", metavar="data.json", help="input data JSON file")
    parser.add_argument("pred_file", metavar="pred.json", help="model predictions: {qid: answer text}")
    parser.add_argument("--out-file", "-o", metavar="eval.json",
                        help="write the metrics to this file (default: stdout)")
    parser.add_argument("--na-prob-file", "-n", metavar="na_prob.json",
                        help="model estimates of the probability of no answer: {qid: number}")
    parser.add_argument("--na-prob-thresh", "-t", type=float, default=1.0,
                        help='predict "" where the no-answer probability exceeds this (default: 1.0)')
    return parser


def load_json(path: str, what: str) -> Any:
    """The parsed contents of a JSON file; any failure is a UserError naming `what` and `path`."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise UserError(f"{what} {path}: no such file; check the path") from None
    except OSError as error:
        raise UserError(f"{what} {path}: cannot read ({error.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{what} {path}: not valid UTF-8 JSON ({error})") from None


def load_object(path: str, what: str) -> dict[str, Any]:
    """A JSON file that must hold one object ({qid: value})."""
    value = load_json(path, what)
    if not isinstance(value, dict):
        raise UserError(f"{what} {path}: expected a JSON object {{question id: value}}, "
                        f"found {type(value).__name__}")
    return value


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if math.isnan(args.na_prob_thresh):
        raise UserError("--na-prob-thresh nan: not a number; give a threshold such as 0.5")
    setup_logging(level=logging.WARNING)
    gold = gold_answers(load_json(args.data_file, "data file"), source=f"data file {args.data_file}")
    predictions = load_object(args.pred_file, "prediction file")
    na_probs = load_object(args.na_prob_file, "--na-prob-file") if args.na_prob_file else None
    metrics = squad2_metrics(gold, predictions, na_probs, args.na_prob_thresh)
    text = json.dumps(metrics, indent=2)
    if not args.out_file:
        print(text)
        return
    try:
        with atomic_write(args.out_file, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    except OSError as error:
        raise UserError(f"--out-file {args.out_file}: cannot write ({error.strerror}); "
                        f"pick a writable path") from None


if __name__ == "__main__":
    run_cli(main, PROG)
