"""roberta-plot: the figures' series are the numbers of the files they were drawn from (read back
from the matplotlib Figure, not from pixels), and bad input is refused with one line."""
from __future__ import annotations

import json
import math
import statistics
import struct
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roberta.cli import plot, train, validate
from roberta.errors import UserError
from roberta.plot_data import RunCurves, parse_training_log, parse_watch_results, read_run, read_sweep
from roberta.sweep_results import RunScore, TaskMetric, render_tables, result_record
from support.cli import Command
from support.logs import fairseq_log
from support.train_args import SMALLEST_SIZES, tiny_run

pytest.importorskip("matplotlib")
from matplotlib.figure import Figure  # noqa: E402  (after the skip: matplotlib is an optional extra)

MAX_UPDATE, SAVE_EVERY = 3, 2
LINE = "2026-01-01 00:00:00 | INFO | {tag} | {record}"


def axes_by_title(figure: Figure) -> dict:
    return {axis.get_title(): axis for axis in figure.axes}


def line_data(axis) -> dict[str, tuple[list[float], list[float]]]:
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in axis.get_lines()}


def legend_texts(figure: Figure) -> list[str]:
    return [text.get_text() for legend in figure.legends for text in legend.get_texts()]


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG header."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])


def log_text(inner: list[dict], valid: list[dict] = ()) -> str:
    lines = [LINE.format(tag="train_inner", record=json.dumps(record)) for record in inner]
    lines += [LINE.format(tag="valid", record=json.dumps(record)) for record in valid]
    return "\n".join(lines) + "\n"


