"""Meters, stat formatting, and the exact shapes of the simple/json/tqdm progress lines."""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import types

import pytest
import torch

from roberta import logging as roberta_logging
from roberta.errors import UserError
from roberta.logging import (EVERY_RANK, ProgressLogger, add_logging_args, format_stat, resolve_log_format,
                             scalar_writer, setup_logging)
from roberta.meters import AverageMeter, LastValueMeter, MeterGroup, StopwatchMeter, SumMeter, TimeMeter

STATS = {"loss": 3.14159, "ppl": 8.8216, "wps": 12345.678, "ups": 1.2345, "wpb": 4096.04,
         "bsz": 31.99, "num_updates": 200, "lr": 1e-05, "gnorm": 0.98765, "loss_scale": 128.0,
         "train_wall": 61.6, "wall": 120.4}


class FakeClock:
    """A clock the test advances by hand, so rates and timers are exact."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def root_logging(monkeypatch):
    """Undo a test's setup_logging: drop (and close) its handlers, restore the root level."""
    root = logging.getLogger()
    installed: list[logging.Handler] = []
    monkeypatch.setattr(roberta_logging, "_installed_handlers", installed)
    level = root.level
    yield root
    for handler in installed:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)


def progress_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(record.name, record.getMessage()) for record in caplog.records
            if record.name != "roberta.logging"]


def test_average_meter_is_weighted():
    meter = AverageMeter()
    meter.update(2.0, weight=1)
    meter.update(5.0, weight=3)
    assert meter.smoothed_value == pytest.approx((2 * 1 + 5 * 3) / 4)
    meter.reset()
    assert meter.is_empty


def test_sum_and_last_value_meters():
    total, last = SumMeter(), LastValueMeter()
    for value in (1.5, 2.5, 4.0):
        total.update(value)
        last.update(value)
    assert total.smoothed_value == 8.0
    assert last.smoothed_value == 4.0


def test_time_meter_rate_and_resume_offset():
    clock = FakeClock()
    meter = TimeMeter(clock=clock)
    meter.update(300)
    clock.now += 2.0
    meter.update(100)
    assert meter.smoothed_value == pytest.approx(400 / 2.0)
    # A resumed meter carries 400 items over 2 s; 200 more in 2 s keeps the rate at 150/s.
    resumed = TimeMeter(clock=clock)
    resumed.load_state_dict(meter.state_dict())
    resumed.update(200)
    clock.now += 2.0
    assert resumed.smoothed_value == pytest.approx(600 / 4.0)


def test_stopwatch_accumulates_only_between_start_and_stop():
    clock = FakeClock()
    watch = StopwatchMeter(clock=clock)
    watch.start()
    clock.now += 1.5
    watch.stop()
    clock.now += 100.0  # not timed
    watch.start()
    clock.now += 0.5
    assert watch.smoothed_value == pytest.approx(2.0)  # running lap included
    watch.stop()
    assert (watch.sum, watch.laps) == (pytest.approx(2.0), 2)


def test_meter_group_orders_like_fairseq():
    group = MeterGroup(clock=FakeClock())
    for name in ("wall", "f1", "gnorm", "lr", "wps", "ppl", "loss", "accuracy", "bsz", "mcc"):
        group.update(name, 1.0, kind="rate" if name == "wps" else "avg")
    assert list(group.smoothed_values()) == [
        "loss", "ppl", "accuracy", "wps", "bsz", "lr", "gnorm", "wall", "f1", "mcc"]


def test_meter_group_kinds_reset_and_mismatch():
    clock = FakeClock()
    group = MeterGroup(clock=clock)
    group.update("loss", 4.0, weight=10)
    group.update("loss", 1.0, weight=30)
    group.update("wpb", 100, kind="sum")
    group.update("wpb", 50, kind="sum")
    group.update("num_updates", 7, kind="last")
    group.update("wps", 1000, kind="rate")
    group.stopwatch("train_wall").start()
    clock.now += 4.0
    group.stopwatch("train_wall").stop()
    assert group.smoothed_values() == {"loss": pytest.approx(1.75), "wps": 250.0, "wpb": 150.0,
                                       "num_updates": 7.0, "train_wall": 4.0}
    with pytest.raises(ValueError, match="'loss' is a 'avg' meter"):
        group.update("loss", 1.0, kind="sum")
    group.reset()
    assert group.smoothed_values() == {}
    group.update("loss", 2.0)
    assert group.smoothed_values() == {"loss": 2.0}


