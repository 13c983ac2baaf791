"""SQuAD 2.0 windows, targets and offsets: roberta/data/squad_*.py, through scripts/preprocess_squad.py
and scripts/preprocess_squad.sh."""
from __future__ import annotations

import json
import re
import string
import subprocess
import sys
from pathlib import Path

import pytest

from roberta.data.dictionary import Dictionary
from roberta.data.gpt2_bpe import GPT2BPE
from roberta.data.indexed_dataset import MMapIndexedDataset
from roberta.data.squad_data_bin import SplitCounts, write_data_bin
from roberta.data.squad_json import read_squad
from roberta.data.squad_windows import WindowSettings, doc_windows
from roberta.errors import UserError
from support.paths import SCRIPTS
from support.scripts import assert_error_is_only_line, run, script_env

SCRIPT = SCRIPTS / "preprocess_squad.py"

SMALL = {"max_positions": 64, "doc_stride": 32, "max_query_length": 16}
SPLIT_FILES = ["bin", "contexts.jsonl", "idx", "meta.json", "offsets.bin", "offsets.idx",
               "questions.jsonl", "windows.tsv"]
# "Normandy" occurs at 22 and 32; "France" at 47.
CONTEXT = "The Normans came from Normandy. Normandy is in France."
TOY_QAS = [
    {"id": "exact", "question": "Where?", "answers": [{"text": "France", "answer_start": 47}],
     "is_impossible": False},
    {"id": "moved", "question": "Which region?", "answers": [{"text": "Normandy", "answer_start": 30}],
     "is_impossible": False},
    {"id": "wrong", "question": "Who?", "answers": [{"text": "Vikings", "answer_start": 4}],
     "is_impossible": False},
    {"id": "none", "question": "When?", "answers": [], "is_impossible": True},
]


def normalize_answer(text: str) -> str:
    """The official SQuAD normalisation: lowercase, no punctuation, no articles, single spaces."""
    text = "".join(char for char in text.lower() if char not in string.punctuation)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def build(squad_json: Path, data_bin: Path, bpe_dir: Path, *, workers: int = 1,
          **settings: int | bool) -> dict[str, SplitCounts]:
    """The data folder of `squad_json` as both train and dev file (the script's defaults unless
    `settings` say otherwise); the counts of each split."""
    paragraphs = read_squad(squad_json)
    settings = {"max_positions": 512, "doc_stride": 128, "max_query_length": 128,
                "question_first": False, **settings}
    counts: dict[str, SplitCounts] = {}
    write_data_bin(data_bin, bpe_dir, {"train": paragraphs, "valid": paragraphs},
                   WindowSettings(**settings), workers, counts.__setitem__)
    return counts


def toy_squad(path: Path, qas: list[dict] = TOY_QAS) -> Path:
    path.write_text(json.dumps({"version": "v2.0", "data": [
        {"title": "t", "paragraphs": [{"context": CONTEXT, "qas": qas}]}]}), encoding="utf-8")
    return path


def read_split(data_bin: Path, split: str = "valid") -> dict:
    lines = (data_bin / f"{split}.windows.tsv").read_text().splitlines()
    return {
        "windows": [tuple(map(int, line.split("\t"))) for line in lines],
        "tokens": MMapIndexedDataset(data_bin / split),
        "offsets": MMapIndexedDataset(data_bin / f"{split}.offsets"),
        "questions": [json.loads(line) for line in open(data_bin / f"{split}.questions.jsonl")],
        "contexts": [json.loads(line) for line in open(data_bin / f"{split}.contexts.jsonl")],
        "meta": json.loads((data_bin / f"{split}.meta.json").read_text()),
    }


def answer_text(split: dict, window: tuple[int, ...]) -> str:
    """The context characters from the window's start token to its end token."""
    question, passage_position, doc_start, _, start, end = window
    spans = split["offsets"][question].view(-1, 2).tolist()
    first, last = (doc_start + position - passage_position for position in (start, end))
    context = split["contexts"][split["questions"][question]["paragraph"]]
    return context[spans[first][0]:spans[last][1]]


@pytest.fixture(scope="module")
def squad_json(shared_data: Path) -> Path:
    return shared_data / "squad" / "haystack_small_dev_v2.json"


@pytest.fixture(scope="module")
def source_questions(squad_json: Path) -> list[tuple[str, str]]:
    data = json.loads(squad_json.read_text(encoding="utf-8"))["data"]
    return [(qa["id"], qa["question"]) for article in data for paragraph in article["paragraphs"]
            for qa in paragraph["qas"]]


