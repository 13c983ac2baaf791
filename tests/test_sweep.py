"""roberta-sweep: table arithmetic, spec errors, scheduling, and real tiny sweeps that resume and report failures."""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from roberta.cli import sweep
from roberta.cli.common import run_cli
from roberta.cli.sweep.plan import plan_runs, starts_over
from roberta.cli.sweep.spec import Setting, SweepSpec, TaskConfig
from roberta.sweep_results import (CSV_COLUMNS, NoScore, RunScore, Stats, TaskMetric, best_validation_scores,
                                   build_rows, render_csv, render_markdown, run_scores, summarize, summarize_tasks)

REPO_ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 300
TINY_TRAINING = ["--task", "masked_lm", "--arch", "roberta_tiny", "--encoder-layers", "2", "--encoder-embed-dim", "64",
                 "--encoder-ffn-embed-dim", "128", "--encoder-attention-heads", "2", "--sample-break-mode", "complete",
                 "--tokens-per-sample", "64", "--max-tokens", "512", "--required-batch-size-multiple", "1",
                 "--skip-invalid-size-inputs-valid-test", "--max-update", "6", "--num-workers", "0", "--cpu",
                 "--no-epoch-checkpoints"]
# Stands in for roberta-train where only the runner is tested: logs two validation subsets whose
# best accuracy is 60 + seed + 1000 * lr, and the GPU it was given.
FAKE_TRAIN = """\
import json, os, sys, time
from pathlib import Path
args = sys.argv[1:]
def value(flag): return args[args.index(flag) + 1]
Path(value("--save-dir"), "pid").write_text(str(os.getpid()))
time.sleep(float(os.environ.get("FAKE_SLEEP", "0.3")))
best = 60 + int(value("--seed")) + 1000 * float(value("--lr"))
gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "none")
with open(value("--log-file"), "a") as log:
    for epoch, accuracy in enumerate((50.0, best, 55.0), start=1):
        for subset, score in (("valid", accuracy), ("valid1", accuracy - 1)):
            record = {"epoch": epoch, f"{subset}_accuracy": str(score), f"{subset}_gpu": gpu}
            log.write(f"2026-01-01 00:00:00 | INFO | {subset} | {json.dumps(record)}\\n")
"""


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path


def sweep_command(spec_path: Path, output_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "roberta.cli.sweep", str(spec_path), "--output-dir", str(output_dir), *extra]


def run_sweep(command: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, cwd=REPO_ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env})


def fake_spec(tmp_path: Path, data: Path, **overrides) -> dict:
    fake = tmp_path / "fake_train.py"
    fake.write_text(FAKE_TRAIN, encoding="utf-8")
    return {"command": [sys.executable, str(fake)], "tasks": {"RTE": {"data": str(data)}},
            "grid": {"--lr": ["0.001", "0.002"]}, "seeds": [1, 2], "metric": "accuracy",
            "common": ["--valid-subset", "valid,valid1"], **overrides}


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def results(output_dir: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(output_dir.glob("*/*/seed*/result.json"))]


# Table arithmetic -------------------------------------------------------------------------------

def scored(task: str, setting: str, *scores: float) -> list[RunScore]:
    return [RunScore(task, setting, seed, "valid", {"valid": score}) for seed, score in enumerate(scores)]


def test_summarize_is_exact() -> None:
    # mean 72; sample variance ((-2)^2 + 0 + 2^2) / (3 - 1) = 4, so std 2.
    assert summarize([70.0, 72.0, 74.0]) == Stats(count=3, mean=72.0, std=2.0, max=74.0, min=70.0)
    assert summarize([5.5]) == Stats(count=1, mean=5.5, std=None, max=5.5, min=5.5)


def test_best_setting_follows_the_metric_direction() -> None:
    runs = scored("RTE", "a", 70.0, 74.0) + scored("RTE", "b", 71.0, 71.0) + scored("STS", "a", 3.0) \
        + scored("STS", "b", 2.0, 2.5)
    tasks = [TaskMetric("RTE", "accuracy", True), TaskMetric("STS", "loss", False)]
    rows = build_rows(tasks, ["a", "b", "c"], seeds_planned=2, runs=runs)
    assert [(row.task.name, row.setting) for row in rows if row.is_best] == [("RTE", "a"), ("STS", "b")]
    assert rows[2].stats is None and not rows[2].is_best
    assert rows[4].stats == Stats(count=2, mean=2.25, std=statistics.stdev([2.0, 2.5]), max=2.5, min=2.0)


