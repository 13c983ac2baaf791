"""Bad input: one clear line naming the problem, a non-zero exit, no traceback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.cli import assert_one_line_error, run_cli
from support.paths import REPO
from support.train_args import tiny_args


def test_missing_data_directory(tmp_path: Path) -> None:
    result = run_cli("train", *tiny_args(tmp_path / "nowhere", tmp_path / "ckpt"))
    assert_one_line_error(result, "roberta-train", "nowhere", "does not exist")


def test_unknown_architecture(demo_data_bin: Path, tmp_path: Path) -> None:
    result = run_cli("train", *tiny_args(demo_data_bin, tmp_path, "--arch", "roberta_huge"))
    assert_one_line_error(result, "roberta-train", "--arch 'roberta_huge'", "roberta_base")


def test_unknown_flag_is_rejected(demo_data_bin: Path, tmp_path: Path) -> None:
    result = run_cli("train", *tiny_args(demo_data_bin, tmp_path, "--frobnicate", "3"))
    assert_one_line_error(result, "roberta-train", "--frobnicate")


def test_more_processes_than_gpus_is_one_line(demo_data_bin: Path, tmp_path: Path) -> None:
    argv = [arg for arg in tiny_args(demo_data_bin, tmp_path, "--distributed-world-size", "2") if arg != "--cpu"]
    result = subprocess.run([sys.executable, "-m", "roberta.cli.train", *argv], cwd=REPO, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert_one_line_error(result, "roberta-train", "--distributed-world-size 2 needs 2 GPUs but 0 are visible",
                          "--cpu")


def test_missing_restore_file_is_an_error_not_a_fresh_start(demo_data_bin: Path, tmp_path: Path) -> None:
    result = run_cli("train", *tiny_args(demo_data_bin, tmp_path, "--restore-file", tmp_path / "pretrained.pt"))
    assert_one_line_error(result, "roberta-train", "pretrained.pt")
    assert not (tmp_path / "checkpoint_last.pt").exists()


@pytest.mark.parametrize("argv, present, absent", [
    (["--help"], ["--mask-prob", "--arch", "--fp16", "--lr-decay", "--ddp-backend"], ["--init-token"]),
    (["--task", "sentence_ranking", "--criterion", "sentence_ranking", "--help"],
     ["--init-token", "--max-option-length", "--truncate-sequence"], ["--mask-prob"]),
    (["--task", "squad2", "--criterion", "squad2", "--help"], ["--n-best-size", "--null-score-diff-threshold"], []),
])
def test_help_lists_the_chosen_components_flags(argv: list[str], present: list[str], absent: list[str],
                                                capsys: pytest.CaptureFixture) -> None:
    from roberta.cli import options

    with pytest.raises(SystemExit) as exit_info:
        options.parse_args(argv, train=True)
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert all(flag in text for flag in present) and not any(flag in text for flag in absent)


def test_validate_help_without_a_checkpoint(capsys: pytest.CaptureFixture) -> None:
    from roberta.cli import validate

    with pytest.raises(SystemExit) as exit_info:
        validate.main(["--help"])
    assert exit_info.value.code == 0 and "--save-predictions" in capsys.readouterr().out


@pytest.mark.parametrize("task_flags, message", [
    ([], "the MaskedLMCriterion criterion does not produce per-example predictions"),
    (["--task", "sentence_ranking", "--num-classes", "4", "--criterion", "masked_lm"],
     "the MaskedLMCriterion criterion does not produce per-example predictions"),
    (["--criterion", "sentence_ranking"], r"this task \(MaskedLMTask\) has no prediction format"),
])
def test_save_predictions_is_refused_while_parsing(task_flags: list[str], message: str, tmp_path: Path) -> None:
    """A task or criterion that cannot write predictions is refused before anything is built."""
    from roberta.cli import options
    from roberta.errors import UserError

    with pytest.raises(UserError, match=f"--save-predictions: {message}"):
        options.parse_args(["data", "--path", "x.pt", "--batch-size", "1", *task_flags,
                            "--save-predictions", str(tmp_path / "p.tsv")], train=False)


def test_every_builtin_task_says_whether_it_writes_predictions() -> None:
    import criterions  # noqa: F401  registers the criterions
    import tasks  # noqa: F401  registers the tasks
    from roberta.registry import CRITERIONS, TASKS

    writers = {name for name in TASKS.names() if TASKS.get(name).writes_predictions}
    assert writers == {"sentence_prediction", "sentence_ranking", "squad2"}
    assert all(CRITERIONS.get(name).writes_records for name in writers)
