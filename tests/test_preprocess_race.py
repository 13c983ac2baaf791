"""RACE preprocessing: scripts/preprocess_race.py (text) and scripts/preprocess_race.sh (data-bin)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from roberta.data.dictionary import Dictionary
from roberta.data.gpt2_bpe import GPT2BPE
from roberta.data.indexed_dataset import MMapIndexedDataset
from support.paths import SCRIPTS
from support.scripts import assert_error_is_only_line, read_lines, run, script_env

# Output split -> (release folder, levels), and the name each split gets in the data-bin.
SPLITS = {"train": ("train", ("middle", "high")), "dev": ("dev", ("middle", "high")),
          "test-middle": ("test", ("middle",)), "test-high": ("test", ("high",))}
BIN_NAMES = {"train": "train", "dev": "valid", "test-middle": "test", "test-high": "test1"}
needs_console_scripts = pytest.mark.skipif(shutil.which("roberta-bpe") is None,
                                           reason="console scripts not installed (pip install -e .)")


@pytest.fixture(scope="module")
def race_dir(shared_data: Path) -> Path:
    return shared_data / "race" / "RACE"


@pytest.fixture(scope="module")
def extracted(race_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("race") / "extracted"
    result = run(sys.executable, SCRIPTS / "preprocess_race.py", "--input-dir", race_dir,
                 "--output-dir", out)
    assert result.returncode == 0, result.stderr
    # Hand-counted from the 15 sample files (dev/high/73.txt holds a single question).
    assert result.stdout.splitlines()[:4] == ["train: 22 questions", "dev: 17 questions",
                                              "test-middle: 14 questions", "test-high: 8 questions"]
    return out


@pytest.fixture(scope="module")
def race_data_bin(race_dir: Path, gpt2_bpe_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("roberta-bpe") is None:
        pytest.skip("console scripts not installed (pip install -e .)")
    root = tmp_path_factory.mktemp("race-bin")
    result = run("bash", SCRIPTS / "preprocess_race.sh", race_dir, root / "data-bin", gpt2_bpe_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(path.name for path in root.iterdir()) == ["data-bin"], "temporary folders left"
    return root / "data-bin"


def expected_files(race_dir: Path, split: str) -> list[Path]:
    folder, levels = SPLITS[split]
    return [path for level in levels
            for path in sorted((race_dir / folder / level).glob("*.txt"), key=lambda p: int(p.stem))]


@pytest.mark.parametrize("split", list(SPLITS))
def test_examples_follow_the_json_files_in_sorted_order(race_dir: Path, extracted: Path, split: str) -> None:
    ids, labels = [], []
    for path in expected_files(race_dir, split):
        data = json.loads(path.read_text(encoding="utf-8"))
        ids += [f"{path.relative_to(race_dir).as_posix()}\t{number}"
                for number in range(len(data["questions"]))]
        labels += [str("ABCD".index(answer)) for answer in data["answers"]]
    assert read_lines(extracted / f"{split}.ids") == ids
    assert read_lines(extracted / f"{split}.label") == labels
    for k in range(5):
        assert len(read_lines(extracted / f"{split}.input{k}")) == len(ids)


def line_of(extracted: Path, split: str, source: str, suffix: str) -> str:
    number = read_lines(extracted / f"{split}.ids").index(source)
    return read_lines(extracted / f"{split}.{suffix}")[number]


def test_blanks_take_the_option_and_other_questions_are_joined_with_a_space(extracted: Path) -> None:
    # "According to the passage,  _  in the morning is the best  _  ." has two blanks; option C.
    assert line_of(extracted, "train", "train/middle/2.txt\t0", "input3") == (
        "According to the passage, drinking some water; medicine in the morning is the best "
        "drinking some water; medicine .")
    assert line_of(extracted, "train", "train/middle/2.txt\t0", "label") == "2"
    # A question that starts with its blank.
    assert line_of(extracted, "train", "train/middle/2.txt\t1", "input1") == (
        "Drinking some water after getting up in the morning can prevent high blood pressure, "
        "cerebral hemorrhages and so on.")
    assert line_of(extracted, "dev", "dev/middle/73.txt\t0", "input4") == (
        "Where can we find this piece of writing? In a travel magazine.")
    context = line_of(extracted, "train", "train/middle/2.txt\t0", "input0")
    assert context.startswith("Drinking water is good for your health. There are some scientific "
                              "ways of drinking water. 1. It is the best medicine to drink two "
                              "glasses of water in the morning. 2. Drink clean water.")
    assert "  " not in context and context == line_of(extracted, "train", "train/middle/2.txt\t4", "input0")


@pytest.mark.slow
def test_data_bin_layout(race_data_bin: Path) -> None:
    names = ["train", "valid", "test", "test1"]
    assert sorted(path.name for path in race_data_bin.iterdir()) == [
        "input0", "input1", "input2", "input3", "input4", "label"]
    for k in range(5):
        files = {path.name for path in (race_data_bin / f"input{k}").iterdir()}
        assert {"dict.txt"} | {f"{name}.{ext}" for name in names for ext in ("bin", "idx")} <= files
    assert sorted(path.name for path in (race_data_bin / "label").iterdir()) == sorted(
        f"{name}.{ext}" for name in names for ext in ("label", "ids"))


@pytest.mark.slow
@pytest.mark.parametrize("split", list(SPLITS))
def test_binarized_lines_decode_to_the_extracted_text(race_data_bin: Path, extracted: Path,
                                                      gpt2_bpe_dir: Path, split: str) -> None:
    name = BIN_NAMES[split]
    dictionary = Dictionary.load(race_data_bin / "input0" / "dict.txt")
    bpe = GPT2BPE.from_dir(gpt2_bpe_dir)
    for k in range(5):
        dataset = MMapIndexedDataset(race_data_bin / f"input{k}" / name)
        lines = read_lines(extracted / f"{split}.input{k}")
        assert len(dataset) == len(lines)
        for number in (0, len(lines) - 1):
            assert int(dataset[number][-1]) == dictionary.eos()
            assert bpe.decode(dictionary.string(dataset[number])) == lines[number]
    for suffix in ("label", "ids"):
        assert read_lines(race_data_bin / "label" / f"{name}.{suffix}") == read_lines(
            extracted / f"{split}.{suffix}")


VALID_FILE = {"article": "Tom has a dog.\nIt is  black.", "questions": ["Tom has a  _  .", "What color?"],
              "options": [["cat", "dog", "fish", "bird"], ["red", "black", "white", "blue"]],
              "answers": ["B", "B"], "id": "x"}


def write_race(root: Path, bad_file: str | None = None) -> Path:
    """A small RACE tree with one valid file per split folder, and `bad_file` as train/high/5.txt."""
    race = root / "RACE"
    for folder in ("train", "dev", "test"):
        for level in ("middle", "high"):
            (race / folder / level).mkdir(parents=True)
            (race / folder / level / "1.txt").write_text(json.dumps(VALID_FILE), encoding="utf-8")
    if bad_file is not None:
        (race / "train" / "high" / "5.txt").write_text(bad_file, encoding="utf-8")
    return race


def with_changes(**changes: object) -> str:
    return json.dumps({**VALID_FILE, **changes})


MALFORMED = {
    "bad-json": ('{"article": "x", ', "not valid JSON"),
    "three-options": (with_changes(options=[["a", "b", "c", "d"], ["a", "b", "c"]]),
                      "question 1 has 3 options, expected 4"),
    "answer-E": (with_changes(answers=["A", "E"]), "question 1 has answer 'E', expected one of A, B, C, D"),
    "missing-key": (json.dumps({"article": "x", "questions": [], "options": []}), "missing key(s) answers"),
    "lengths-differ": (with_changes(answers=["A"]), "counts differ (questions 2, options 2, answers 1)"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_file_is_one_line_error_and_writes_nothing(tmp_path: Path, case: str) -> None:
    content, message = MALFORMED[case]
    race = write_race(tmp_path, content)
    result = run(sys.executable, SCRIPTS / "preprocess_race.py", "--input-dir", race,
                 "--output-dir", tmp_path / "out")
    assert_error_is_only_line(result, "preprocess_race.py", str(race / "train" / "high" / "5.txt"), message)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["RACE"]


def test_missing_split_directory_is_named(tmp_path: Path) -> None:
    race = write_race(tmp_path)
    shutil.rmtree(race / "test" / "high")
    result = run(sys.executable, SCRIPTS / "preprocess_race.py", "--input-dir", race,
                 "--output-dir", tmp_path / "out")
    assert_error_is_only_line(result, "preprocess_race.py", str(race / "test" / "high"), "not found")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["RACE"]


def test_existing_output_dir_is_refused_and_kept(tmp_path: Path) -> None:
    race = write_race(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("earlier results", encoding="utf-8")
    result = run(sys.executable, SCRIPTS / "preprocess_race.py", "--input-dir", race,
                 "--output-dir", tmp_path / "out")
    assert_error_is_only_line(result, "preprocess_race.py", "already exists")
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["keep.txt"]


@needs_console_scripts
def test_shell_script_failure_leaves_no_data_bin(tmp_path: Path) -> None:
    race = write_race(tmp_path, with_changes(answers=["A", "E"]))
    result = run("bash", SCRIPTS / "preprocess_race.sh", race, tmp_path / "data-bin", tmp_path / "bpe")
    assert_error_is_only_line(result, "preprocess_race.py", "answer 'E'")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["RACE"]


def test_shell_script_without_bpe_folder_says_what_to_pass(tmp_path: Path) -> None:
    race = write_race(tmp_path)
    env = {key: value for key, value in script_env().items() if key != "BPE_DIR"}
    result = subprocess.run(["bash", str(SCRIPTS / "preprocess_race.sh"), str(race), str(tmp_path / "bin")],
                            capture_output=True, text=True, env=env, timeout=60)
    assert_error_is_only_line(result, "preprocess_race.sh", "encoder.json, vocab.bpe and dict.txt")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["RACE"]


def test_binarize_script_refuses_an_existing_data_bin(tmp_path: Path) -> None:
    bpe = tmp_path / "bpe"
    bpe.mkdir()
    for name in ("encoder.json", "vocab.bpe", "dict.txt"):
        (bpe / name).write_text("", encoding="utf-8")
    (tmp_path / "data-bin").mkdir()
    (tmp_path / "data-bin" / "keep.txt").write_text("earlier data", encoding="utf-8")
    result = run("bash", SCRIPTS / "binarize_multiple_choice.sh", tmp_path / "text", tmp_path / "data-bin",
                 bpe, "4", "train", "dev", "test")
    assert_error_is_only_line(result, "binarize_multiple_choice.sh", f"{tmp_path / 'data-bin'} already exists")
    assert [path.name for path in (tmp_path / "data-bin").iterdir()] == ["keep.txt"]
