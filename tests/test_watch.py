"""`roberta-validate --watch SAVE_DIR`: every checkpoint a live training run writes is scored once,
with plain roberta-validate's numbers, and the watcher ends by itself when the run does."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from roberta.checkpoint.watch import FINISHED_MARKER, CheckpointPoller, checkpoint_files, finished_update
from roberta.cli import validate
from roberta.errors import UserError
from support.cli import assert_one_line_error, run_cli
from support.logs import json_events
from support.paths import REPO
from support.train_args import SMALLEST_SIZES, tiny_args

WATCH = ["--watch-interval", "0.2", "--log-format", "json"]


def start(module: str, *argv: str | Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", f"roberta.cli.{module}", *map(str, argv)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def rows(save_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (save_dir / "watch" / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def watched_run(demo_data_bin: Path, tmp_path_factory) -> tuple[Path, str]:
    """A 12-update run saving every 4 updates, watched from another process started first."""
    save_dir = tmp_path_factory.mktemp("watched") / "run"
    watcher = start("validate", demo_data_bin, "--watch", save_dir, *WATCH)
    training = start("train", *tiny_args(demo_data_bin, save_dir, *SMALLEST_SIZES, "--max-update", "12",
                                         "--save-interval-updates", "4", "--max-tokens", "512", "--seed", "2"))
    _, train_err = training.communicate(timeout=300)
    assert training.returncode == 0, train_err
    _, watch_err = watcher.communicate(timeout=120)  # it must stop by itself
    assert watcher.returncode == 0, watch_err
    return save_dir, watch_err


def test_every_checkpoint_gets_exactly_one_row(watched_run: tuple[Path, str]) -> None:
    save_dir, log = watched_run
    results = rows(save_dir)
    assert "the run finished at update 12" in log
    files = checkpoint_files(save_dir)
    assert {"checkpoint_1_4.pt", "checkpoint_last.pt", "checkpoint_best.pt"} <= files.keys()
    versions = [(row["checkpoint"], row["size"], row["mtime_ns"]) for row in results]
    assert len(versions) == len(set(versions))
    for name, file in files.items():
        assert file.fingerprint in versions, name  # the final version of every name is scored
    interval_files = sorted(name for name in files if name.startswith("checkpoint_1_"))
    assert sorted(row["checkpoint"] for row in results if row["checkpoint"].startswith("checkpoint_1_")) == interval_files
    last = [row for row in results if row["checkpoint"] == "checkpoint_last.pt"][-1]
    assert last["update"] == 12 and last["subset"] == "valid" and last["train_seconds"] > 0
    updates = [row["update"] for row in results]
    assert updates == sorted(updates)  # in the order they were written
    header = (save_dir / "watch" / "results.tsv").read_text().splitlines()[0].split("\t")
    assert header[:5] == ["checkpoint", "subset", "epoch", "update", "train_seconds"] and "loss" in header


def test_rows_match_plain_roberta_validate(watched_run: tuple[Path, str], demo_data_bin: Path, capfd) -> None:
    save_dir, _ = watched_run
    for row in rows(save_dir):
        if not row["checkpoint"].startswith("checkpoint_1_"):
            continue
        capfd.readouterr()
        validate.main([str(demo_data_bin), "--path", str(save_dir / row["checkpoint"]), "--log-format", "json"])
        plain = json_events(capfd.readouterr().err, "valid")[-1]
        assert float(plain["valid_loss"]) == pytest.approx(row["loss"], abs=1e-3), row["checkpoint"]
        assert int(plain["valid_num_updates"]) == row["update"]


def test_a_rerun_skips_what_is_scored(watched_run: tuple[Path, str], demo_data_bin: Path) -> None:
    save_dir, _ = watched_run
    before = (save_dir / "watch" / "results.jsonl").read_text()
    result = run_cli("validate", demo_data_bin, "--watch", save_dir, *WATCH)
    assert result.returncode == 0, result.stderr
    assert (save_dir / "watch" / "results.jsonl").read_text() == before
    assert "begin validation" not in result.stderr


def test_watch_until_update_stops_there(watched_run: tuple[Path, str], demo_data_bin: Path,
                                        tmp_path: Path) -> None:
    save_dir, _ = watched_run
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("checkpoint_1_4.pt", "checkpoint_1_8.pt", "checkpoint_1_12.pt"):
        os.link(save_dir / name, copy / name)
    result = run_cli("validate", demo_data_bin, "--watch", copy, "--watch-until-update", "8", *WATCH)
    assert result.returncode == 0, result.stderr
    assert [row["update"] for row in rows(copy)] == [4, 8]
    assert "reached --watch-until-update 8" in result.stderr


def test_sigterm_ends_a_watch_cleanly_within_seconds(demo_data_bin: Path, tmp_path: Path) -> None:
    watcher = start("validate", demo_data_bin, "--watch", tmp_path / "not-yet", *WATCH)
    assert watcher.stderr is not None
    first = watcher.stderr.readline()  # in the polling loop from here on
    assert "watching" in first, first
    time.sleep(0.5)
    started = time.monotonic()
    watcher.send_signal(signal.SIGTERM)
    _, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0 and time.monotonic() - started < 5, err
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    assert not (tmp_path / "not-yet").exists()


def test_a_removed_checkpoint_is_skipped_with_one_line(demo_data_bin: Path, tmp_path: Path, caplog) -> None:
    (tmp_path / "checkpoint_1_4.pt").write_bytes(b"x")
    file = checkpoint_files(tmp_path)["checkpoint_1_4.pt"]
    (tmp_path / "checkpoint_1_4.pt").unlink()
    with validate.StopSignals() as stop_signals:
        assert validate.score([str(demo_data_bin), "--watch", str(tmp_path)], file, stop_signals) == []
    assert "checkpoint_1_4.pt: it was removed before it could be validated" in caplog.text


def test_the_poller_hands_out_complete_files_once_in_write_order(tmp_path: Path) -> None:
    poller = CheckpointPoller(tmp_path, set())
    (tmp_path / "checkpoint_1_4.pt").write_bytes(b"a")
    (tmp_path / "checkpoint_last.pt.tmp.123").write_bytes(b"partial")
    assert poller.poll() == []  # seen once: not yet known to be complete
    (tmp_path / "checkpoint_1_4.pt").write_bytes(b"ab")  # still being written in place (fairseq)
    assert poller.poll() == []
    os.link(tmp_path / "checkpoint_1_4.pt", tmp_path / "checkpoint_last.pt")
    assert poller.poll() == [checkpoint_files(tmp_path)["checkpoint_1_4.pt"]]
    ready = poller.poll()
    assert [file.path.name for file in ready] == ["checkpoint_1_4.pt", "checkpoint_last.pt"]
    for file in ready:
        poller.mark_handled(file)
    assert poller.poll() == [] and poller.all_handled()


def test_training_leaves_the_finished_marker_and_a_resume_clears_it(watched_run: tuple[Path, str]) -> None:
    save_dir, _ = watched_run
    assert finished_update(save_dir) == 12
    (save_dir / FINISHED_MARKER).write_text("{")
    with pytest.raises(UserError, match="not a finished-run marker"):
        finished_update(save_dir)
    (save_dir / FINISHED_MARKER).write_text(json.dumps({"num_updates": 12, "epoch": 1}))


@pytest.mark.parametrize("argv, fragment", [
    (["--watch", "DIR", "--path", "x.pt"], "give --path (one checkpoint) or --watch"),
    (["--watch-interval", "1"], "--watch-interval needs --watch SAVE_DIR"),
    (["--watch", "DIR", "--watch-interval", "0"], "--watch-interval"),
    ([], "--path is required"),
])
def test_flag_mistakes_are_one_line(argv: list[str], fragment: str, tmp_path: Path) -> None:
    argv = [str(tmp_path) if arg == "DIR" else arg for arg in argv]
    assert_one_line_error(run_cli("validate", tmp_path, *argv), "roberta-validate", fragment)
