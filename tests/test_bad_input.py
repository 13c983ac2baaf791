"""Corrupt or foreign files and flags that make no sense: one line naming the culprit, a non-zero
exit, no traceback, nothing written; a flag is refused before any data is read.

Each case runs a command's entry point in-process, through the same error handling as the
installed script (any other exception would fail the test with its traceback); the last test
runs real processes too.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from roberta.cli import train
from support.cli import Command, assert_one_line_error, run_cli
from support.train_args import tiny_args

pytestmark = pytest.mark.reliability

@pytest.fixture(scope="module")
def trained_checkpoint(demo_data_bin: Path, tmp_path_factory) -> Path:
    save_dir = tmp_path_factory.mktemp("ckpt")
    train.main(tiny_args(demo_data_bin, save_dir))
    return save_dir / "checkpoint_last.pt"


@pytest.fixture
def data_copy(demo_data_bin: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data-bin"
    shutil.copytree(demo_data_bin, data)
    return data


@pytest.fixture
def dictionary_only(demo_data_bin: Path, tmp_path: Path) -> Path:
    """A data folder with the dictionary and no split at all: reading any data would fail, so an
    error about a flag proves the flag was checked first."""
    data = tmp_path / "dict-only"
    data.mkdir()
    shutil.copy(demo_data_bin / "dict.txt", data)
    return data


def nothing_saved(save_dir: Path) -> bool:
    return not save_dir.exists() or not any(save_dir.iterdir())


# ------------------------------------------------------------------------ corrupt or foreign files


def truncate_half(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


@pytest.mark.parametrize("damage, culprit, fragments", [
    (truncate_half, "train.bin", ["train.bin is truncated", "re-binarize"]),
    (lambda path: path.write_bytes(b"NOTMAGIC!" + path.read_bytes()[9:]), "train.idx", ["train.idx"]),
    (lambda path: path.write_bytes(path.read_bytes()[:20]), "train.idx", ["train.idx"]),
    (lambda path: path.write_text(path.read_text() + "a line without its count\n"), "dict.txt", ["dict.txt, line 109"]),
    (lambda path: path.write_text("symbol notanumber\n"), "dict.txt", ["dict.txt, line 1"]),
], ids=["truncated-bin", "idx-wrong-magic", "idx-truncated", "dict-bad-line", "dict-bad-count"])
def test_a_damaged_data_file_is_one_line_naming_it(command: Command, data_copy: Path, tmp_path: Path, damage,
                                                   culprit: str, fragments: list[str]) -> None:
    damage(data_copy / culprit)
    save_dir = tmp_path / "ckpt"
    result = command("train", *tiny_args(data_copy, save_dir))
    assert_one_line_error(result, "roberta-train", *fragments)
    assert nothing_saved(save_dir)


def foreign_file(kind: str, trained_checkpoint: Path, demo_data_bin: Path, tmp_path: Path) -> Path:
    path = tmp_path / f"{kind}.pt"
    if kind == "truncated":
        path.write_bytes(trained_checkpoint.read_bytes()[:3000])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a checkpoint\n")
    elif kind == "dataset":
        shutil.copy(demo_data_bin / "train.bin", path)
    elif kind == "tensors":
        torch.save({"weights": torch.zeros(3)}, path)
    return path


@pytest.mark.parametrize("kind, fragments", [
    ("truncated", ["truncated or corrupt"]),
    ("empty", ["empty file"]),
    ("text", ["not a PyTorch checkpoint"]),
    ("dataset", ["not a PyTorch checkpoint"]),
    ("tensors", ["not a model checkpoint (no 'model' entry)"]),
])
def test_a_file_that_is_not_a_checkpoint_is_refused_naming_it(command: Command, demo_data_bin: Path,
                                                              trained_checkpoint: Path, tmp_path: Path, kind: str,
                                                              fragments: list[str]) -> None:
    path = foreign_file(kind, trained_checkpoint, demo_data_bin, tmp_path)
    save_dir = tmp_path / "ckpt"
    result = command("train", *tiny_args(demo_data_bin, save_dir, "--restore-file", path))
    assert_one_line_error(result, "roberta-train", str(path), *fragments)
    assert nothing_saved(save_dir)
    assert_one_line_error(command("validate", demo_data_bin, "--path", path, "--cpu"), "roberta-validate", str(path))


def test_a_checkpoint_of_another_architecture(command: Command, demo_data_bin: Path, trained_checkpoint: Path,
                                              tmp_path: Path) -> None:
    result = command("train", *tiny_args(demo_data_bin, tmp_path, "--restore-file", trained_checkpoint,
                                         "--encoder-layers", "3", "--reset-optimizer"))
    assert_one_line_error(result, "roberta-train", str(trained_checkpoint), "2 layers, this model 3")
    result = command("train", *tiny_args(demo_data_bin, tmp_path, "--restore-file", trained_checkpoint,
                                         "--encoder-embed-dim", "32", "--reset-optimizer"))
    assert_one_line_error(result, "roberta-train", str(trained_checkpoint), "--arch")
    assert not (tmp_path / "checkpoint_last.pt").exists()


def test_a_checkpoint_of_another_vocabulary(command: Command, data_copy: Path, trained_checkpoint: Path,
                                            tmp_path: Path) -> None:
    with open(data_copy / "dict.txt", "a", encoding="utf-8") as handle:
        handle.write("".join(f"extra{i} 1\n" for i in range(16)))
    for module, argv in (("validate", [data_copy, "--path", trained_checkpoint, "--cpu"]),
                         ("train", tiny_args(data_copy, tmp_path, "--restore-file", trained_checkpoint))):
        result = command(module, *argv)
        assert_one_line_error(result, f"roberta-{module}", str(trained_checkpoint), "vocabulary", "dict.txt")


# ------------------------------------------------------------------------ flags, before any data


@pytest.mark.parametrize("flags, fragments", [
    (["--update-freq", "0"], ["--update-freq", ">= 1"]),
    (["--lr", "-1"], ["--lr '-1'", "positive"]),
    (["--fp16", "--bf16"], ["--fp16 and --bf16 cannot be combined"]),
    (["--max-tokens", "0"], ["--max-tokens must be positive"]),
    (["--save-interval-updates", "-5"], ["--save-interval-updates -5"]),
    (["--distributed-world-size", "0"], ["--distributed-world-size must be >= 1"]),
])
def test_a_meaningless_flag_fails_before_any_data_is_read(command: Command, dictionary_only: Path, tmp_path: Path,
                                                          flags: list[str], fragments: list[str]) -> None:
    result = command("train", *tiny_args(dictionary_only, tmp_path / "ckpt", *flags))
    assert_one_line_error(result, "roberta-train", *fragments)
    assert result.returncode == 2 or "loaded" not in result.stderr


def test_max_positions_beyond_the_checkpoint_names_the_flag(command: Command, dictionary_only: Path,
                                                            trained_checkpoint: Path, tmp_path: Path) -> None:
    result = command("train", *tiny_args(dictionary_only, tmp_path, "--restore-file", trained_checkpoint,
                                         "--max-positions", "1024"))
    # masked_lm sized the checkpoint's position table to its --tokens-per-sample, as fairseq does.
    assert_one_line_error(result, "roberta-train", "--max-positions 1024 is larger than the 128 positions",
                          "pass --max-positions 128")
    result = command("validate", dictionary_only, "--path", trained_checkpoint, "--max-positions", "1024", "--cpu")
    assert_one_line_error(result, "roberta-validate", "--max-positions 1024")


def classification_folder(root: Path, dictionary: Path, labels: list[str]) -> Path:
    """A GLUE-style folder (input0/, input1/, label/) holding dictionaries only."""
    for field in ("input0", "input1"):
        (root / field).mkdir(parents=True)
        shutil.copy(dictionary, root / field / "dict.txt")
    (root / "label").mkdir()
    (root / "label" / "dict.txt").write_text("".join(f"{label} 10\n" for label in labels))
    return root


def multiple_choice_folder(root: Path, dictionary: Path, options: int) -> Path:
    for index in range(options + 1):
        (root / f"input{index}").mkdir(parents=True)
        shutil.copy(dictionary, root / f"input{index}" / "dict.txt")
    return root


@pytest.mark.parametrize("task, folder, num_classes, fragments", [
    ("sentence_prediction", lambda root, d: classification_folder(root, d, ["0", "1"]), "3",
     ["--num-classes 3 but", "lists 2 labels", "set --num-classes 2"]),
    ("sentence_ranking", lambda root, d: multiple_choice_folder(root, d, 4), "3",
     ["--num-classes 3 but", "also has input4"]),
    ("sentence_ranking", lambda root, d: multiple_choice_folder(root, d, 4), "5",
     ["input5 not found", "--num-classes 5"]),
])
def test_num_classes_that_do_not_match_the_data(command: Command, demo_data_bin: Path, tmp_path: Path, task: str,
                                                folder, num_classes: str, fragments: list[str]) -> None:
    data = folder(tmp_path / "data", demo_data_bin / "dict.txt")
    result = command("train", data, "--task", task, "--arch", "roberta_tiny", "--num-classes", num_classes,
                     "--init-token", "0", "--separator-token", "2", "--batch-size", "8", "--cpu",
                     "--save-dir", tmp_path / "ckpt")
    assert_one_line_error(result, "roberta-train", *fragments)
    assert nothing_saved(tmp_path / "ckpt")


def test_the_installed_commands_exit_with_one_line(data_copy: Path, tmp_path: Path) -> None:
    truncate_half(data_copy / "train.bin")
    assert_one_line_error(run_cli("train", *tiny_args(data_copy, tmp_path)), "roberta-train", "train.bin is truncated")
    text = tmp_path / "notes.pt"
    text.write_text("this is not a checkpoint\n")
    assert_one_line_error(run_cli("validate", data_copy, "--path", text, "--cpu"), "roberta-validate",
                          "not a PyTorch checkpoint")
