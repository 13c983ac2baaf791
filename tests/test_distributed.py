"""Several processes (gloo on the CPU): DDP equals accumulation, one writer, exact resume, OOM agreement.

Every run is a real `roberta-train` subprocess that starts two training processes meeting through
a file rendezvous (no fixed port), under a timeout: a rank stuck in a collective fails the test
instead of hanging it.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from roberta.faults import ENVIRONMENT_VARIABLE as FAULTS
from support.logs import json_events
from support.train_args import model_size_flags

pytestmark = pytest.mark.slow

TIMEOUT = 240
UPDATES = 16


def train_command(data: Path, save_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "roberta.cli.train", str(data), "--task", "masked_lm", "--arch", "roberta_tiny",
            *model_size_flags(layers=2, embed_dim=64, ffn_dim=128, heads=2), "--dropout", "0",
            "--attention-dropout", "0", "--sample-break-mode", "complete", "--tokens-per-sample", "64",
            "--max-tokens", "512", "--required-batch-size-multiple", "1", "--skip-invalid-size-inputs-valid-test",
            "--optimizer", "adam", "--lr", "1e-3", "--clip-norm", "1.0", "--save-dir", str(save_dir),
            "--save-interval-updates", "8", "--max-update", str(UPDATES), "--num-workers", "0",
            "--log-format", "json", "--log-interval", "4", "--cpu", *extra]


def two_processes(rendezvous: Path) -> tuple[str, ...]:
    return ("--distributed-world-size", "2", "--distributed-init-method", f"file://{rendezvous}")


def run(command: list[str], faults: str = "") -> subprocess.CompletedProcess:
    # One thread per process in every run, so one process and two use the same kernels.
    env = {**os.environ, FAULTS: faults, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=env)


def succeed(command: list[str], faults: str = "") -> str:
    result = run(command, faults)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def max_difference(a: Path, b: Path) -> float:
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys()
    return max((first[key].double() - second[key].double()).abs().max().item() for key in first)


@pytest.fixture(scope="module")
def runs(demo_data_bin: Path, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """The same 16 updates three ways: one process accumulating 2 mini-batches, and two processes
    with torch DDP (c10d) and with our own all-reduce (no_c10d); each writes TensorBoard events to
    <save dir>.tb."""
    root = tmp_path_factory.mktemp("ddp")
    results = {"single": (root / "single", succeed(train_command(demo_data_bin, root / "single", "--update-freq", "2")))}
    for backend in ("c10d", "no_c10d"):
        save_dir = root / backend
        log = succeed(train_command(demo_data_bin, save_dir, "--ddp-backend", backend,
                                    *two_processes(root / f"{backend}.rendezvous"),
                                    "--tensorboard-logdir", str(root / f"{backend}.tb")))
        results[backend] = (save_dir, log)
    return results


@pytest.mark.parametrize("backend", ["c10d", "no_c10d"])
def test_two_processes_equal_one_process_accumulating_two_mini_batches(runs, backend: str) -> None:
    (single_dir, single_log), (ddp_dir, ddp_log) = runs["single"], runs[backend]
    for name in ("checkpoint_1_8.pt", "checkpoint_last.pt"):
        assert max_difference(single_dir / name, ddp_dir / name) <= 1e-6
    # Validation is sharded over the ranks and summed: the same examples, the same loss.
    single_valid, ddp_valid = json_events(single_log, "valid"), json_events(ddp_log, "valid")
    assert [event["valid_num_examples"] for event in ddp_valid] == [event["valid_num_examples"] for event in single_valid]
    assert [event["valid_loss"] for event in ddp_valid] == [event["valid_loss"] for event in single_valid]
    # Throughput counts the tokens of both ranks.
    assert json_events(ddp_log, "train")[-1]["train_wpb"] == json_events(single_log, "train")[-1]["train_wpb"]


def test_only_rank_zero_logs_and_writes(runs) -> None:
    (single_dir, single_log), (ddp_dir, ddp_log) = runs["single"], runs["c10d"]
    assert sorted(path.name for path in ddp_dir.iterdir()) == sorted(path.name for path in single_dir.iterdir())
    assert ddp_log.count("roberta.checkpoint | saved") == single_log.count("roberta.checkpoint | saved") == 2
    assert ddp_log.count("command line arguments") == 1
    assert ddp_log.count("| train_inner |") == single_log.count("| train_inner |")
    assert "training on 2 processes (gloo, --ddp-backend c10d)" in ddp_log


def test_only_rank_zero_writes_tensorboard_events(runs) -> None:
    pytest.importorskip("tensorboard")
    logdir = runs["c10d"][0].with_suffix(".tb")
    # Another rank writing would add an event file of its own to each folder.
    assert {tag.name: len(list(tag.glob("events.out.tfevents.*"))) for tag in logdir.iterdir()} == {
        "train_inner": 1, "train": 1, "valid": 1}


def test_resume_under_ddp_continues_exactly(runs, demo_data_bin: Path, tmp_path: Path) -> None:
    interrupted = train_command(demo_data_bin, tmp_path, *two_processes(tmp_path / "rendezvous"))
    succeed([*interrupted, "--max-update", "9"])
    log = succeed(interrupted)
    assert "restored" in log and "(update 9)" in log
    assert max_difference(tmp_path / "checkpoint_last.pt", runs["c10d"][0] / "checkpoint_last.pt") <= 1e-6


def test_torchrun_launch_trains_like_the_built_in_launcher(runs, demo_data_bin: Path, tmp_path: Path) -> None:
    command = train_command(demo_data_bin, tmp_path)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "-m", "roberta.cli.train", *command[3:]]
    log = succeed(torchrun)
    assert "training on 2 processes" in log
    assert max_difference(tmp_path / "checkpoint_last.pt", runs["c10d"][0] / "checkpoint_last.pt") <= 1e-6


@pytest.mark.parametrize("backend, second_oom", [("c10d", "forward"), ("no_c10d", "backward")])
def test_oom_on_one_rank_skips_the_update_everywhere_and_backoff_adapts(demo_data_bin: Path, tmp_path: Path,
                                                                         backend: str, second_oom: str) -> None:
    # Two OOMs on rank 1 trigger --oom-backoff; a third comes on rank 0 in the backward pass of
    # the first half of a split mini-batch (accumulated locally, also under torch DDP).
    faults = (f"oom-forward:rank=1:steps=3;oom-{second_oom}:rank=1:steps=5;"
              "oom-backward:rank=0:steps=9:micro_batches=0")
    log = succeed(train_command(demo_data_bin, tmp_path, "--ddp-backend", backend, "--oom-backoff",
                                *two_processes(tmp_path / "rendezvous")), faults)
    assert log.count("attempting to recover from OOM in forward/backward pass") == 3
    assert "OOM: ran out of memory on rank 1 in the forward pass" in log
    assert f"OOM: ran out of memory on rank 1 in the {second_oom} pass" in log
    assert "OOM: ran out of memory in the backward pass" in log
    assert log.count("OOM in 1 of 2 workers, skipping update on all of them") == 3
    assert log.count("--oom-backoff: 2 OOMs at this micro-batch size") == 1
    assert "split in 2 parts" in log
    final = json_events(log, "train")[-1]
    assert (int(final["train_num_updates"]), int(final["train_oom"])) == (UPDATES, 3)


def test_oom_in_every_worker_is_reported_as_such(demo_data_bin: Path, tmp_path: Path) -> None:
    log = succeed(train_command(demo_data_bin, tmp_path, *two_processes(tmp_path / "rendezvous")),
                  "oom-forward:steps=2")
    assert log.count("OOM in all workers, skipping update") == 1
    assert int(json_events(log, "train")[-1]["train_num_updates"]) == UPDATES


def test_oom_inside_torch_ddp_all_reduce_ends_the_run_with_one_line(demo_data_bin: Path, tmp_path: Path) -> None:
    result = run(train_command(demo_data_bin, tmp_path, *two_processes(tmp_path / "rendezvous")),
                 "oom-backward:rank=1:steps=2")
    assert result.returncode == 1
    assert "roberta-train (rank 1): error: out of memory in the backward pass of update 2" in result.stderr
    assert "Use --ddp-backend no_c10d" in result.stderr
    assert "Traceback" not in result.stderr


def test_non_finite_loss_on_one_rank_stops_every_rank_and_keeps_the_last_good_checkpoint(
        demo_data_bin: Path, tmp_path: Path) -> None:
    result = run(train_command(demo_data_bin, tmp_path, "--save-interval-updates", "3",
                               *two_processes(tmp_path / "rendezvous")), "nan-loss:rank=1:steps=8")
    assert result.returncode == 1
    assert "the training loss became nan at update 8" in result.stderr
    assert "Traceback" not in result.stderr
    state = torch.load(tmp_path / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    assert state["optimizer_history"][-1]["num_updates"] == 6
    assert not list(tmp_path.glob("*.tmp*"))


def test_validation_on_two_processes_reports_what_one_process_does(runs, demo_data_bin: Path, tmp_path: Path) -> None:
    # A checkpoint of a two-process run: roberta-validate does not inherit how it was launched (nor, as
    # fairseq-validate, its other run flags such as --skip-invalid-size-inputs-valid-test).
    checkpoint = runs["c10d"][0] / "checkpoint_last.pt"
    command = [sys.executable, "-m", "roberta.cli.validate", str(demo_data_bin), "--path", str(checkpoint),
               "--log-format", "json", "--cpu", "--skip-invalid-size-inputs-valid-test"]
    one_log = succeed(command)
    two_log = succeed([*command, *two_processes(tmp_path / "rendezvous")])
    assert "validating on" not in one_log and "validating on 2 processes" in two_log
    one, two = json_events(one_log, "valid"), json_events(two_log, "valid")
    assert len(one) == len(two) == 1
    assert two[0]["valid_loss"] == one[0]["valid_loss"]
    assert two[0]["valid_num_examples"] == one[0]["valid_num_examples"]