def synthetic_log(path: Path, losses: list[float], lr: float = 1e-4) -> Path:
    inner = [{"epoch": 1, "loss": str(loss), "num_updates": str(update), "lr": str(lr)}
             for update, loss in enumerate(losses, 1)]
    valid = [{"epoch": 1, "valid_loss": str(losses[-1] + 0.5), "valid_accuracy": "61.5",
              "valid_num_updates": str(len(losses))}]
    path.write_text(log_text(inner, valid), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def real_run(demo_data_bin: Path, tmp_path_factory) -> tuple[Path, Path]:
    """A 3-update masked-LM run logging JSON every update and validating at 2 and 3, then scored by
    roberta-validate --watch (which ends by itself: the run has finished): (log, save dir)."""
    root = tmp_path_factory.mktemp("plot")
    log, save_dir = root / "tiny.log", root / "tiny"
    train.main(tiny_run(demo_data_bin, save_dir, *SMALLEST_SIZES, "--max-tokens", "512", "--lr", "1e-3",
                        "--warmup-updates", "1", "--total-num-update", str(MAX_UPDATE), "--max-update",
                        str(MAX_UPDATE), "--save-interval-updates", str(SAVE_EVERY), "--log-interval", "1",
                        "--log-file", str(log)))
    validate.main([str(demo_data_bin), "--watch", str(save_dir), "--watch-interval", "0.1", "--cpu",
                   "--num-workers", "0", "--max-tokens", "4096"])
    return log, save_dir


def test_train_loss_and_lr_lines_are_the_logged_values(real_run: tuple[Path, Path]) -> None:
    log, _ = real_run
    inner = fairseq_log(log, "train_inner")
    validations = fairseq_log(log, "valid")
    figure = plot.draw_curves(plot.load_runs([log], None), ["loss"])
    panels = axes_by_title(figure)
    assert list(panels) == ["train loss", "learning rate", "valid loss"]
    assert panels["train loss"].get_xlabel() == "update" and panels["train loss"].get_ylabel() == "loss"
    updates = [int(event["num_updates"]) for event in inner]
    assert updates == list(range(1, MAX_UPDATE + 1))
    assert line_data(panels["train loss"]) == {"tiny": (updates, [float(event["loss"]) for event in inner])}
    assert line_data(panels["learning rate"]) == {"tiny": (updates, [float(event["lr"]) for event in inner])}
    assert line_data(panels["valid loss"]) == {
        "tiny": ([int(event["valid_num_updates"]) for event in validations],
                 [float(event["valid_loss"]) for event in validations])}
    assert legend_texts(figure) == ["tiny"]


def test_watch_results_give_one_point_per_scored_update(real_run: tuple[Path, Path]) -> None:
    _, save_dir = real_run
    rows = [json.loads(line) for line in (save_dir / "watch" / "results.jsonl").read_text().splitlines()]
    # checkpoint_last.pt and checkpoint_best.pt hold the same update: scored twice, drawn once.
    assert len(rows) > len({row["update"] for row in rows})
    figure = plot.draw_curves(plot.load_runs([save_dir], None), ["loss", "ppl"])
    panels = axes_by_title(figure)
    assert list(panels) == ["valid loss", "valid ppl"]  # no training log: no training panels
    expected = {row["update"]: row["loss"] for row in rows}
    assert line_data(panels["valid loss"]) == {"tiny": (sorted(expected), [expected[u] for u in sorted(expected)])}
    assert sorted(expected) == [SAVE_EVERY, MAX_UPDATE]


def test_a_log_and_its_watched_save_dir_are_one_run(real_run: tuple[Path, Path], tmp_path: Path) -> None:
    log, save_dir = real_run
    other = synthetic_log(tmp_path / "other.log", [7.0, 6.5, 6.0])
    runs = plot.load_runs([log, save_dir, other], ["tiny", "tiny", "other"])
    assert [name for name, _ in runs] == ["tiny", "other"]
    figure = plot.draw_curves(runs, ["loss"])
    panels = axes_by_title(figure)
    assert set(line_data(panels["train loss"])) == {"tiny", "other"}
    assert line_data(panels["train loss"])["other"] == ([1, 2, 3], [7.0, 6.5, 6.0])
    assert line_data(panels["valid loss"])["other"] == ([3], [6.5])
    assert [line.get_color() for line in panels["train loss"].get_lines()] == ["C0", "C1"]
    assert legend_texts(figure) == ["tiny", "other"]


def test_the_command_writes_a_png_of_the_expected_size(real_run: tuple[Path, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    log, save_dir = real_run
    out = tmp_path / "curves.png"
    plot.main(["curves", str(log), str(save_dir), "--metric", "loss", "ppl", "--out", str(out)])
    assert capsys.readouterr().out == f"wrote {out}\n"
    assert png_size(out) == (900, 530)  # 4 panels, 2 by 2, with the legend row
    assert list(tmp_path.iterdir()) == [out]  # written atomically: no temporary left


def test_a_fairseq_train_log_is_drawn_like_ours(shared_data: Path) -> None:
    log = shared_data.parent / "reference" / "fairseq-0.12.2" / "mlm" / "train.log"
    if not log.is_file():
        pytest.skip(f"fairseq's reference log not found at {log}")
    inner = fairseq_log(log, "train_inner")
    panels = axes_by_title(plot.draw_curves(plot.load_runs([log], ["fairseq"]), ["loss"]))
    assert line_data(panels["train loss"])["fairseq"] == (list(range(1, 21)), [float(e["loss"]) for e in inner])
    assert line_data(panels["valid loss"])["fairseq"] == ([20], [11.111])
    # Its config dump (`| fairseq_cli.train | {'_name': None, ...}`) is no progress record, and its
    # epoch summary (`| train |`, with train_num_updates) no validation.
    assert set(read_run(log).valid) == {"valid"}


def test_validation_subsets_are_told_apart_and_epoch_summaries_left_out(tmp_path: Path) -> None:
    lines = [LINE.format(tag="train_inner", record='{"loss": "3", "num_updates": "5"}')]
    lines += [LINE.format(tag=subset, record=json.dumps({f"{subset}_accuracy": score, f"{subset}_num_updates": "5"}))
              for subset, score in (("valid", "70"), ("valid1", "60"))]
    # The epoch summary has a train_num_updates too, but is no validation.
    lines.append(LINE.format(tag="train", record='{"train_accuracy": "80", "train_num_updates": "5"}'))
    (tmp_path / "mnli.log").write_text("\n".join(lines) + "\n")
    assert list(read_run(tmp_path / "mnli.log").valid) == ["valid", "valid1"]
    panels = axes_by_title(plot.draw_curves(plot.load_runs([tmp_path / "mnli.log"], None), ["accuracy"]))
    lines = panels["valid accuracy"].get_lines()
    assert [(line.get_label(), list(line.get_ydata())) for line in lines] == [
        ("mnli (valid)", [70.0]), ("mnli (valid1)", [60.0])]
    assert [line.get_linestyle() for line in lines] == ["-", "--"]


def write_sweep(output_dir: Path, scores: dict[tuple[str, str], list[float]]) -> None:
    runs = []
    for (task, setting), values in scores.items():
        for seed, score in enumerate(values, 1):
            run_dir = output_dir / task / setting / f"seed{seed}"
            run_dir.mkdir(parents=True)
            record = result_record(task=task, setting=setting, seed=seed, metric="accuracy", maximize=True,
                                   subsets=["valid"], subset_scores={"valid": score}, command=["x"],
                                   train_args=["x"], wall_seconds=1.0, gpu=None)
            (run_dir / "result.json").write_text(json.dumps(record))
            runs.append(RunScore.from_result(record))
    settings_order = list(dict.fromkeys(setting for _, setting in scores))
    tasks = [TaskMetric(task, "accuracy", True) for task in dict.fromkeys(task for task, _ in scores)]
    (output_dir / "results.csv").write_text(render_tables(tasks, settings_order, seeds_planned=3, runs=runs)[1])


def test_the_sweep_chart_shows_every_seed_the_mean_and_its_standard_error(tmp_path: Path) -> None:
    # Grid order (results.csv), not alphabetical: lr_2e-5 comes first.
    scores = {("RTE", "lr_2e-5"): [70.0, 74.0, 72.5], ("RTE", "lr_1e-5"): [66.0, 69.0],
              ("SST-2", "lr_2e-5"): [93.0], ("SST-2", "lr_1e-5"): [92.0, 92.5, 91.0]}
    write_sweep(tmp_path, scores)
    figure = plot.draw_sweep(read_sweep(tmp_path))
    panels = axes_by_title(figure)
    assert list(panels) == ["RTE", "SST-2"]
    assert any("standard error" in text for text in legend_texts(figure))
    for task, axis in panels.items():
        settings_shown = [label.get_text() for label in axis.get_xticklabels()]
        assert settings_shown == ["lr_2e-5", "lr_1e-5"]
        assert axis.get_ylabel() == "accuracy (higher is better)"
        seeds = line_data(axis)["each seed"]
        expected = [score for setting in settings_shown for score in scores[(task, setting)]]
        assert seeds[1] == expected
        positions = [index for index, setting in enumerate(settings_shown) for _ in scores[(task, setting)]]
        assert [round(x) for x in seeds[0]] == positions  # beside their setting's tick
        (container,) = axis.containers
        assert container.get_label() == plot.ERROR_LABEL
        mean_line, _, (bars,) = container.lines
        assert list(mean_line.get_ydata()) == pytest.approx(
            [statistics.fmean(scores[(task, setting)]) for setting in settings_shown])
        for index, (setting, segment) in enumerate(zip(settings_shown, bars.get_segments())):
            values = scores[(task, setting)]
            if len(values) == 1:
                assert len(segment) == 0  # one seed: no error bar
                continue
            error = statistics.stdev(values) / math.sqrt(len(values))
            mean = statistics.fmean(values)
            x = index + plot.MEAN_OFFSET
            assert segment.ravel().tolist() == pytest.approx([x, mean - error, x, mean + error])


def test_the_sweep_command_writes_beside_the_tables(tmp_path: Path) -> None:
    write_sweep(tmp_path, {("RTE", "lr_1e-5"): [70.0, 71.0]})
    plot.main(["sweep", str(tmp_path)])
    width, height = png_size(tmp_path / "results.png")
    assert 250 < width <= 900 and height > 200


@pytest.mark.parametrize("make, argv, fragments", [
    (lambda d: None, ["curves", "missing.log"], ["missing.log: no such file"]),
    (lambda d: (d / "simple.log").write_text(
        "2026-01-01 00:00:00 | INFO | train_inner | epoch 001:  1 / 9 loss=3.1, num_updates=1\n"),
     ["curves", "simple.log"], ["no `| train_inner |` JSON records in", "--log-format json"]),
    (lambda d: (d / "bad.log").write_text(LINE.format(tag="train_inner", record='{"loss": "3", }') + "\n" +
                                          LINE.format(tag="train_inner", record='{"num_updates": "2"}') + "\n"),
     ["curves", "bad.log"], ["bad.log, line 1", "not valid JSON"]),
    (lambda d: (d / "no_update.log").write_text(LINE.format(tag="train_inner", record='{"loss": "3"}') + "\n"),
     ["curves", "no_update.log"], ["line 1", "without num_updates"]),
    (lambda d: (d / "results.jsonl").write_text('{"subset": "valid", "update": 2, "loss": 1}\n[1, 2]\n'),
     ["curves", "results.jsonl"], ["results.jsonl, line 2", "not a result row"]),
    (lambda d: (d / "save").mkdir(), ["curves", "save"], ["without watch/results.jsonl"]),
    (lambda d: synthetic_log(d / "a.log", [3.0]), ["curves", "a.log", "--names", "x", "y"],
     ["--names gives 2 names for 1 runs"]),
    (lambda d: synthetic_log(d / "a.log", [3.0]), ["curves", "a.log", "--metric", "f1"],
     ["--metric f1", "they report loss, accuracy"]),
    (lambda d: synthetic_log(d / "a.log", [3.0]), ["curves", "a.log", "--out", "a.svg"], ["ending in .png"]),
    (lambda d: synthetic_log(d / "a.log", [3.0]), ["curves", "a.log", "--out", "no/such/a.png"],
     ["the folder no/such does not exist"]),
    (lambda d: (d / "sweep").mkdir(), ["sweep", "sweep"], ["no finished run"]),
    (lambda d: (d / "sweep/RTE/lr/seed1").mkdir(parents=True) or (d / "sweep/RTE/lr/seed1/result.json").write_text("{}"),
     ["sweep", "sweep"], ["seed1/result.json: not a result.json of roberta-sweep"]),
])
def test_bad_input_is_refused_with_one_line(make, argv, fragments, tmp_path: Path, command: Command,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    make(tmp_path)
    result = command("plot", *argv)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("roberta-plot: error: "), result.stderr
    for fragment in fragments:
        assert fragment in last, last


def test_a_last_line_cut_off_by_a_killed_run_is_ignored() -> None:
    lines = log_text([{"loss": "3", "num_updates": "1"}]).splitlines() + [
        LINE.format(tag="train_inner", record='{"loss": "2.9", "num_u')]
    assert parse_training_log(lines, "x.log").train["loss"] == {1: 3.0}


def test_without_matplotlib_the_command_says_how_to_install_it(tmp_path: Path, command: Command,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in sys.modules if name == "matplotlib" or name.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)  # `import matplotlib...` now raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = command("plot", "curves", synthetic_log(tmp_path / "a.log", [3.0]), "--out", tmp_path / "a.png")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"roberta-plot: error: {plot.INSTALL_HINT}"
    assert not (tmp_path / "a.png").exists()


# Lines of a log: progress-looking lines with arbitrary JSON (or not JSON at all) and plain text.
_JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                       max_size=3), max_leaves=8)
_KEYS = st.sampled_from(["num_updates", "loss", "lr", "valid_loss", "valid_num_updates", "epoch", "x"])
_RECORDS = st.dictionaries(_KEYS | st.text(max_size=8), _JSON_VALUES | st.text(alphabet="0123456789.e-naif", max_size=6),
                           max_size=5).map(json.dumps)
_LOG_LINES = st.lists(st.one_of(
    st.text(max_size=40),
    st.builds(lambda tag, record: LINE.format(tag=tag, record=record),
              st.sampled_from(["train_inner", "valid", "train", "valid1", "roberta.train"]),
              _RECORDS | st.text(max_size=30).map(lambda text: "{" + text + "}"))), max_size=12)


@settings(max_examples=100, deadline=None)
@given(_LOG_LINES)
def test_any_log_text_is_parsed_or_refused_with_a_user_error(lines: list[str]) -> None:
    try:
        curves = parse_training_log(lines, "fuzz.log")
    except UserError:
        return
    assert isinstance(curves, RunCurves) and "loss" not in curves.valid.get("train", {})


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=40) | _RECORDS, max_size=8))
def test_any_watch_results_text_is_parsed_or_refused_with_a_user_error(lines: list[str]) -> None:
    try:
        parse_watch_results(lines, "results.jsonl")
    except UserError:
        pass