@pytest.fixture(scope="module")
def default_bin(squad_json: Path, gpt2_bpe_dir: Path, tmp_path_factory) -> Path:
    data_bin = tmp_path_factory.mktemp("squad") / "data-bin"
    build(squad_json, data_bin, gpt2_bpe_dir)
    return data_bin


@pytest.fixture(scope="module")
def small_bin(squad_json: Path, gpt2_bpe_dir: Path, tmp_path_factory) -> Path:
    data_bin = tmp_path_factory.mktemp("squad-small") / "data-bin"
    build(squad_json, data_bin, gpt2_bpe_dir, **SMALL)
    return data_bin


def test_layout_and_counts(default_bin: Path, gpt2_bpe_dir: Path, source_questions: list) -> None:
    assert sorted(path.name for path in default_bin.iterdir()) == ["dict.txt"] + sorted(
        f"{split}.{suffix}" for split in ("train", "valid") for suffix in SPLIT_FILES)
    assert (default_bin / "dict.txt").read_bytes() == (gpt2_bpe_dir / "dict.txt").read_bytes()
    valid = read_split(default_bin)
    assert valid["meta"] == {"max_positions": 512, "doc_stride": 128, "max_query_length": 128,
                             "question_first": False, "questions": 626, "windows": len(valid["windows"]),
                             "answerable": 293, "unanswerable": 333, "realigned": 0,
                             "mismatched": 0, "dropped": 0}
    assert [question["id"] for question in valid["questions"]] == [qid for qid, _ in source_questions]
    assert sum(question["is_impossible"] for question in valid["questions"]) == 333
    assert len(valid["contexts"]) == 87 and len(valid["offsets"]) == 626
    # At 512 positions every passage of the sample fits one window.
    assert len(valid["tokens"]) == len(valid["windows"]) == 626
    assert [window[0] for window in valid["windows"]] == list(range(626))
    assert read_split(default_bin, "train")["meta"] == valid["meta"]


def test_windows_spell_passage_then_question(default_bin: Path, gpt2_bpe_dir: Path,
                                             source_questions: list) -> None:
    valid, bpe = read_split(default_bin), GPT2BPE.from_dir(gpt2_bpe_dir)
    dictionary = Dictionary.load(gpt2_bpe_dir / "dict.txt")
    for number, window in enumerate(valid["windows"][:60]):
        question, passage_position, doc_start, doc_length, _, _ = window
        tokens = valid["tokens"][number].tolist()
        assert len(tokens) <= 512 and (passage_position, doc_start) == (1, 0)
        assert tokens[0] == dictionary.bos() and tokens[doc_length + 1] == tokens[-1] == dictionary.eos()
        assert doc_length == len(valid["offsets"][question]) // 2
        context = valid["contexts"][valid["questions"][question]["paragraph"]]
        assert bpe.decode(dictionary.string(tokens[1:doc_length + 1])) == context
        assert bpe.decode(dictionary.string(tokens[doc_length + 2:-1])) == "Q: " + source_questions[question][1].strip()


@pytest.mark.parametrize("bin_fixture", ["default_bin", "small_bin"])
def test_every_answer_is_recovered_from_a_window(request: pytest.FixtureRequest, bin_fixture: str) -> None:
    valid = read_split(request.getfixturevalue(bin_fixture))
    recovered: dict[int, set[str]] = {}
    for window in valid["windows"]:
        if window[4:] != (0, 0):
            passage_position, doc_length = window[1], window[3]
            assert passage_position <= window[4] <= window[5] < passage_position + doc_length
            recovered.setdefault(window[0], set()).add(normalize_answer(answer_text(valid, window)))
    for number, question in enumerate(valid["questions"]):
        if question["is_impossible"]:
            assert number not in recovered
        else:
            assert recovered[number] == {normalize_answer(question["answers"][0])}, question