def test_average_over_tasks_with_and_without_wnli() -> None:
    tasks = [TaskMetric(name, "accuracy", True) for name in ("RTE", "WNLI", "SST-2")]
    runs = scored("RTE", "a", 70.0, 72.0) + scored("RTE", "b", 60.0) + scored("WNLI", "a", 56.0) \
        + scored("SST-2", "b", 94.0, 95.0)
    summary = summarize_tasks(build_rows(tasks, ["a", "b"], seeds_planned=2, runs=runs), ["RTE", "WNLI", "SST-2"])
    assert {name: row.setting for name, row in summary.best.items()} == {"RTE": "a", "WNLI": "a", "SST-2": "b"}
    assert summary.average == statistics.fmean([71.0, 56.0, 94.5])
    assert summary.has_wnli and summary.average_without_wnli == statistics.fmean([71.0, 94.5])
    waiting = summarize_tasks(build_rows(tasks, ["a"], seeds_planned=2, runs=runs[:2]), ["RTE", "WNLI", "SST-2"])
    assert waiting.average is None and waiting.waiting_for == ["WNLI", "SST-2"]


def test_csv_has_the_columns_and_exact_values(tmp_path: Path) -> None:
    tasks = [TaskMetric("RTE", "accuracy", True), TaskMetric("WNLI", "accuracy", True)]
    rows = build_rows(tasks, ["a", "b"], seeds_planned=3,
                      runs=scored("RTE", "a", 70.1, 72.3, 71.0) + scored("RTE", "b", 65.0) + scored("WNLI", "b", 56.3))
    (tmp_path / "r.csv").write_text(render_csv(rows, ["RTE", "WNLI"]))
    table = read_csv(tmp_path / "r.csv")
    assert tuple(table[0]) == CSV_COLUMNS
    first = table[0]
    assert (first["task"], first["setting"], first["seeds_finished"], first["seeds_planned"], first["best"]) == \
        ("RTE", "a", "3", "3", "best")
    assert float(first["mean"]) == statistics.fmean([70.1, 72.3, 71.0])
    assert float(first["std"]) == statistics.stdev([70.1, 72.3, 71.0])
    assert (float(first["max"]), float(first["min"])) == (72.3, 70.1)
    assert table[1]["std"] == "" and table[2]["seeds_finished"] == "0" and table[2]["mean"] == ""
    averages = {row["task"]: float(row["mean"]) for row in table if row["task"].startswith("(average")}
    assert averages == {"(average)": statistics.fmean([statistics.fmean([70.1, 72.3, 71.0]), 56.3]),
                        "(average without WNLI)": statistics.fmean([70.1, 72.3, 71.0])}


def test_markdown_shows_the_numbers() -> None:
    tasks = [TaskMetric("RTE", "accuracy", True), TaskMetric("MRPC", "accuracy", True)]
    rows = build_rows(tasks, ["lr_1e-5"], seeds_planned=3, runs=scored("RTE", "lr_1e-5", 70.0, 72.0, 74.0)
                      + scored("MRPC", "lr_1e-5", 88.25))
    text = render_markdown(rows, ["RTE", "MRPC"])
    assert "| RTE | lr_1e-5 | accuracy (higher is better) | 3/3 | 72.000 | 2.000 | 74.000 | 70.000 | **best** |" in text
    assert "| MRPC | lr_1e-5 | accuracy (higher is better) | 1/3 | 88.250 | - | 88.250 | 88.250 | **best** |" in text
    assert "Average over tasks of the best settings' means: 80.125" in text
    assert "WNLI is not among the tasks" in text


def test_validation_lines_give_each_subsets_best() -> None:
    lines = ['2026-11-23 03:06:17 | INFO | train_inner | {"epoch": 1, "loss": "1.0"}',
             '2026-11-23 03:06:17 | INFO | valid | {"epoch": 1, "valid_loss": "8.589", "valid_accuracy": "72.5"}',
             '2026-11-23 03:06:18 | INFO | valid1 | {"epoch": 1, "valid1_accuracy": "70.0"}',
             '2026-11-23 03:07:17 | INFO | valid | {"epoch": 2, "valid_loss": "7.1", "valid_accuracy": "71.0"}',
             '2026-11-23 03:07:18 | INFO | valid1 | {"epoch": 2, "valid1_accuracy": "73.5"}',
             '2026-11-23 03:08:17 | INFO | valid | {"epoch": 3, "valid_accuracy": "99']  # cut by a kill
    high = best_validation_scores(lines, subsets=["valid", "valid1"], metric="accuracy", maximize=True)
    assert high.best == {"valid": 72.5, "valid1": 73.5}
    assert best_validation_scores(lines, subsets=["valid"], metric="loss", maximize=False).best == {"valid": 7.1}
    with pytest.raises(NoScore, match=r"no validation line reports valid_f1 \(they report valid_accuracy, valid_loss\)"):
        run_scores(lines, subsets=["valid"], metric="f1", maximize=True)


