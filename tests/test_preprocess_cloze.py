"""Cloze exams to multiple-choice data: scripts/preprocess_cloze.py and scripts/preprocess_cloze.sh."""
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

# Words: The(0) cat(1) _(2) on(3) the(4) mat(5) .(6) It(7) was(8) _(9) happy(10) .(11)
TWO_BLANKS = {"article": "The cat  _ on the\nmat . It was _ happy .",
              "options": [["sat", "sit", "sits", "seat"], ["very", "much", "many", "more"]],
              "answers": ["A", "C"], "source": "generated"}
ONE_BLANK = {"article": "Birds _ in the sky .", "options": [["fly", "flies", "flown", "flying"]],
             "answers": ["D"]}
# Numbered names sort by number, files before subfolders: 2.json, 10.json, extra/1.json.
FILES = {"train/2.json": TWO_BLANKS, "train/10.json": ONE_BLANK, "train/extra/1.json": ONE_BLANK,
         "dev/1.json": TWO_BLANKS, "test/1.json": ONE_BLANK}


def write_cloze(root: Path, files: dict[str, object] = FILES) -> Path:
    cloze = root / "cloze"
    for name, content in files.items():
        (cloze / name).parent.mkdir(parents=True, exist_ok=True)
        text = content if isinstance(content, str) else json.dumps(content)
        (cloze / name).write_text(text, encoding="utf-8")
    return cloze


def convert(root: Path, *mode: str) -> Path:
    out = root / f"out-{'-'.join(mode) or 'default'}"
    result = run(sys.executable, SCRIPTS / "preprocess_cloze.py", "--input-dir", write_cloze(root),
                 "--output-dir", out, *mode)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:3] == ["train: 4 blanks", "dev: 2 blanks", "test: 1 blanks"]
    return out


def test_passage_mode_fills_only_this_blank(tmp_path: Path) -> None:
    out = convert(tmp_path, "--mode", "passage")
    assert read_lines(out / "train.ids") == ["train/2.json\t0", "train/2.json\t1",
                                             "train/10.json\t0", "train/extra/1.json\t0"]
    assert read_lines(out / "train.label") == ["0", "2", "3", "3"]
    assert read_lines(out / "train.input0") == ["", "", "", ""]
    assert read_lines(out / "train.input3")[1] == "The cat _ on the mat . It was many happy ."
    assert read_lines(out / "train.input1")[0] == "The cat sat on the mat . It was _ happy ."
    assert read_lines(out / "test.input2") == ["Birds flies in the sky ."]
    assert read_lines(out / "dev.label") == ["0", "2"]


def test_window_mode_keeps_n_words_each_side(tmp_path: Path) -> None:
    out = convert(tmp_path, "--mode", "window", "--window-words", "2")
    assert read_lines(out / "train.input1")[:2] == ["The cat sat on the", "It was very happy ."]
    assert read_lines(out / "train.input4")[2] == "Birds flying in the"
    assert read_lines(out / "train.input0") == ["", "", "", ""]
    assert read_lines(out / "train.label") == ["0", "2", "3", "3"]


def test_window_mode_leaves_other_blanks_in_the_window(tmp_path: Path) -> None:
    out = convert(tmp_path, "--mode", "window", "--window-words", "7")
    assert read_lines(out / "train.input2")[1] == "_ on the mat . It was much happy ."


MALFORMED = {
    "bad-json": ("{", "not valid JSON"),
    "blank-count": ({**ONE_BLANK, "article": "Birds _ in the _ ."},
                    "counts differ (blanks in article 2, options 1, answers 1)"),
    "three-options": ({**ONE_BLANK, "options": [["fly", "flies", "flown"]]},
                      "blank 0 has 3 options, expected 4"),
    "answer-E": ({**ONE_BLANK, "answers": ["E"]}, "blank 0 has answer 'E', expected one of A, B, C, D"),
    "options-not-list": ({**ONE_BLANK, "options": "fly"}, "'options' must be a list"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_exam_is_one_line_error_and_writes_nothing(tmp_path: Path, case: str) -> None:
    content, message = MALFORMED[case]
    cloze = write_cloze(tmp_path, {**FILES, "dev/sub/3.json": content})
    result = run(sys.executable, SCRIPTS / "preprocess_cloze.py", "--input-dir", cloze,
                 "--output-dir", tmp_path / "out")
    assert_error_is_only_line(result, "preprocess_cloze.py", str(cloze / "dev" / "sub" / "3.json"), message)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cloze"]


@pytest.mark.parametrize("flags, message", [
    (["--mode", "window"], "--mode window needs --window-words N"),
    (["--mode", "window", "--window-words", "0"], "--mode window needs --window-words N with N >= 1"),
    (["--window-words", "5"], "--window-words only applies to --mode window"),
])
def test_inconsistent_mode_flags_are_refused(tmp_path: Path, flags: list[str], message: str) -> None:
    result = run(sys.executable, SCRIPTS / "preprocess_cloze.py", "--input-dir", write_cloze(tmp_path),
                 "--output-dir", tmp_path / "out", *flags)
    assert_error_is_only_line(result, "preprocess_cloze.py", message)
    assert not (tmp_path / "out").exists()


def test_missing_split_folder_is_named(tmp_path: Path) -> None:
    cloze = write_cloze(tmp_path, {name: content for name, content in FILES.items()
                                   if not name.startswith("test/")})
    result = run(sys.executable, SCRIPTS / "preprocess_cloze.py", "--input-dir", cloze,
                 "--output-dir", tmp_path / "out")
    assert_error_is_only_line(result, "preprocess_cloze.py", str(cloze / "test"), "not found")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("roberta-bpe") is None, reason="console scripts not installed")
def test_shell_script_builds_the_data_bin(tmp_path: Path, gpt2_bpe_dir: Path) -> None:
    cloze = write_cloze(tmp_path)
    # The BPE folder comes from the environment, so the mode flags follow DATA_BIN directly.
    env = {**script_env(), "BPE_DIR": str(gpt2_bpe_dir)}
    result = subprocess.run(["bash", str(SCRIPTS / "preprocess_cloze.sh"), str(cloze),
                             str(tmp_path / "data-bin"), "--mode", "window", "--window-words", "2"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    data_bin = tmp_path / "data-bin"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cloze", "data-bin"]
    assert sorted(path.name for path in (data_bin / "label").iterdir()) == [
        "test.ids", "test.label", "train.ids", "train.label", "valid.ids", "valid.label"]
    assert read_lines(data_bin / "label" / "valid.label") == ["0", "2"]
    dictionary = Dictionary.load(data_bin / "input0" / "dict.txt")
    contexts = MMapIndexedDataset(data_bin / "input0" / "train")
    assert [item.tolist() for item in contexts] == [[dictionary.eos()]] * 4
    option = MMapIndexedDataset(data_bin / "input1" / "valid")[1]
    assert GPT2BPE.from_dir(gpt2_bpe_dir).decode(dictionary.string(option)) == "It was very happy ."
