"""SQuAD 2.0 metric (roberta/squad_metrics.py) and its CLI (scripts/squad2_eval.py).

Golden values were computed with the official `evaluate-v2.0.py` (eval-notes.md, section 1).
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from roberta.errors import UserError
from roberta.squad_metrics import (exact_score, f1_score, gold_answers, normalize_answer,
                                   squad2_metrics)

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "squad2_eval.py"
KEYS = ["exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total",
        "NoAns_exact", "NoAns_f1", "NoAns_total"]
BEST_KEYS = ["best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh",
             "best_exact_null_score_diff_threshold", "best_f1_null_score_diff_threshold"]

TOY_GOLD = {"q1": ["Rollo"], "q2": ["10th century", "the first half of the 10th century"],
            "q3": [], "q4": []}
TOY_PREDS = {"q1": "Rollo", "q2": "10th", "q3": "Normandy", "q4": ""}
TOY_NA_PROBS = {"q1": 0.2, "q2": 0.5, "q3": 0.3, "q4": 0.9}


@pytest.mark.parametrize("text, expected", [
    ("  the   Norman's  CONQUEST!! ", "normans conquest"),
    ("An apple a day", "apple day"),
    ("the-end", "theend"),
    ("“Quoted” – dash", "“quoted” – dash"),
    ("A.B.C.", "abc"),
    ("a", ""),
])
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


@pytest.mark.parametrize("gold, pred, exact, f1", [
    ("10th and 11th centuries", "in the 10th and 11th centuries", 0, 0.888889),
    ("France", "the France", 1, 1.0),
    ("Denmark, Iceland and Norway", "Norway and Denmark", 0, 0.857143),
    ("", "the", 1, 1.0),
    ("", "Rollo", 0, 0.0),
    ("a b a", "a a c", 0, 0.0),
])
def test_exact_and_f1(gold: str, pred: str, exact: int, f1: float) -> None:
    assert exact_score(gold, pred) == exact
    assert f1_score(gold, pred) == pytest.approx(f1, abs=1e-6)


# 0.5 is q2's own na_prob: abstaining needs na_prob > thresh (strict), so q2 still answers.
@pytest.mark.parametrize("thresh, exact, f1", [(1.0, 50.0, 66.666667), (0.5, 50.0, 66.666667),
                                               (0.4, 50.0, 50.0), (0.25, 75.0, 75.0)])
def test_toy_set_thresholds(thresh: float, exact: float, f1: float) -> None:
    metrics = squad2_metrics(TOY_GOLD, TOY_PREDS, TOY_NA_PROBS, thresh)
    assert list(metrics) == KEYS + BEST_KEYS
    assert metrics["exact"] == pytest.approx(exact, abs=1e-6)
    assert metrics["f1"] == pytest.approx(f1, abs=1e-4)
    assert (metrics["total"], metrics["HasAns_total"], metrics["NoAns_total"]) == (4, 2, 2)
    assert metrics["best_exact"] == metrics["best_f1"] == 75.0
    assert metrics["best_exact_thresh"] == metrics["best_f1_thresh"] == 0.2


def test_without_na_probs_there_is_no_sweep_and_nothing_abstains() -> None:
    metrics = squad2_metrics(TOY_GOLD, TOY_PREDS)
    assert list(metrics) == KEYS
    assert metrics["exact"] == 50.0 and metrics["f1"] == pytest.approx(66.666667)
    # As in the official script every na_prob is then 0.0, so a negative threshold abstains all.
    assert squad2_metrics(TOY_GOLD, TOY_PREDS, na_prob_thresh=-1.0)["exact"] == 50.0
    assert squad2_metrics(TOY_GOLD, TOY_PREDS, na_prob_thresh=-1.0)["HasAns_exact"] == 0.0


def test_a_block_appears_only_when_its_class_occurs() -> None:
    answerable = {qid: TOY_GOLD[qid] for qid in ("q1", "q2")}
    assert list(squad2_metrics(answerable, TOY_PREDS)) == ["exact", "f1", "total", "HasAns_exact",
                                                          "HasAns_f1", "HasAns_total"]
    unanswerable = {qid: TOY_GOLD[qid] for qid in ("q3", "q4")}
    assert list(squad2_metrics(unanswerable, TOY_PREDS))[3:] == ["NoAns_exact", "NoAns_f1",
                                                                 "NoAns_total"]


def test_sweep_charges_any_non_empty_string_on_unanswerable() -> None:
    # "the" normalises to "" and scores EM 1, but the official sweep looks at the raw string:
    # answering "n" costs 1, so answering both never beats abstaining on both.
    metrics = squad2_metrics({"n": [], "h": ["x"]}, {"n": "the", "h": "x"}, {"n": 0.1, "h": 0.2})
    assert metrics["exact"] == 100.0
    assert (metrics["best_exact"], metrics["best_exact_thresh"]) == (50.0, 0.0)


def test_sweep_records_only_strict_improvements() -> None:
    metrics = squad2_metrics({"n": [], "h": ["x"]}, {"n": "", "h": "y"}, {"h": 0.3, "n": 0.6})
    assert (metrics["best_exact"], metrics["best_exact_thresh"]) == (50.0, 0.0)


def test_sweep_breaks_na_prob_ties_by_the_order_of_na_probs() -> None:
    gold, preds = {"n": [], "h": ["x"]}, {"n": "z", "h": "x"}
    first_h = squad2_metrics(gold, preds, {"h": 0.5, "n": 0.5})
    first_n = squad2_metrics(gold, preds, {"n": 0.5, "h": 0.5})
    assert (first_h["best_exact"], first_h["best_exact_thresh"]) == (100.0, 0.5)
    assert (first_n["best_exact"], first_n["best_exact_thresh"]) == (50.0, 0.0)


def test_exact_and_f1_are_each_the_best_over_the_gold_answers() -> None:
    gold = {"q": ["10th century", "the first half of the 10th century", "half"]}
    assert squad2_metrics(gold, {"q": "First half of the 10th century."})["exact"] == 100.0
    # No gold matches exactly; F1 is the best over them, from "half": 2 * (1/2 * 1) / (1/2 + 1).
    metrics = squad2_metrics(gold, {"q": "half a day"})
    assert (metrics["exact"], metrics["f1"]) == (0.0, pytest.approx(66.666667))


def test_gold_answers_with_only_punctuation_count_as_no_answer() -> None:
    metrics = squad2_metrics({"q": ["...", "the"]}, {"q": ""})
    # Still HasAns (the raw list is non-empty), yet the empty prediction matches.
    assert (metrics["HasAns_total"], metrics["exact"]) == (1, 100.0)


def test_missing_predictions_name_count_and_first_ids() -> None:
    gold = {f"q{i}": ["x"] for i in range(6)}
    with pytest.raises(UserError, match=r"no prediction for 5 of 6 questions \(first: q1, q2, q3, \.\.\.\)"):
        squad2_metrics(gold, {"q0": "x"})


def test_missing_na_prob_is_an_error() -> None:
    with pytest.raises(UserError, match=r"no na_prob for 1 of 4 questions \(first: q4\)"):
        squad2_metrics(TOY_GOLD, TOY_PREDS, {qid: 0.5 for qid in ("q1", "q2", "q3")})


@pytest.mark.parametrize("na_prob", ["0.5", None, float("nan"), True])
def test_na_prob_must_be_a_number(na_prob: object) -> None:
    with pytest.raises(UserError, match="na_prob of question q1"):
        squad2_metrics(TOY_GOLD, TOY_PREDS, {**TOY_NA_PROBS, "q1": na_prob})


def test_prediction_must_be_a_string() -> None:
    with pytest.raises(UserError, match="prediction for question q2 is 10"):
        squad2_metrics(TOY_GOLD, {**TOY_PREDS, "q2": 10})


def test_extra_ids_are_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="roberta.squad_metrics"):
        metrics = squad2_metrics(TOY_GOLD, {**TOY_PREDS, "zz": "x", "zy": ""}, TOY_NA_PROBS)
    assert metrics == squad2_metrics(TOY_GOLD, TOY_PREDS, TOY_NA_PROBS)
    assert "ignored 2 predictions for question ids not in the dataset (first: zz, zy)" in caplog.text


def test_empty_dataset_is_an_error() -> None:
    with pytest.raises(UserError, match="no questions"):
        squad2_metrics({}, {})


def squad_json(qas: list) -> dict:
    return {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": "c", "qas": qas}]}]}


def test_gold_answers_reads_the_official_layout() -> None:
    data = squad_json([{"id": "a", "question": "?", "answers": [{"text": "x", "answer_start": 0}]},
                       {"id": "b", "question": "?", "answers": [], "is_impossible": True,
                        "plausible_answers": [{"text": "y", "answer_start": 0}]}])
    assert gold_answers(data) == {"a": ["x"], "b": []}


@pytest.mark.parametrize("data, fragment", [
    ([], "expected a JSON object with a 'data' list"),
    ({"version": "v2.0"}, "'data' must be a list, found nothing"),
    ({"data": [{"paragraphs": {}}]}, "data[0]: 'paragraphs' must be a list, found dict"),
    (squad_json([{"id": "a"}]), "data[0].paragraphs[0].qas[0]: 'answers' must be a list"),
    (squad_json([{"id": 7, "answers": []}]), "'id' must be a string, found 7"),
    (squad_json([{"id": "a", "answers": [{"answer_start": 3}]}]), "qas[0].answers[0] (question a)"),
])
def test_gold_answers_rejects_other_layouts(data: object, fragment: str) -> None:
    with pytest.raises(UserError) as error:
        gold_answers(data, source="dev.json")
    assert str(error.value).startswith("dev.json")
    assert fragment in str(error.value)


# The real sample: shared/data/squad/haystack_small_dev_v2.json (626 questions: 293 + 333).

@pytest.fixture(scope="module")
def squad_file(shared_data: Path) -> Path:
    path = shared_data / "squad" / "haystack_small_dev_v2.json"
    if not path.is_file():
        pytest.skip(f"SQuAD sample not found at {path}")
    return path


@pytest.fixture(scope="module")
def sample(squad_file: Path) -> tuple[dict, dict[str, str], dict[str, float]]:
    """The dataset, its first gold (or first plausible) answers, and na_probs 0.1 / 0.9."""
    data = json.loads(squad_file.read_text(encoding="utf-8"))
    first, na_probs = {}, {}
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = qa["answers"] or qa["plausible_answers"]
                first[qa["id"]] = answers[0]["text"]
                na_probs[qa["id"]] = 0.1 if qa["answers"] else 0.9
    return data, first, na_probs


def test_sample_all_empty_predictions(sample) -> None:
    data, first, _ = sample
    gold = gold_answers(data)
    metrics = squad2_metrics(gold, dict.fromkeys(gold, ""))
    assert (metrics["total"], metrics["HasAns_total"], metrics["NoAns_total"]) == (626, 293, 333)
    assert metrics["exact"] == metrics["f1"] == pytest.approx(53.194888, abs=1e-6)
    assert (metrics["HasAns_exact"], metrics["NoAns_exact"]) == (0.0, 100.0)


def test_sample_first_answers(sample) -> None:
    data, first, na_probs = sample
    metrics = squad2_metrics(gold_answers(data), first)
    assert metrics["exact"] == metrics["f1"] == pytest.approx(46.805112, abs=1e-6)
    assert (metrics["HasAns_f1"], metrics["NoAns_f1"]) == (100.0, 0.0)
    metrics = squad2_metrics(gold_answers(data), first, na_probs, 0.5)
    assert metrics["exact"] == metrics["f1"] == metrics["best_exact"] == metrics["best_f1"] == 100.0
    assert metrics["best_exact_thresh"] == metrics["best_f1_thresh"] == 0.1


# The command line, run as a user would.

def run_script(*argv: str | Path) -> subprocess.CompletedProcess:
    # This checkout first on the path, whatever the installed package points at.
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, argv)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": path}, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("squad2_eval.py: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def write_json(path: Path, value: object) -> Path:
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def test_cli_on_the_sample(sample, squad_file: Path, tmp_path: Path) -> None:
    data, first, na_probs = sample
    preds = write_json(tmp_path / "pred.json", first)
    na_file = write_json(tmp_path / "na_prob.json", na_probs)
    result = run_script(squad_file, preds, "-n", na_file, "-t", "0.5")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert list(printed) == KEYS + BEST_KEYS
    assert printed == squad2_metrics(gold_answers(data), first, na_probs, 0.5)
    assert result.stdout.startswith('{\n  "exact": 100.0,\n')

    out = tmp_path / "eval.json"
    result = run_script(squad_file, preds, "--na-prob-file", na_file, "--na-prob-thresh", "0.5",
                        "--out-file", out)
    assert result.returncode == 0 and result.stdout == "", result.stderr
    assert json.loads(out.read_text(encoding="utf-8")) == printed
    assert sorted(path.name for path in tmp_path.iterdir()) == ["eval.json", "na_prob.json", "pred.json"]


def test_cli_without_na_probs_and_with_extra_predictions(tmp_path: Path) -> None:
    data = write_json(tmp_path / "data.json",
                      squad_json([{"id": qid, "answers": [{"text": t} for t in texts]}
                                  for qid, texts in TOY_GOLD.items()]))
    preds = write_json(tmp_path / "pred.json", {**TOY_PREDS, "unknown": "x"})
    result = run_script(data, preds)
    assert result.returncode == 0, result.stderr
    assert list(json.loads(result.stdout)) == KEYS
    assert "ignored 1 predictions for question ids not in the dataset (first: unknown)" in result.stderr


def test_cli_errors_are_one_line(sample, squad_file: Path, tmp_path: Path) -> None:
    preds = write_json(tmp_path / "pred.json", {"56ddde6b9a695914005b9628": "France"})
    assert_one_line_error(run_script(tmp_path / "nowhere.json", preds), "data file", "nowhere.json",
                          "no such file")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    assert_one_line_error(run_script(squad_file, bad), "prediction file", "bad.json", "not valid")
    assert_one_line_error(run_script(write_json(tmp_path / "list.json", [1]), preds),
                          "list.json", "'data' list")
    assert_one_line_error(run_script(squad_file, write_json(tmp_path / "p.json", ["x"])),
                          "prediction file", "expected a JSON object")
    assert_one_line_error(run_script(squad_file, preds), "no prediction for 625 of 626 questions",
                          "56ddde6b9a695914005b9629")
    complete = write_json(tmp_path / "complete.json", sample[1])
    assert_one_line_error(run_script(squad_file, complete, "-t", "nan"), "--na-prob-thresh nan")
    assert_one_line_error(run_script(squad_file, complete, "-o", tmp_path / "no" / "e.json"),
                          "--out-file", "e.json", "cannot write")
