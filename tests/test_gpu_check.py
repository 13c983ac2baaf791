"""benchmarks/gpu_check.sh, the one-shot GPU check: every section's code runs on the CPU (--dry-run),
a failing section is recorded without stopping the others, and without a GPU it skips cleanly."""
from __future__ import annotations

import argparse
import json
import math
import subprocess
from pathlib import Path

import pytest
import torch

from support.paths import REPO
from support.scripts import assert_error_is_only_line, script_env

SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
SECTIONS = ("environment", "throughput", "race", "oom", "learning", "apex")


def run_check(*argv: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *map(str, argv)], capture_output=True, text=True, env=script_env(),
                          timeout=300)


def printed_summary(result: subprocess.CompletedProcess) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what happens where there is no GPU")
def test_without_cuda_it_prints_a_skipped_summary_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    result = run_check("--out", out)
    assert result.returncode == 0, result.stderr
    expected = {"status": "skipped", "reason": "no CUDA device"}
    assert printed_summary(result) == expected and json.loads(out.read_text()) == expected
    assert f"summary written to {out}" in result.stderr


def test_a_bad_flag_is_one_error_line() -> None:
    assert_error_is_only_line(run_check("--dry-run", "--steps", "0"), "gpu_check.py", "--steps must be >= 1, got 0")


def test_a_failing_section_is_recorded_instead_of_ending_the_check(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import gpu_check

    def broken(check: gpu_check.Check) -> dict:
        raise RuntimeError("no such kernel")

    check = gpu_check.Check(argparse.Namespace(dry_run=False), torch.device("cpu"), tmp_path)
    failed = gpu_check.run_section("apex", check, broken)
    assert failed.pop("seconds") >= 0
    assert failed == {"status": "error", "error": "RuntimeError: no such kernel",
                      "budget_s": gpu_check.SECTION_BUDGET_S["apex"]}
    assert gpu_check.run_section("apex", check, lambda check: {"answer": 42})["answer"] == 42


def test_the_overflow_verdict_reads_a_float16_run_log(monkeypatch) -> None:
    """The CPU has no float16, so the dry run cannot overflow: the verdict is checked on the log a
    GPU run writes, built from the messages roberta-train logs."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from gpu_check_runs import BACKOFF_SPLIT, FP16_FALLBACK, OOM_SKIP, OVERFLOW_SKIP, TrainRun, overflow_summary

    sources = "".join((REPO / "roberta" / name).read_text() for name in ("precision.py", "trainer.py", "oom.py"))
    for fragment in (FP16_FALLBACK, OVERFLOW_SKIP, OOM_SKIP, BACKOFF_SPLIT, "precision: %s arithmetic"):
        assert fragment in sources, fragment

    def log(overflows: int, final_loss: str) -> str:
        stamp = "2026-12-06 04:27:34 | INFO"
        lines = [f"{stamp} | roberta.precision | precision: float16 arithmetic, float32 weights, dynamic loss scaling"]
        lines += [f"{stamp} | roberta.trainer | NOTE: {OVERFLOW_SKIP}, setting loss scale to: 4096"] * overflows
        lines += [f'{stamp} | train_inner | {{"loss": "{final_loss if n == 10 else 2.1}", "num_updates": "{n}", '
                  f'"loss_scale": "{2.0 ** 24 / 2 ** overflows:g}"}}' for n in range(1, 11)]
        return "\n".join(lines)

    def handled(text: str) -> bool | None:
        return overflow_summary(TrainRun(0, text, 30.0, 2 ** 33), 2.0 ** 24, 10)["overflow_handled"]

    assert handled(log(12, "1.9"))
    assert not handled(log(0, "1.9")) and not handled(log(12, "nan"))


@pytest.mark.slow
def test_dry_run_runs_every_section_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    result = run_check("--dry-run", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert printed_summary(result) == summary
    assert (summary["status"], summary["mode"], summary["failed_sections"]) == ("ok", "dry-run", [])
    assert {name: summary[name]["status"] for name in SECTIONS} == dict.fromkeys(SECTIONS, "ok"), summary

    assert summary["environment"]["torch"] == torch.__version__
    for row in summary["throughput"]["results"]:
        assert row["status"] == "ok" and row["ours_tok_s"] > 0 and row["hf_tok_s"] > 0, row
        assert row["ours_mfu"] > 0 and row["hf_mfu"] > 0 and row["ratio"] > 0, row
    assert [row["ran_as"] for row in summary["throughput"]["results"]] == ["bfloat16", "float32"]  # fp16 on the CPU

    race = summary["race"]
    assert (race["run"]["exit_code"], race["run"]["updates"]) == (0, 2)
    assert race["run"]["updates_per_s"] > 0 and math.isfinite(race["run"]["final_train_loss"])
    # No float16 on the CPU: the overflow run trains, but nothing can overflow.
    assert race["overflow_run"]["exit_code"] == 0 and race["overflow_run"]["overflow_handled"] is None

    oom = summary["oom"]
    assert oom["simulated"] and oom["skip_then_error"] and oom["recovered_with_backoff"], oom
    without, with_backoff = oom["without_backoff"], oom["with_backoff"]
    assert without["exit_code"] == 1 and without["oom_skips"] == 6 and not without["traceback"]
    assert without["last_log_line"].startswith("roberta-train: error: epoch 1 made no update in 6 step(s): "
                                               "every update ran out of memory")
    assert (with_backoff["exit_code"], with_backoff["oom_skips"], with_backoff["backoff_splits"]) == (0, 2, 1)
    assert math.isfinite(with_backoff["final_train_loss"])

    learning = summary["learning"]
    assert learning["passed"], learning
    for name, run in learning["runs"].items():
        assert run["final_valid_loss"] < run["untrained_loss"] - 0.5, (name, run)
    assert learning["runs"]["fp16"]["within_5pct_of_fp32"] and learning["runs"]["bf16"]["within_5pct_of_fp32"]

    apex = summary["apex"]
    assert not apex["apex_hidden"]["uses_apex"] and apex["apex_hidden"]["step_ms"] > 0