def test_windows_slide_by_doc_stride(small_bin: Path) -> None:
    valid = read_split(small_bin)
    assert valid["meta"]["windows"] == len(valid["windows"]) == 2501  # about 4 per question
    by_question: dict[int, list[tuple[int, ...]]] = {}
    max_doc: dict[int, int] = {}
    for number, window in enumerate(valid["windows"]):
        by_question.setdefault(window[0], []).append(window)
        query_length = len(valid["tokens"][number]) - window[3] - 3
        max_doc.setdefault(window[0], 64 - query_length - 3)
        assert query_length == 64 - max_doc[window[0]] - 3  # same question in every window
    for question, windows in by_question.items():
        num_passage = len(valid["offsets"][question]) // 2
        # Every window but the last is full; the starts are --doc-stride apart; the last one
        # reaches the passage end, and no extra window follows it.
        assert all(window[3] == max_doc[question] for window in windows[:-1])
        assert [window[2] for window in windows] == list(range(0, 32 * len(windows), 32))
        assert windows[-1][2] + windows[-1][3] == num_passage
        assert len(windows) == 1 + -(-max(0, num_passage - max_doc[question]) // 32)


def test_question_is_cut_at_max_query_length(small_bin: Path, gpt2_bpe_dir: Path,
                                             source_questions: list) -> None:
    valid, bpe = read_split(small_bin), GPT2BPE.from_dir(gpt2_bpe_dir)
    dictionary = Dictionary.load(gpt2_bpe_dir / "dict.txt")
    cut = 0
    for number, window in enumerate(valid["windows"]):
        tokens = valid["tokens"][number].tolist()
        query = tokens[window[3] + 2:-1]
        full = dictionary.encode_line(bpe.encode("Q: " + source_questions[window[0]][1].strip()),
                                      append_eos=False).tolist()
        assert query == full[:16]
        cut += len(full) > 16
    assert cut > 100


def test_question_first_layout(squad_json: Path, gpt2_bpe_dir: Path, tmp_path: Path) -> None:
    build(squad_json, tmp_path / "data-bin", gpt2_bpe_dir, **SMALL, question_first=True)
    valid = read_split(tmp_path / "data-bin")
    assert valid["meta"]["question_first"] is True
    dictionary = Dictionary.load(gpt2_bpe_dir / "dict.txt")
    bos, eos = dictionary.bos(), dictionary.eos()
    for number, window in enumerate(valid["windows"]):
        _, passage_position, _, doc_length, start, end = window
        tokens = valid["tokens"][number].tolist()
        assert tokens[0] == bos and tokens[passage_position - 2:passage_position] == [eos, eos]
        assert len(tokens) == passage_position + doc_length + 1 <= 64 and tokens[-1] == eos
        assert 1 < passage_position <= 16 + 3
        if start:
            assert passage_position <= start <= end < passage_position + doc_length
    answered = {window[0] for window in valid["windows"] if window[4]}
    assert len(answered) == 293


def test_workers_give_the_same_bytes(squad_json: Path, gpt2_bpe_dir: Path, small_bin: Path,
                                     tmp_path: Path) -> None:
    data_bin = tmp_path / "data-bin"
    build(squad_json, data_bin, gpt2_bpe_dir, workers=2, **SMALL)
    for path in small_bin.iterdir():
        assert (data_bin / path.name).read_bytes() == path.read_bytes(), path.name


def test_realigned_and_mismatched_are_counted(tmp_path: Path, gpt2_bpe_dir: Path) -> None:
    counts = build(toy_squad(tmp_path / "toy.json"), tmp_path / "data-bin", gpt2_bpe_dir)
    assert counts == {
        "train": SplitCounts(questions=3, windows=3, answerable=2, unanswerable=1, realigned=1, mismatched=1,
                             dropped=1),
        "valid": SplitCounts(questions=4, windows=4, answerable=3, unanswerable=1, realigned=1, mismatched=1,
                             dropped=0)}
    train, valid = read_split(tmp_path / "data-bin", "train"), read_split(tmp_path / "data-bin")
    assert [question["id"] for question in train["questions"]] == ["exact", "moved", "none"]
    assert [question["id"] for question in valid["questions"]] == ["exact", "moved", "wrong", "none"]
    assert [answer_text(train, window) for window in train["windows"][:2]] == ["France", "Normandy"]
    moved = train["windows"][1]
    start_char = train["offsets"][1].view(-1, 2)[moved[2] + moved[4] - moved[1]][0].item()
    assert start_char == 32  # the occurrence nearest to the given 30, not the first (22)
    assert valid["windows"][2][4:] == (0, 0) and valid["windows"][3][4:] == (0, 0)
    assert train["meta"]["dropped"] == 1 and valid["meta"]["mismatched"] == 1


def test_window_starts_follow_bert() -> None:
    assert doc_windows(10, 4, 3) == [(0, 4), (3, 4), (6, 4)]
    assert doc_windows(10, 4, 6) == [(0, 4), (4, 4), (8, 2)]  # never skip tokens
    assert doc_windows(4, 4, 2) == [(0, 4)]
    assert doc_windows(0, 4, 2) == [(0, 0)]


MALFORMED = {
    "not-json": ('{"data": [', "not valid JSON"),
    "no-data": ('{"version": "v2.0"}', "top level: missing key 'data'"),
    "list": ("[1, 2]", "top level: expected a JSON object, found list"),
    "no-context": ('{"data": [{"paragraphs": [{"qas": []}]}]}', "data[0].paragraphs[0]: missing key 'context'"),
    "bad-start": (json.dumps({"data": [{"paragraphs": [{"context": "x", "qas": [
        {"id": "q", "question": "?", "answers": [{"text": "x", "answer_start": "0"}]}]}]}]}),
                  "answers[0]: 'answer_start' must be int, found str"),
    "duplicate-id": (json.dumps({"data": [{"paragraphs": [{"context": CONTEXT, "qas": TOY_QAS[:1] * 2}]}]}),
                     "question id 'exact' appears twice"),
}


def run_failing(argv: list[str]) -> str:
    result = run(sys.executable, SCRIPT, *argv)
    assert_error_is_only_line(result, "preprocess_squad.py")
    return result.stderr.strip()


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_json_is_refused_with_its_place(case: str, tmp_path: Path) -> None:
    content, message = MALFORMED[case]
    (tmp_path / "dev.json").write_text(content, encoding="utf-8")
    with pytest.raises(UserError) as error:
        read_squad(tmp_path / "dev.json")
    line = str(error.value)
    assert "\n" not in line and str(tmp_path / "dev.json") in line and message in line, line


def test_malformed_json_is_one_line_error_and_leaves_nothing(tmp_path: Path, gpt2_bpe_dir: Path) -> None:
    content, message = MALFORMED["bad-start"]
    (tmp_path / "dev.json").write_text(content, encoding="utf-8")
    train = toy_squad(tmp_path / "train.json")
    line = run_failing([str(train), str(tmp_path / "dev.json"), str(tmp_path / "out"),
                        "--bpe-dir", str(gpt2_bpe_dir)])
    assert str(tmp_path / "dev.json") in line and message in line, line
    assert sorted(path.name for path in tmp_path.iterdir()) == ["dev.json", "train.json"]


def test_window_settings_leave_a_passage_token() -> None:
    with pytest.raises(UserError, match="--max-positions 64 leaves no passage token beside "
                                        "--max-query-length 128 and 3 special tokens"):
        WindowSettings(max_positions=64, doc_stride=128, max_query_length=128, question_first=False)
    with pytest.raises(UserError, match="and 4 special tokens"):
        WindowSettings(max_positions=20, doc_stride=8, max_query_length=16, question_first=True)
    with pytest.raises(UserError, match="--doc-stride must be a positive integer, got 0"):
        WindowSettings(max_positions=64, doc_stride=0, max_query_length=16, question_first=False)
    assert WindowSettings(max_positions=20, doc_stride=8, max_query_length=15, question_first=True).max_doc(15) == 1


def test_bad_setup_is_refused(tmp_path: Path, gpt2_bpe_dir: Path) -> None:
    train = str(toy_squad(tmp_path / "train.json"))
    (tmp_path / "bpe").mkdir()
    line = run_failing([train, train, str(tmp_path / "out"), "--bpe-dir", str(tmp_path / "bpe")])
    assert f"{tmp_path / 'bpe' / 'encoder.json'} not found" in line
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("")
    line = run_failing([train, train, str(tmp_path / "out"), "--bpe-dir", str(gpt2_bpe_dir)])
    assert "already exists" in line and (tmp_path / "out" / "keep").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bpe", "out", "train.json"]


def test_shell_script(tmp_path: Path, gpt2_bpe_dir: Path) -> None:
    toy = str(toy_squad(tmp_path / "toy.json"))
    command = ["bash", str(SCRIPTS / "preprocess_squad.sh"), toy, toy, str(tmp_path / "data-bin")]
    env = {key: value for key, value in script_env().items() if key != "BPE_DIR"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1 and result.stderr.startswith("preprocess_squad.sh: error: no BPE folder")
    result = subprocess.run([*command, str(gpt2_bpe_dir), "--doc-stride", "4"], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "train: 3 questions, 3 windows, 2 answerable, 1 unanswerable, 1 realigned, 1 mismatched (1 dropped)",
        "valid: 4 questions, 4 windows, 3 answerable, 1 unanswerable, 1 realigned, 1 mismatched (0 dropped)",
        f"wrote {tmp_path / 'data-bin'}"]
    meta = json.loads((tmp_path / "data-bin" / "valid.meta.json").read_text())
    # The option is passed on; the other settings are the script's defaults.
    assert (meta["max_positions"], meta["doc_stride"], meta["max_query_length"], meta["question_first"]) == \
        (512, 4, 128, False)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data-bin", "toy.json"]