def test_meter_group_state_round_trips_through_weights_only_load(tmp_path):
    clock = FakeClock()
    group = MeterGroup(clock=clock)
    group.update("loss", 3.0, weight=2)
    group.update("wps", 500, kind="rate")
    group.update("lr", 1e-4, kind="last")
    group.stopwatch("wall").start()
    clock.now += 5.0
    path = tmp_path / "meters.pt"
    torch.save(group.state_dict(), path)
    state = torch.load(path, map_location="cpu", weights_only=True)

    restored = MeterGroup(clock=clock)
    restored.load_state_dict(state)
    assert restored.smoothed_values() == group.smoothed_values()
    assert list(restored.smoothed_values()) == ["loss", "wps", "lr", "wall"]
    clock.now += 1.0  # the restored wall stopwatch keeps running
    assert restored.smoothed_values()["wall"] == pytest.approx(6.0)


@pytest.mark.parametrize("key, value, text", [
    ("loss", 3.14159, "3.142"), ("nll_loss", 2.0, "2"), ("ppl", 8.8216, "8.82"),
    ("accuracy", 87.654, "87.7"), ("wps", 12345.678, "12346"), ("ups", 1.2345, "1.23"),
    ("wpb", 4096.04, "4096"), ("bsz", 31.99, "32"), ("lr", 1e-05, "1e-05"),
    ("lr", 0.0003, "0.0003"), ("gnorm", 0.98765, "0.988"), ("clip", 12.34, "12.3"),
    ("loss_scale", 128.0, "128"), ("train_wall", 61.6, "62"), ("num_updates", 200.0, "200"),
    ("f1", 0.91234, "0.91"), ("best_loss", 3.14159, "3.142"), ("mcc", 0.123456, "0.123"),
    ("loss", -0.0001, "0"), ("loss", float("nan"), "nan"), ("loss", float("inf"), "inf"),
    ("subset", "valid", "valid"),
])
def test_format_stat_rounding(key, value, text):
    assert format_stat(key, value) == text


def test_simple_interval_line_shape(caplog):
    caplog.set_level(logging.INFO)
    progress = ProgressLogger("simple", epoch=1, total=1374, log_interval=100)
    list(progress.wrap(range(199), offset=1))  # resumed after 1 update, now at 200
    progress.log({"loss": 3.14159, "ppl": 8.8216, "lr": 1e-05}, tag="train_inner", step=200)
    assert progress_lines(caplog) == [
        ("train_inner", "epoch 001:    200 / 1374 loss=3.142, ppl=8.82, lr=1e-05")]


def test_json_interval_line_parses_back(caplog):
    caplog.set_level(logging.INFO)
    progress = ProgressLogger("json", epoch=2, total=1374, log_interval=100)
    progress.update_position(200)
    progress.log(STATS, tag="train_inner", step=1574)
    [(name, message)] = progress_lines(caplog)
    record = json.loads(message)
    assert name == "train_inner"
    assert list(record) == ["epoch", "update", *STATS]
    assert record["epoch"] == 2
    assert record["update"] == round(1 + 200 / 1374, 3) == 1.146
    assert record["loss"] == "3.142" and record["num_updates"] == "200" and record["lr"] == "1e-05"


def test_end_of_epoch_lines_with_best_metric(caplog):
    caplog.set_level(logging.INFO)
    stats = {"loss": 3.14159, "ppl": 8.8216, "num_updates": 200, "best_loss": 3.1}
    ProgressLogger("simple", epoch=1, prefix="valid on 'valid' subset").print(stats, tag="valid", step=200)
    ProgressLogger("json", epoch=1, prefix="valid on 'valid' subset").print(stats, tag="valid", step=200)
    ProgressLogger("simple", epoch=None, prefix="valid on 'valid' subset").print({"loss": 2.5}, "valid", 0)
    ProgressLogger("none", epoch=1).print(stats, tag="valid", step=200)
    simple, as_json, no_epoch = progress_lines(caplog)
    assert simple == ("valid", "epoch 001 | valid on 'valid' subset | loss 3.142 | ppl 8.82 | "
                               "num_updates 200 | best_loss 3.1")
    assert json.loads(as_json[1]) == {"epoch": 1, "valid_loss": "3.142", "valid_ppl": "8.82",
                                      "valid_num_updates": "200", "valid_best_loss": "3.1"}
    assert no_epoch == ("valid", "valid on 'valid' subset | loss 2.5")


