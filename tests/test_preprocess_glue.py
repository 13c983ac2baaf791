"""GLUE preprocessing: scripts/preprocess_glue.py (text) and scripts/preprocess_glue.sh (data-bin)."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from roberta.data.dictionary import Dictionary
from roberta.data.gpt2_bpe import GPT2BPE
from roberta.data.indexed_dataset import MMapIndexedDataset
from support.paths import REPO, SCRIPTS
from support.scripts import assert_error_is_only_line, read_lines, script_env

EXTRACT = SCRIPTS / "preprocess_glue.py"
DRIVER = SCRIPTS / "preprocess_glue.sh"
REAL_TASKS = ("CoLA", "SST-2", "MRPC", "RTE", "STS-B")
# (0-based input columns, label column, header line) of the real dev files.
DEV_LAYOUT = {"CoLA": ((3,), 1, False), "SST-2": ((0,), 1, True), "MRPC": ((3, 4), 0, True),
              "RTE": ((1, 2), 3, True), "STS-B": ((7, 8), 9, True)}
needs_console_scripts = pytest.mark.skipif(shutil.which("roberta-bpe") is None,
                                           reason="console scripts not installed (pip install -e .)")


def run(*command: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(part) for part in command], capture_output=True, text=True,
                          env=script_env(), cwd=REPO, timeout=300)


def extract(glue: Path, task: str, out: Path, *options: str) -> subprocess.CompletedProcess:
    return run(sys.executable, EXTRACT, "--glue-dir", glue, "--task", task, "--output-dir", out,
               *options)


def write_tsv(path: Path, rows: list[list[str]], header: list[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ([header] if header else []) + rows
    path.write_text("".join("\t".join(row) + "\n" for row in lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def glue_dir(shared_data: Path) -> Path:
    return shared_data / "glue"


@pytest.fixture(scope="module")
def extracted(glue_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("glue-text")
    outputs = {}
    for task in REAL_TASKS:
        result = extract(glue_dir, task, root / task, "--splits", "dev,test")
        assert result.returncode == 0, result.stderr
        assert f"{task} dev: " in result.stdout and f"{task} test: " in result.stdout  # skipped note
        outputs[task] = root / task
    return outputs


def raw_rows(path: Path, header: bool) -> list[list[str]]:
    lines = path.read_text(encoding="utf-8-sig").split("\n")
    lines = [line for line in lines if line]
    return [line.split("\t") for line in lines[1 if header else 0:]]


@pytest.mark.parametrize("task,rows,labels", [
    ("CoLA", 1043, {"1": 721, "0": 322}),
    ("SST-2", 872, {"1": 444, "0": 428}),
    ("MRPC", 408, {"1": 279, "0": 129}),
    ("RTE", 277, {"entailment": 146, "not_entailment": 131}),
])
def test_real_dev_rows_and_label_counts(extracted: dict[str, Path], task: str, rows: int,
                                        labels: dict[str, int]) -> None:
    out = extracted[task]
    assert Counter(read_lines(out / "dev.label")) == labels
    inputs = sorted(path.name for path in out.glob("dev.raw.input*"))
    assert inputs == (["dev.raw.input0"] if task in ("CoLA", "SST-2") else
                      ["dev.raw.input0", "dev.raw.input1"])
    for name in inputs:
        assert len(read_lines(out / name)) == rows
    assert not list(out.glob("test*")), "no test.tsv in the sample: nothing may be written for it"


@pytest.mark.parametrize("task", REAL_TASKS)
def test_every_extracted_field_is_the_tab_separated_column(glue_dir: Path, extracted: dict[str, Path],
                                                           task: str) -> None:
    columns, label, header = DEV_LAYOUT[task]
    rows = raw_rows(glue_dir / task / "dev.tsv", header)
    for k, column in enumerate(columns):
        assert read_lines(extracted[task] / f"dev.raw.input{k}") == [row[column] for row in rows]
    if task != "STS-B":
        assert read_lines(extracted[task] / "dev.label") == [row[label] for row in rows]
    for path in extracted[task].iterdir():
        assert "\ufeff" not in path.read_text(encoding="utf-8"), path


def test_first_rows_are_exact(extracted: dict[str, Path]) -> None:
    # CoLA has no header: its first sentence must not be dropped as one.
    assert read_lines(extracted["CoLA"] / "dev.raw.input0")[0] == "The sailors rode the breeze clear of the rocks."
    assert read_lines(extracted["CoLA"] / "dev.raw.input0")[-1] == "John talked to Bill about himself."
    assert read_lines(extracted["SST-2"] / "dev.raw.input0")[0] == "it 's a charming and often affecting journey . "
    assert read_lines(extracted["MRPC"] / "dev.raw.input0")[0] == (
        "He said the foodservice pie business doesn 't fit the company 's long-term growth strategy .")
    assert read_lines(extracted["MRPC"] / "dev.raw.input1")[0] == (
        '" The foodservice pie business does not fit our long-term growth strategy .')
    assert read_lines(extracted["RTE"] / "dev.raw.input1")[0] == "Christopher Reeve had an accident."
    assert read_lines(extracted["RTE"] / "dev.label")[0] == "not_entailment"
    assert read_lines(extracted["STS-B"] / "dev.raw.input0")[0] == "A man with a hard hat is dancing."


def test_cola_last_line_without_newline_is_kept(glue_dir: Path, extracted: dict[str, Path]) -> None:
    assert not (glue_dir / "CoLA" / "dev.tsv").read_bytes().endswith(b"\n")
    assert (extracted["CoLA"] / "dev.raw.input0").read_bytes().endswith(b"himself.\n")


def test_mrpc_bom_is_dropped_before_splitting(glue_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("preprocess_glue", EXTRACT)
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the module is executed.
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    assert (glue_dir / "MRPC" / "dev.tsv").read_bytes().startswith(b"\xef\xbb\xbf")
    number, fields = next(module.read_rows(glue_dir / "MRPC" / "dev.tsv"))
    assert (number, fields) == (1, ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"])


def test_stsb_scores_are_divided_by_five(glue_dir: Path, extracted: dict[str, Path]) -> None:
    labels = read_lines(extracted["STS-B"] / "dev.label")
    scores = [float(row[9]) for row in raw_rows(glue_dir / "STS-B" / "dev.tsv", True)]
    assert len(labels) == len(scores) == 1500
    assert [float(label) for label in labels] == pytest.approx([score / 5.0 for score in scores])
    assert all(0.0 <= float(label) <= 1.0 for label in labels)
    # awk's print format, as in fairseq's label files: 5.000 -> "1", 4.750 -> "0.95".
    assert labels[:2] == ["1", "0.95"]


RTE_HEADER = ["index", "sentence1", "sentence2", "label"]
STSB_HEADER = ["index", "genre", "filename", "year", "old_index", "source1", "source2",
               "sentence1", "sentence2", "score"]


def stsb_row(index: int, score: str) -> list[str]:
    return [str(index), "main-news", "file", "2012", "0001", "none", "none", f"A sentence {index}.",
            f"Another sentence {index}.", score]


MALFORMED = {
    "missing-column": ("RTE", [["0", "A dog runs.", "entailment"]], RTE_HEADER, 2,
                       "3 tab-separated fields, expected 4"),
    "unknown-label": ("RTE", [["0", "A.", "B.", "entailment"], ["1", "A.", "B.", "maybe"]],
                      RTE_HEADER, 3, "label 'maybe' (column 3) is not one of entailment, not_entailment"),
    "empty-sentence": ("RTE", [["0", "A.", " ", "entailment"]], RTE_HEADER, 2, "input1 (column 2) is empty"),
    "empty-line": ("RTE", [["0", "A.", "B.", "entailment"], [""], ["1", "A.", "B.", "entailment"]],
                   RTE_HEADER, 3, "an empty line"),
    "bad-score": ("STS-B", [stsb_row(0, "2.5"), stsb_row(1, "abc")], STSB_HEADER, 3, "score 'abc'"),
    "score-above-5": ("STS-B", [stsb_row(0, "5.5")], STSB_HEADER, 2, "score '5.5'"),
    "score-nan": ("STS-B", [stsb_row(0, "nan")], STSB_HEADER, 2, "score 'nan'"),
    "lost-header": ("SST-2", [["good .", "1"], ["bad .", "0"]], None, 1, "found a data row"),
    "cola-with-header": ("CoLA", [["source", "label", "mark", "sentence"]], None, 1,
                         "label 'label' (column 1) is not one of 0, 1"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_row_is_one_line_error_naming_file_and_line(tmp_path: Path, case: str) -> None:
    task, rows, header, line, message = MALFORMED[case]
    bad = write_tsv(tmp_path / "glue" / task / "dev.tsv", rows, header)
    result = extract(tmp_path / "glue", task, tmp_path / "out", "--splits", "dev")
    assert_error_is_only_line(result, "preprocess_glue.py", f"{bad}:{line}: ", message)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["glue"], "output or temp left behind"


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "glue" / "RTE" / "dev.tsv"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tentailment\n1\t\xff.\tB.\tentailment\n")
    result = extract(tmp_path / "glue", "RTE", tmp_path / "out", "--splits", "dev")
    assert_error_is_only_line(result, "preprocess_glue.py", f"{path}:3: not UTF-8")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["glue"]


def test_options_drop_malformed_and_allow_empty(tmp_path: Path) -> None:
    rows = [["0", "A.", "B.", "entailment"], ["1", "broken"], ["2", "C.", "", "not_entailment"]]
    write_tsv(tmp_path / "glue" / "RTE" / "dev.tsv", rows, RTE_HEADER)
    result = extract(tmp_path / "glue", "RTE", tmp_path / "out", "--splits", "dev",
                     "--drop-malformed", "--allow-empty")
    assert result.returncode == 0, result.stderr
    assert "RTE dev: 2 rows (dropped 1 with the wrong number of fields)" in result.stdout
    assert read_lines(tmp_path / "out" / "dev.raw.input1") == ["B.", ""]
    assert read_lines(tmp_path / "out" / "dev.label") == ["entailment", "not_entailment"]


def test_line_endings_cannot_misalign_the_files(tmp_path: Path) -> None:
    path = tmp_path / "glue" / "RTE" / "dev.tsv"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"index\tsentence1\tsentence2\tlabel\r\n0\tA\rB.\tC.\tentailment\r\n"
                     b"1\tD.\tE.\tnot_entailment")
    result = extract(tmp_path / "glue", "RTE", tmp_path / "out", "--splits", "dev")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "dev.raw.input0").read_bytes() == b"A B.\nD.\n"
    assert (tmp_path / "out" / "dev.label").read_bytes() == b"entailment\nnot_entailment\n"


def test_missing_train_is_an_error_unless_splits_leave_it_out(tmp_path: Path) -> None:
    dev = write_tsv(tmp_path / "glue" / "RTE" / "dev.tsv", [["0", "A.", "B.", "entailment"]], RTE_HEADER)
    result = extract(tmp_path / "glue", "RTE", tmp_path / "out")
    assert_error_is_only_line(result, "preprocess_glue.py", str(dev.parent / "train.tsv"), "--splits")
    assert not (tmp_path / "out").exists()
    result = extract(tmp_path / "glue", "RTE", tmp_path / "out", "--splits", "dev")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["RTE dev: 1 rows", f"wrote {tmp_path / 'out'}"]


def test_mnli_mismatched_needs_matched(tmp_path: Path) -> None:
    write_tsv(tmp_path / "glue" / "MNLI" / "dev_mismatched.tsv", [mnli_row(0, "dev", ["neutral"] * 6)],
              header_of(16))
    result = extract(tmp_path / "glue", "MNLI", tmp_path / "out", "--splits", "dev")
    assert_error_is_only_line(result, "preprocess_glue.py", "dev_matched.tsv is missing")


def test_existing_output_dir_is_refused_and_kept(tmp_path: Path) -> None:
    write_tsv(tmp_path / "glue" / "RTE" / "dev.tsv", [["0", "A.", "B.", "entailment"]], RTE_HEADER)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("earlier results", encoding="utf-8")
    result = extract(tmp_path / "glue", "RTE", tmp_path / "out", "--splits", "dev")
    assert_error_is_only_line(result, "preprocess_glue.py", "already exists")
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["keep.txt"]


def test_help_documents_tasks_and_layouts() -> None:
    result = run(sys.executable, EXTRACT, "--help")
    assert result.returncode == 0
    for task in ("CoLA", "SST-2", "MRPC", "QQP", "STS-B", "MNLI", "QNLI", "RTE", "WNLI"):
        assert f"  {task} (" in result.stdout
    assert "dev_matched/dev_mismatched: 16 cols, inputs 8,9, label 15" in result.stdout
    assert "train: 4 cols, no header, inputs 3, label 1" in result.stdout


# ---- the driver: scripts/preprocess_glue.sh ----

def header_of(columns: int) -> list[str]:
    return [f"column{k}" for k in range(columns)]


def mnli_row(index: int, text: str, labels: list[str]) -> list[str]:
    """An MNLI row: 8 id/genre/parse columns, the two sentences, then the label columns."""
    return [str(index), "1", f"{index}n", "fiction", "( x )", "( y )", "(S x)", "(S y)",
            f"The {text} premise number {index}.", f"A {text} hypothesis {index}.", *labels]


# Train gold labels by frequency: neutral 3, entailment 2, contradiction 1.
MNLI_TRAIN = ["neutral", "entailment", "neutral", "contradiction", "entailment", "neutral"]
MNLI_DEV = {"dev_matched": ["entailment", "contradiction", "neutral", "entailment"],
            "dev_mismatched": ["contradiction", "neutral", "entailment"]}


def write_mnli(root: Path) -> None:
    write_tsv(root / "MNLI" / "train.tsv",
              [mnli_row(i, "train", [label, label]) for i, label in enumerate(MNLI_TRAIN)], header_of(12))
    for split, labels in MNLI_DEV.items():
        write_tsv(root / "MNLI" / f"{split}.tsv",
                  [mnli_row(i, split, [label] * 6) for i, label in enumerate(labels)], header_of(16))
    write_tsv(root / "MNLI" / "test_matched.tsv", [mnli_row(i, "test", []) for i in range(2)], header_of(10))


@pytest.fixture(scope="module")
def all_tasks_bin(glue_dir: Path, gpt2_bpe_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ALL over generated MNLI files and STS-B (a tiny generated train, the real dev)."""
    if shutil.which("roberta-bpe") is None:
        pytest.skip("console scripts not installed (pip install -e .)")
    root = tmp_path_factory.mktemp("glue-all")
    write_mnli(root / "glue")
    write_tsv(root / "glue" / "STS-B" / "train.tsv", [stsb_row(0, "3.8"), stsb_row(1, "0.000")], STSB_HEADER)
    shutil.copy(glue_dir / "STS-B" / "dev.tsv", root / "glue" / "STS-B" / "dev.tsv")
    result = run("bash", DRIVER, root / "glue", "ALL", root / "data", gpt2_bpe_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MNLI test_mismatched: " in result.stdout and "CoLA: no " in result.stdout
    assert sorted(path.name for path in (root / "data").iterdir()) == ["MNLI-bin", "STS-B-bin"], \
        "temporary folders left"
    return root / "data"


def names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def split_files(*splits: str) -> list[str]:
    return sorted(["dict.txt", "preprocess.log"] + [f"{s}.{ext}" for s in splits for ext in ("bin", "idx")])


def decoded_labels(folder: Path, split: str) -> list[str]:
    dictionary = Dictionary.load(folder / "dict.txt")
    dataset = MMapIndexedDataset(folder / split)
    assert all(len(item) == 2 and int(item[1]) == dictionary.eos() for item in dataset)
    return [dictionary[int(item[0])] for item in dataset]


@pytest.mark.slow
@needs_console_scripts
def test_mnli_bin_layout_and_labels(all_tasks_bin: Path, gpt2_bpe_dir: Path) -> None:
    mnli = all_tasks_bin / "MNLI-bin"
    assert names(mnli) == ["input0", "input1", "label"]
    for k in range(2):
        assert names(mnli / f"input{k}") == split_files("train", "valid", "valid1", "test")
    assert names(mnli / "label") == split_files("train", "valid", "valid1")
    # The label dictionary is built from the train labels, most frequent first.
    assert read_lines(mnli / "label" / "dict.txt") == [
        "neutral 3", "entailment 2", "contradiction 1", "madeupword0000 0"]
    assert decoded_labels(mnli / "label", "train") == MNLI_TRAIN
    assert decoded_labels(mnli / "label", "valid") == MNLI_DEV["dev_matched"]
    assert decoded_labels(mnli / "label", "valid1") == MNLI_DEV["dev_mismatched"]
    dictionary = Dictionary.load(mnli / "input0" / "dict.txt")
    bpe = GPT2BPE.from_dir(gpt2_bpe_dir)
    expected = {"train": ("train", 6), "valid": ("dev_matched", 4), "valid1": ("dev_mismatched", 3),
                "test": ("test", 2)}
    for split, (text, rows) in expected.items():
        for k, template in enumerate(("The {} premise number {}.", "A {} hypothesis {}.")):
            dataset = MMapIndexedDataset(mnli / f"input{k}" / split)
            assert [bpe.decode(dictionary.string(item)) for item in dataset] == [
                template.format(text, i) for i in range(rows)]


@pytest.mark.slow
@needs_console_scripts
def test_stsb_bin_keeps_scaled_scores_as_text(all_tasks_bin: Path, glue_dir: Path) -> None:
    stsb = all_tasks_bin / "STS-B-bin"
    assert names(stsb) == ["input0", "input1", "label"]
    assert names(stsb / "label") == ["train.label", "valid.label"]
    assert read_lines(stsb / "label" / "train.label") == ["0.76", "0"]
    valid = read_lines(stsb / "label" / "valid.label")
    assert len(valid) == 1500 and valid[:2] == ["1", "0.95"]
    for k in range(2):
        assert len(MMapIndexedDataset(stsb / f"input{k}" / "valid")) == 1500
        assert len(MMapIndexedDataset(stsb / f"input{k}" / "train")) == 2


@needs_console_scripts
def test_real_sst2_dev_only_end_to_end(glue_dir: Path, gpt2_bpe_dir: Path, tmp_path: Path) -> None:
    result = run("bash", DRIVER, glue_dir, "SST-2", tmp_path / "data", gpt2_bpe_dir, "--splits", "dev")
    assert result.returncode == 0, result.stderr[-3000:]
    sst2 = tmp_path / "data" / "SST-2-bin"
    assert names(tmp_path / "data") == ["SST-2-bin"]
    assert names(sst2) == ["input0", "label"], "a single-sentence task has no input1"
    rows = raw_rows(glue_dir / "SST-2" / "dev.tsv", True)
    dataset = MMapIndexedDataset(sst2 / "input0" / "valid")
    assert len(dataset) == len(rows) == 872
    dictionary = Dictionary.load(sst2 / "input0" / "dict.txt")
    bpe = GPT2BPE.from_dir(gpt2_bpe_dir)
    for number in (0, 871):
        assert bpe.decode(dictionary.string(dataset[number])) == rows[number][0].strip()
    # No train split: the label dictionary comes from the dev labels.
    assert read_lines(sst2 / "label" / "dict.txt")[:2] == ["1 444", "0 428"]
    assert decoded_labels(sst2 / "label", "valid") == [row[1] for row in rows]


@needs_console_scripts
def test_driver_failure_is_one_line_and_leaves_nothing(tmp_path: Path, gpt2_bpe_dir: Path) -> None:
    bad = write_tsv(tmp_path / "glue" / "RTE" / "dev.tsv", [["0", "A.", "B.", "maybe"]], RTE_HEADER)
    result = run("bash", DRIVER, tmp_path / "glue", "RTE", tmp_path / "data", gpt2_bpe_dir, "--splits", "dev")
    assert_error_is_only_line(result, "preprocess_glue.py", f"{bad}:2: label 'maybe'")
    assert names(tmp_path / "data") == []


def test_driver_refuses_existing_output_and_unknown_task(tmp_path: Path, gpt2_bpe_dir: Path) -> None:
    write_tsv(tmp_path / "glue" / "RTE" / "dev.tsv", [["0", "A.", "B.", "entailment"]], RTE_HEADER)
    (tmp_path / "data" / "RTE-bin").mkdir(parents=True)
    (tmp_path / "data" / "RTE-bin" / "keep.txt").write_text("earlier data", encoding="utf-8")
    result = run("bash", DRIVER, tmp_path / "glue", "ALL", tmp_path / "data", gpt2_bpe_dir)
    assert_error_is_only_line(result, "preprocess_glue.sh", f"{tmp_path / 'data' / 'RTE-bin'} already exists")
    assert names(tmp_path / "data") == ["RTE-bin"] and names(tmp_path / "data" / "RTE-bin") == ["keep.txt"]
    result = run("bash", DRIVER, tmp_path / "glue", "rte", tmp_path / "data", gpt2_bpe_dir)
    assert_error_is_only_line(result, "preprocess_glue.sh", "unknown task 'rte'", "WNLI")


def test_driver_checks_the_bpe_folder(tmp_path: Path) -> None:
    (tmp_path / "bpe").mkdir()
    (tmp_path / "bpe" / "encoder.json").write_text("{}", encoding="utf-8")
    result = run("bash", DRIVER, tmp_path, "RTE", tmp_path / "data", tmp_path / "bpe")
    assert_error_is_only_line(result, "preprocess_glue.sh", f"{tmp_path / 'bpe' / 'vocab.bpe'} not found")
    assert not (tmp_path / "data").exists()