# Spec errors ------------------------------------------------------------------------------------

def good_spec(data: Path) -> dict:
    return {"common": ["--task", "sentence_prediction"], "tasks": {"RTE": {"data": str(data), "args": ["--x", "1"]}},
            "grid": {"--lr": ["1e-5", "2e-5"]}, "seeds": [1, 2], "metric": "accuracy"}


BAD_SPECS = [
    ({"metrics": "f1"}, 'unknown key "metrics"'),
    ({"tasks": {"RTE": {"data": "{data}", "metirc": "f1"}}}, 'task "RTE": unknown key "metirc"'),
    ({"grid": {"--lr": []}}, 'grid "--lr": needs a non-empty list of values'),
    ({"grid": {"--lr": [1e-5]}}, 'grid "--lr": must be a list of strings'),
    ({"seeds": 3}, '"seeds" must be a non-empty list of integers'),
    ({"tasks": {"RTE": {"data": "/no/such/glue/RTE-bin"}}}, "data folder /no/such/glue/RTE-bin does not exist"),
    ({"grid": {"--seed": ["1", "2"]}}, 'grid "--seed": roberta-sweep sets --seed itself'),
    ({"grid": {"--save-dir": ["a"]}}, 'grid "--save-dir": roberta-sweep sets --save-dir itself'),
    ({"common": ["--log-format", "simple"]}, '"common": sets --log-format, which roberta-sweep sets itself'),
    ({"common": ["--lr=1e-4"]}, '"common": sets --lr, which the grid varies'),
    ({"metric": "loss"}, 'metric "loss" is better when lower; say "maximize": false'),
    ({"grid": {"--adam-betas": ["(0.9, 0.98)", "(0.9 0.98)"]}}, "would share the folder adam-betas__0.9_0.98_"),
]