def test_tqdm_format_shows_stats_in_the_bar(capsys, caplog):
    caplog.set_level(logging.INFO)
    with ProgressLogger("tqdm", epoch=3, total=10) as progress:
        for _ in progress.wrap(range(4)):
            pass
        progress.log({"loss": 2.0, "ppl": 4.0}, tag="train_inner", step=4)
        assert progress.position == 4
    assert "loss=2, ppl=4" in capsys.readouterr().err
    assert progress_lines(caplog) == []  # interval stats live in the bar only


def test_should_log_follows_interval():
    progress = ProgressLogger("none", epoch=1, total=10, log_interval=3)
    assert [step for step in range(10) if progress.should_log(step)] == [3, 6, 9]


def test_setup_logging_writes_fairseq_lines_to_log_file(tmp_path, root_logging):
    log_file = tmp_path / "logs" / "train.log"
    log_file.parent.mkdir()
    log_file.write_text("earlier run\n")
    setup_logging(str(log_file))
    logging.getLogger("roberta.trainer").info("hello %s", "world")
    ProgressLogger("simple", epoch=1, total=5).log({"loss": 1.0}, tag="train_inner", step=1)
    lines = log_file.read_text().splitlines()
    assert lines[0] == "earlier run"  # appended, not truncated
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \| INFO \| roberta\.trainer \| hello world", lines[1])
    assert lines[2].endswith(" | INFO | train_inner | epoch 001:      0 / 5 loss=1")


def test_other_ranks_print_errors_and_their_own_warnings_only(tmp_path, root_logging):
    log_file = tmp_path / "rank1.log"
    setup_logging(str(log_file), rank=1)
    logging.getLogger("roberta.trainer").info("chatty")
    logging.getLogger("roberta.data").warning("the same on every rank")
    logging.getLogger("roberta.trainer").warning("out of memory here", extra=EVERY_RANK)
    logging.getLogger("roberta.trainer").error("broken")
    assert [line.split(" | ", 1)[1] for line in log_file.read_text().splitlines()] == [
        "WARNING | roberta.trainer | out of memory here", "ERROR | roberta.trainer | broken"]


def test_setup_logging_bad_log_file_is_a_user_error(tmp_path, root_logging):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    with pytest.raises(UserError, match="--log-file"):
        setup_logging(str(blocker / "train.log"))


def test_missing_tensorboard_warns_once(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now fails
    monkeypatch.setattr(roberta_logging, "_warned", set())
    for _ in range(2):
        ProgressLogger("none", epoch=1, scalars=scalar_writer("tb")).log({"loss": 1.0}, "train_inner", 1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "tensorboard is not installed" in warnings[0]


def test_tensorboard_writes_one_writer_per_tag(monkeypatch, tmp_path):
    scalars: list[tuple[str, str, float, int]] = []

    class RecordingWriter:
        def __init__(self, logdir: str, purge_step: int | None = None) -> None:
            self.logdir = logdir

        def add_scalar(self, key: str, value: float, step: int) -> None:
            scalars.append((self.logdir, key, value, step))

        def add_text(self, key: str, text: str, step: int | None = None) -> None:
            pass

        def flush(self) -> None:
            pass

        def close(self) -> None:
            pass

    module = types.ModuleType("torch.utils.tensorboard")
    module.SummaryWriter = RecordingWriter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", module)
    with scalar_writer(str(tmp_path)) as writer, ProgressLogger("none", epoch=1, scalars=writer) as progress:
        progress.log({"loss": 2.0, "num_updates": 5}, tag="train_inner", step=5)
        progress.print({"loss": 1.5}, tag="valid", step=5)
    assert scalars == [(str(tmp_path / "train_inner"), "loss", 2.0, 5),
                       (str(tmp_path / "valid"), "loss", 1.5, 5)]


def test_logging_flags_and_format_resolution(monkeypatch):
    parser = argparse.ArgumentParser()
    add_logging_args(parser)
    args = parser.parse_args([])
    assert (args.log_format, args.log_interval, args.log_file, args.no_progress_bar,
            args.tensorboard_logdir) == (None, 100, None, False, None)
    assert all(action.help for action in parser._actions if action.dest != "help")
    with pytest.raises(SystemExit):
        parser.parse_args(["--log-interval", "0"])
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert resolve_log_format(None) == "simple"
    assert resolve_log_format("tqdm") == "simple"
    assert resolve_log_format("json", no_progress_bar=True) == "json"
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert resolve_log_format(None) == "tqdm"
    assert resolve_log_format(None, no_progress_bar=True) == "simple"