@pytest.mark.parametrize("change, message", BAD_SPECS, ids=[message[:30] for _, message in BAD_SPECS])
def test_bad_spec_is_one_line_error(tmp_path: Path, capsys, change: dict, message: str) -> None:
    spec = {**good_spec(tmp_path), **json.loads(json.dumps(change).replace("{data}", str(tmp_path)))}
    path = write_spec(tmp_path / "spec.json", spec)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(sweep.main, "roberta-sweep", [str(path), "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert err.startswith("roberta-sweep: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert not (tmp_path / "out").exists()


def test_bad_spec_from_the_command_line_has_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "spec.json").write_text('{"tasks": {"RTE": {"data": "x"}},\n "seeds": [1,]}')
    result = run_sweep(sweep_command(tmp_path / "spec.json", tmp_path / "out"))
    assert result.returncode == 1
    assert result.stderr == f"roberta-sweep: error: {tmp_path / 'spec.json'}: not valid JSON " \
                            f"(Expecting value at line 2, column 14)\n"


# Runner, with a stand-in for roberta-train --------------------------------------------------------

def test_dry_run_prints_the_command_lines(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.json", fake_spec(tmp_path, tmp_path, seeds=[7]))
    result = run_sweep(sweep_command(spec, tmp_path / "out", "--dry-run"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "# 0 of 2 runs already finished; 2 to run"
    run_dir = tmp_path / "out" / "RTE" / "lr_0.002" / "seed7"
    assert lines[2] == (f"{sys.executable} {tmp_path / 'fake_train.py'} {tmp_path} --valid-subset valid,valid1 "
                        f"--lr 0.002 --seed 7 --save-dir {run_dir} --log-format json --log-file {run_dir}/train.log")
    assert not (tmp_path / "out").exists()


def test_runs_share_out_gpus_and_record_every_subset(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.json", fake_spec(tmp_path, tmp_path))
    result = run_sweep(sweep_command(spec, tmp_path / "out", "--gpus", "3,5"))
    assert result.returncode == 0, result.stderr
    log = result.stderr
    first_done = log.index("[1/4]")
    assert "started RTE/lr_0.001/seed1 on GPU 3" in log[:first_done]
    assert "started RTE/lr_0.001/seed2 on GPU 5" in log[:first_done]
    assert "[4/4] RTE lr_0.002 seed 2: accuracy 64 (" in log
    runs = results(tmp_path / "out")
    assert len(runs) == 4
    for run in runs:
        logged_gpu = json.loads((tmp_path / "out" / "RTE" / run["setting"] / f"seed{run['seed']}" /
                                 "train.log").read_text().splitlines()[0].split(" | ", 3)[3])["valid_gpu"]
        assert run["gpu"] == logged_gpu
        lr = float(run["setting"].removeprefix("lr_"))
        assert run["subset_scores"] == {"valid": 60 + run["seed"] + 1000 * lr, "valid1": 59 + run["seed"] + 1000 * lr}
    assert {run["gpu"] for run in runs} == {"3", "5"}
    assert "| RTE | lr_0.002 | accuracy (higher is better) | 2/2 | 63.500 | 0.707 | 64.000 | 63.000 | **best** " \
           "| valid1 62.500 |" in (tmp_path / "out" / "results.md").read_text()


def test_sigterm_stops_the_runs_and_records_nothing(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.json", fake_spec(tmp_path, tmp_path))
    command = sweep_command(spec, tmp_path / "out", "--gpus", "0,1")
    env = {**os.environ, "FAKE_SLEEP": "120"}
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        pid_files = [tmp_path / "out" / "RTE" / "lr_0.001" / f"seed{seed}" / "pid" for seed in (1, 2)]
        wait_for(lambda: all(path.is_file() and path.read_text() for path in pid_files), process)
        second = run_sweep(command)
        assert second.returncode == 1 and "another roberta-sweep, or a run it started, is still working" in second.stderr
        process.send_signal(signal.SIGTERM)
        err = process.communicate(timeout=20)[1]  # far less than the runs' 120 s: they were stopped
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 130, err
    assert "stopped 2 unfinished run(s)" in err and err.endswith("roberta-sweep: interrupted\n")
    for path in pid_files:
        with pytest.raises(ProcessLookupError):
            os.kill(int(path.read_text()), 0)
    assert results(tmp_path / "out") == []


def test_rerun_counts_only_the_resumed_attempts_scores(tmp_path: Path) -> None:
    tasks = {"RTE": {"data": str(tmp_path)}, "MRPC": {"data": str(tmp_path)}}
    spec = write_spec(tmp_path / "spec.json", fake_spec(tmp_path, tmp_path, seeds=[1], grid={"--lr": ["0.001"]},
                                                         tasks=tasks))
    earlier = '2026-01-01 00:00:00 | INFO | valid | {"epoch": 1, "valid_accuracy": "99.0"}\n'
    for task in ("RTE", "MRPC"):
        (tmp_path / "out" / task / "lr_0.001" / "seed1").mkdir(parents=True)
        (tmp_path / "out" / task / "lr_0.001" / "seed1" / "train.log").write_text(earlier)
    # RTE's killed attempt left a checkpoint_last.pt to resume from; MRPC's starts over.
    (tmp_path / "out" / "RTE" / "lr_0.001" / "seed1" / "checkpoint_last.pt").write_bytes(b"")
    result = run_sweep(sweep_command(spec, tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert {run["task"]: run["score"] for run in results(tmp_path / "out")} == {"RTE": 99.0, "MRPC": 62.0}
    assert (tmp_path / "out" / "MRPC" / "lr_0.001" / "seed1" / "train.log.abandoned").read_text() == earlier
    changed = write_spec(tmp_path / "changed.json", {**json.loads(spec.read_text()), "common": []})
    result = run_sweep(sweep_command(changed, tmp_path / "out"))
    assert result.returncode == 1
    assert "result.json: finished with other arguments" in result.stderr and "use another --output-dir" in result.stderr


@pytest.mark.parametrize("flags, checkpoints, expected", [
    ([], [], True),
    ([], ["checkpoint_last.pt"], False),
    (["--checkpoint-suffix", "_x"], ["checkpoint_last.pt"], True),
    (["--checkpoint-suffix=_x"], ["checkpoint_last_x.pt"], False),
    (["--restore-file", "other.pt"], ["checkpoint_last.pt"], True),
    (["--restore-file=checkpoint_last.pt"], ["checkpoint_last.pt"], False),
    (["--finetune-from-model", "model.pt"], ["checkpoint_last.pt"], False),
    (["--finetune-from-model", "model.pt"], [], True),
    (["--restore-file"], [], False),  # roberta-train refuses it before writing its log
])
def test_a_run_starts_over_unless_it_resumes_its_own_last_checkpoint(tmp_path: Path, flags: list[str],
                                                                      checkpoints: list[str], expected: bool) -> None:
    spec = SweepSpec(command=("roberta-train",), common=("--lr", "1e-5", *flags),
                     tasks=(TaskConfig("RTE", str(tmp_path), (), "accuracy", True),),
                     settings=(Setting("default", ()),), seeds=(1,))
    [run] = plan_runs(spec, tmp_path / "out")
    run.run_dir.mkdir(parents=True)
    for name in checkpoints:
        (run.run_dir / name).write_bytes(b"")
    assert starts_over(run) == expected


def wait_for(condition, process: subprocess.Popen, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "the sweep ended before the awaited state"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# Real tiny training runs --------------------------------------------------------------------------

@pytest.mark.slow
def test_killed_sweep_resumes_and_tabulates_every_run(demo_data_bin: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.json", {
        "common": TINY_TRAINING, "tasks": {"DEMO": {"data": str(demo_data_bin)}},
        "grid": {"--lr": ["1e-3", "3e-3"], "--clip-norm": ["0", "1"]}, "seeds": [1, 2],
        "metric": "loss", "maximize": False})
    output_dir = tmp_path / "out"
    command = sweep_command(spec, output_dir, "--gpus", "0,1")  # two CPU runs at a time
    with open(tmp_path / "first.log", "w") as first_log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                                   stdout=first_log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: len(list(output_dir.glob("*/*/*/result.json"))) >= 3, process)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    wait_for_group_gone(process.pid)
    done_before = {path: path.stat().st_mtime_ns for path in output_dir.glob("*/*/*/result.json")}
    assert 3 <= len(done_before) < 8

    rerun = run_sweep(command)
    assert rerun.returncode == 0, rerun.stderr
    num_left = 8 - len(done_before)
    assert f"{len(done_before)} of 8 runs already finished, running the other {num_left}" in rerun.stderr
    assert len(re.findall(r"\[\d/8\] DEMO \S+ seed \d: loss [\d.]+ \(\d+ s\)", rerun.stderr)) == num_left
    assert {path: path.stat().st_mtime_ns for path in done_before} == done_before

    runs = results(output_dir)
    assert len(runs) == 8
    table = [row for row in read_csv(output_dir / "results.csv") if row["task"] == "DEMO"]
    assert [row["setting"] for row in table] == ["lr_1e-3.clip-norm_0", "lr_1e-3.clip-norm_1",
                                                 "lr_3e-3.clip-norm_0", "lr_3e-3.clip-norm_1"]
    markdown = (output_dir / "results.md").read_text()
    for row in table:
        scores = [run["score"] for run in runs if run["setting"] == row["setting"]]
        assert row["seeds_finished"] == "2" and len(scores) == 2
        assert float(row["mean"]) == statistics.fmean(scores)
        assert float(row["std"]) == statistics.stdev(scores)
        assert f"| {statistics.fmean(scores):.3f} | {statistics.stdev(scores):.3f} |" in markdown
    best = min(table, key=lambda row: float(row["mean"]))
    assert [row["setting"] for row in table if row["best"] == "best"] == [best["setting"]]


def wait_for_group_gone(pgid: int, timeout: float = 30) -> None:
    """SIGKILLed children die asynchronously; the rerun must not start while one still holds the lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process group {pgid} still alive")


@pytest.mark.slow
def test_failed_run_is_reported_while_the_others_finish(demo_data_bin: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.json", {
        "common": TINY_TRAINING + ["--lr", "1e-3"],
        "tasks": {"DEMO": {"data": str(demo_data_bin)}, "WNLI": {"data": str(demo_data_bin)}},
        "grid": {"--clip-norm": ["1", "-1"]}, "seeds": [1], "metric": "loss", "maximize": False})
    result = run_sweep(sweep_command(spec, tmp_path / "out"))
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith(
        "roberta-sweep: error: 2 of 4 runs failed (DEMO/clip-norm_-1/seed1, WNLI/clip-norm_-1/seed1)")
    assert "DEMO clip-norm_-1 seed 1: FAILED" in result.stderr
    assert "roberta-train: error: --clip-norm must be >= 0, got -1" in result.stderr
    runs = results(tmp_path / "out")
    assert sorted((run["task"], run["setting"]) for run in runs) == [("DEMO", "clip-norm_1"), ("WNLI", "clip-norm_1")]
    averages = {row["task"]: float(row["mean"]) for row in read_csv(tmp_path / "out" / "results.csv")
                if row["task"].startswith("(average")}
    demo = next(run["score"] for run in runs if run["task"] == "DEMO")
    assert averages == {"(average)": statistics.fmean(run["score"] for run in runs), "(average without WNLI)": demo}
