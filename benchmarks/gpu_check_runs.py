"""The GPU check's roberta-train runs (gpu_check.py's race, oom and learning sections): each
section makes its own data, runs `python -m roberta.cli.train` on it in subprocesses stopped at
the section's deadline, and reads its verdicts from their logs and recorded peak GPU memory.
"""
from __future__ import annotations

import json
import math
import os
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from roberta.cli import preprocess
from roberta.data.dictionary import Dictionary
from roberta.data.indexed_dataset import MMapIndexedDatasetBuilder, best_fitting_dtype, data_file_path, index_file_path
from roberta.demo_corpus import make_race_exam, write_corpus
from roberta.faults import ENVIRONMENT_VARIABLE as FAULTS

# gpu_check.py, run as a script, puts this directory on sys.path: the masked-LM data is the
# throughput benchmark's token corpus.
from mlm_training_throughput import token_corpus

if TYPE_CHECKING:  # gpu_check.py imports this module
    from gpu_check import Check

REPO = Path(__file__).resolve().parents[1]
# roberta_large shrunk to the tiny sizes, for the roberta-train runs of --dry-run.
DRY_SIZE_FLAGS = ["--encoder-layers", "2", "--encoder-embed-dim", "64", "--encoder-ffn-embed-dim", "256",
                  "--encoder-attention-heads", "4"]
ROBERTA_DICT_ENTRIES = 50260  # the release's dict.txt; + 4 specials + <mask> = 50265 embeddings
# fairseq's RACE recipe; every flag exists in roberta-train (checked against --help), none dropped.
RACE_RECIPE = ["--task", "sentence_ranking", "--num-classes", "4", "--init-token", "0", "--separator-token", "2",
               "--max-option-length", "128", "--max-positions", "512", "--shorten-method", "truncate",
               "--arch", "roberta_large", "--dropout", "0.1", "--attention-dropout", "0.1", "--weight-decay", "0.01",
               "--criterion", "sentence_ranking", "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)",
               "--adam-eps", "1e-06", "--clip-norm", "0.0", "--lr-scheduler", "polynomial_decay", "--lr", "1e-05",
               "--warmup-updates", "5", "--total-num-update", "40", "--max-update", "30", "--fp16",
               "--fp16-init-scale", "4", "--threshold-loss-scale", "1", "--fp16-scale-window", "128",
               "--max-sentences", "1", "--update-freq", "2", "--log-format", "json", "--log-interval", "1"]
RACE_WARMUP_UPDATES = 5  # logged updates left out of the updates/s median
LEARNING_UPDATES = {"gpu": 100, "dry-run": 60}
LEARNED_MARGIN_BITS = 0.5  # learned: the final valid loss at least this far below the untrained one
# What roberta-train logs (roberta/precision.py, roberta/trainer.py, roberta/oom.py) and this check reads.
FP16_FALLBACK = "needs a CUDA GPU; running in fp32 on the CPU"
OVERFLOW_SKIP = "gradient overflow detected, ignoring gradient"
OOM_SKIP = "OOM in all workers, skipping update"
BACKOFF_SPLIT = "--oom-backoff: "
# `python -m roberta.cli.train`, plus the CUDA allocator's peak written to argv[1] at exit: the CLI
# does not log memory, and only the process that trained can read its peak.
TRAIN_RECORDING_PEAK = """\
import atexit, sys, torch
from roberta.cli.train import cli_main
peak_file = sys.argv.pop(1)
sys.argv[0] = "roberta-train"
if torch.cuda.is_available():
    atexit.register(lambda: open(peak_file, "w").write(str(torch.cuda.max_memory_allocated())))
cli_main()
"""


# ---- roberta-train runs ----

@dataclass
class TrainRun:
    """A finished roberta-train process: exit status (None: stopped at the section's deadline),
    its log (stderr and stdout), and the peak GPU memory it allocated."""
    returncode: int | None
    log: str
    seconds: float
    peak_bytes: int | None

    def events(self, tag: str) -> list[dict]:
        """The records of `--log-format json` lines tagged `tag` (train_inner, train, valid)."""
        return [json.loads(line.split(f"| {tag} | ", 1)[1]) for line in self.log.splitlines() if f"| {tag} | " in line]

    def count(self, fragment: str) -> int:
        return sum(fragment in line for line in self.log.splitlines())

    @property
    def ran_as(self) -> str:
        """The arithmetic roberta-train chose, from its precision line."""
        found = re.search(r"precision: (\w+) arithmetic", self.log)
        return found.group(1) if found else "float32 (fp16 fell back on the CPU)" if FP16_FALLBACK in self.log else "?"

    def summary(self) -> dict:
        inner, lines = self.events("train_inner"), self.log.strip().splitlines()
        return {"exit_code": self.returncode, "timed_out": self.returncode is None,
                "seconds": round(self.seconds, 1), "ran_as": self.ran_as,
                "updates": int(inner[-1]["num_updates"]) if inner else 0,
                "final_train_loss": float(inner[-1]["loss"]) if inner else None,
                "peak_memory_gib": None if self.peak_bytes is None else round(self.peak_bytes / 2 ** 30, 2),
                "last_log_line": lines[-1][-400:] if lines else ""}


def child_env(check: Check, faults: str | None = None) -> dict[str, str]:
    # The checkout first on the path, whatever an installed copy points at; faults only when asked.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop(FAULTS, None)
    if faults:
        env[FAULTS] = faults
    if check.dry:
        # The runs share two cores with each other and with whatever else runs: with more
        # threads than cores, each thread mostly waits for the others.
        env["OMP_NUM_THREADS"] = "1"
    return env


def train_runs(check: Check, runs: dict[str, tuple[list[str], str | None]]) -> dict[str, TrainRun]:
    """roberta-train once per entry (name: (argv, injected faults)), all at once, each stopped at
    the section's deadline."""
    common = ["--distributed-world-size", "1", "--no-save"] + (["--cpu"] if check.dry else [])
    started = {}
    for name, (argv, faults) in runs.items():
        log, peak = check.work / f"{name}.log", check.work / f"{name}.peak"
        command = [sys.executable, "-c", TRAIN_RECORDING_PEAK, str(peak), *argv, *common,
                   "--save-dir", str(check.work / f"{name}.checkpoints")]
        with open(log, "w", encoding="utf-8") as handle:
            process = subprocess.Popen(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT,
                                       env=child_env(check, faults))
        started[name] = (process, log, peak, time.monotonic())
    finished = {}
    for name, (process, log, peak, start) in started.items():
        try:
            code: int | None = process.wait(timeout=max(check.remaining(), 1.0))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            code = None
        finished[name] = TrainRun(code, log.read_text(encoding="utf-8", errors="replace"),
                                  time.monotonic() - start, int(peak.read_text()) if peak.exists() else None)
    return finished


def full_size_dictionary(symbols: list[str]) -> Dictionary:
    """`symbols`, then filler entries up to the RoBERTa release's size: models built on it have
    RoBERTa's 50265 embeddings, as in a real fine-tuning run."""
    dictionary = Dictionary()
    for symbol in symbols:
        dictionary.add_symbol(symbol)
    for number in range(ROBERTA_DICT_ENTRIES - (len(dictionary) - dictionary.nspecial)):
        dictionary.add_symbol(f"madeupword{number:05d}")
    return dictionary


# ---- RACE ----

def race_section(check: Check) -> dict:
    data = write_race_data(check, check.work / "race", {"train": 4 if check.dry else 20, "dev": 1, "test": 1})
    # --dry-run: the tiny model, 128-token windows, two updates.
    recipe = [str(data), *RACE_RECIPE, "--seed", "1"] + (
        [*DRY_SIZE_FLAGS, "--max-positions", "128", "--max-update", "2"] if check.dry else [])
    overflow_updates = 2 if check.dry else 10
    overflow_flags = ["--fp16-init-scale", f"{check.args.overflow_init_scale:g}", "--max-update", str(overflow_updates)]
    normal = train_runs(check, {"race": (recipe, None)})["race"]
    overflow = train_runs(check, {"race_overflow": ([*recipe, *overflow_flags], None)})["race_overflow"]
    inner = normal.events("train_inner")
    rates = [float(event["ups"]) for event in inner[min(RACE_WARMUP_UPDATES, len(inner) // 2):]]
    return {"flags": shlex.join(RACE_RECIPE),
            "run": {**normal.summary(), "updates_per_s": statistics.median(rates) if rates else None},
            "overflow_run": overflow_summary(overflow, check.args.overflow_init_scale, overflow_updates)}


def overflow_summary(run: TrainRun, init_scale: float, max_update: int) -> dict:
    """Whether overflowing updates were skipped, the scale fell and training went on to a finite loss."""
    scales = [float(event["loss_scale"]) for event in run.events("train_inner") if "loss_scale" in event]
    summary = {**run.summary(), "init_scale": init_scale,
               "overflow_skips": run.count(OVERFLOW_SKIP),
               "first_logged_scale": scales[0] if scales else None, "last_logged_scale": scales[-1] if scales else None}
    if run.ran_as != "float16":
        return {**summary, "overflow_handled": None, "note": "no float16 on this device: nothing can overflow"}
    loss = summary["final_train_loss"]
    handled = (run.returncode == 0 and summary["overflow_skips"] > 0 and bool(scales) and scales[-1] < init_scale
               and summary["updates"] == max_update and loss is not None and math.isfinite(loss))
    return {**summary, "overflow_handled": handled}


def write_race_data(check: Check, root: Path, exams: dict[str, int]) -> Path:
    """Generated RACE exams extracted by scripts/preprocess_race.py and binarized word by word, as
    tests/support/race_data.py does; here the articles fill 512 tokens and the dictionary has
    RoBERTa's size, so memory and speed are those of a real RACE run."""
    rng = random.Random(1)
    for split, count in exams.items():
        for level in ("middle", "high"):
            folder = root / "RACE" / split / level
            folder.mkdir(parents=True)
            for number in range(count):
                exam = make_race_exam(rng, questions=2, fillers=60)
                (folder / f"{number}.txt").write_text(json.dumps(exam), encoding="utf-8")
    extracted = root / "extracted"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "preprocess_race.py"), "--input-dir",
                             str(root / "RACE"), "--output-dir", str(extracted)],
                            capture_output=True, text=True, env=child_env(check), timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"preprocess_race.py failed: {result.stderr.strip()[-500:]}")
    inputs = [extracted / f"{split}.input{k}" for split in ("train", "dev") for k in range(5)]
    words = sorted({word for path in inputs for word in path.read_text(encoding="utf-8").split()})
    full_size_dictionary(words).save(root / "dict.txt")
    data = root / "data-bin"
    for k in range(5):
        preprocess.main(["--only-source", "--srcdict", str(root / "dict.txt"), "--trainpref",
                         str(extracted / f"train.input{k}"), "--validpref", str(extracted / f"dev.input{k}"),
                         "--destdir", str(data / f"input{k}"), "--workers", "1"])
    (data / "label").mkdir()
    for source, split in (("train", "train"), ("dev", "valid")):
        shutil.copyfile(extracted / f"{source}.label", data / "label" / f"{split}.label")
    return data


# ---- OOM ----

def oom_section(check: Check) -> dict:
    batch, seq_len, steps = (8, 64, 6) if check.dry else (check.args.oom_batch_size, 512, 16)
    data = write_random_mlm_data(check.work / "oom", steps * batch, seq_len)
    flags = [str(data), "--task", "masked_lm", "--criterion", "masked_lm", "--arch", "roberta_large",
             "--tokens-per-sample", str(seq_len), "--sample-break-mode", "none", "--batch-size", str(batch),
             "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--adam-eps", "1e-06", "--lr", "1e-4",
             "--lr-scheduler", "polynomial_decay", "--warmup-updates", "1", "--total-num-update", "10", "--bf16",
             "--disable-validation", "--log-format", "json", "--log-interval", "1", "--num-workers", "0",
             "--seed", "1", *(DRY_SIZE_FLAGS if check.dry else [])]
    # The CPU cannot run out of memory on cue: --dry-run injects the CUDA OOM error roberta-train
    # meets, in every update without backoff, and in the first two (one split then fits) with it.
    faults = ("oom-forward", "oom-forward:steps=1,2") if check.dry else (None, None)
    backoff_updates = 2 if check.dry else 3
    without = train_runs(check, {"oom_without_backoff": (flags, faults[0])})["oom_without_backoff"]
    recovering = train_runs(check, {"oom_with_backoff": (
        [*flags, "--oom-backoff", "--max-update", str(backoff_updates)], faults[1])})["oom_with_backoff"]
    first = {**without.summary(), "oom_skips": without.count(OOM_SKIP),
             "traceback": "Traceback" in without.log}
    second = {**recovering.summary(), "oom_skips": recovering.count(OOM_SKIP),
              "backoff_splits": recovering.count(BACKOFF_SPLIT)}
    loss = second["final_train_loss"]
    return {"batch": f"{batch}x{seq_len}", "simulated": check.dry, "without_backoff": first, "with_backoff": second,
            "skip_then_error": (first["exit_code"] == 1 and first["oom_skips"] == steps and not first["traceback"]
                                and first["last_log_line"].startswith("roberta-train: error: ")
                                and "every update ran out of memory" in first["last_log_line"]),
            "recovered_with_backoff": (second["exit_code"] == 0 and second["oom_skips"] > 0
                                       and second["backoff_splits"] > 0 and second["updates"] == backoff_updates
                                       and loss is not None and math.isfinite(loss))}


def write_random_mlm_data(root: Path, blocks: int, block_size: int) -> Path:
    """A masked-LM data folder of random lines holding exactly `blocks` blocks of `block_size`
    tokens (`--sample-break-mode none` prepends <s> to each), over a RoBERTa-sized dictionary."""
    root.mkdir(parents=True)
    dictionary = full_size_dictionary([])
    dictionary.save(root / "dict.txt")
    lines, _ = token_corpus(blocks * (block_size - 1), seed=1)
    prefix = root / "train"
    with MMapIndexedDatasetBuilder(data_file_path(prefix), dtype=best_fitting_dtype(len(dictionary))) as builder:
        for line in lines:
            builder.add_item(line)
        builder.finalize(index_file_path(prefix))
    return root


# ---- learning ----

def learning_section(check: Check) -> dict:
    data = check.work / "demo" / "data-bin"
    train = write_corpus(check.work / "demo" / "train.txt", 500, seed=1)
    valid = write_corpus(check.work / "demo" / "valid.txt", 30, seed=2)
    preprocess.main(["--only-source", "--trainpref", str(train), "--validpref", str(valid), "--destdir", str(data),
                     "--workers", "1"])
    updates = LEARNING_UPDATES["dry-run" if check.dry else "gpu"]
    # test_mixed_precision.py's tiny run, on words (no BPE): a learnable grammar, no dropout.
    flags = [str(data), "--task", "masked_lm", "--arch", "roberta_tiny", "--sample-break-mode", "none",
             "--tokens-per-sample", "64", "--max-tokens", "512", "--lr", "3e-3", "--lr-scheduler", "polynomial_decay",
             "--warmup-updates", "10", "--max-update", str(updates), "--total-num-update", str(updates),
             "--dropout", "0.0", "--attention-dropout", "0.0", "--num-workers", "0", "--seed", "3", "--log-format",
             "json", "--log-interval", "1"]
    precisions = {"fp32": [], "fp16": ["--fp16"], "bf16": ["--bf16"]}
    runs = train_runs(check, {f"learning_{name}": ([*flags, *extra], None) for name, extra in precisions.items()})
    results = {name: learning_summary(runs[f"learning_{name}"]) for name in precisions}
    fp32 = results["fp32"]["final_valid_loss"]
    for name in ("fp16", "bf16"):
        loss = results[name]["final_valid_loss"]
        results[name]["within_5pct_of_fp32"] = None if loss is None or fp32 is None else abs(loss - fp32) <= 0.05 * fp32
    passed = all(r["learned"] for r in results.values()) and all(results[n]["within_5pct_of_fp32"]
                                                                 for n in ("fp16", "bf16"))
    return {"updates": updates, "learned_margin_bits": LEARNED_MARGIN_BITS, "runs": results, "passed": passed}


def learning_summary(run: TrainRun) -> dict:
    """The untrained loss (update 1's, logged before its step) and the final valid loss, in bits."""
    inner, valid = run.events("train_inner"), run.events("valid")
    untrained = float(inner[0]["loss"]) if inner else None
    final = float(valid[-1]["valid_loss"]) if valid else None
    learned = untrained is not None and final is not None and final <= untrained - LEARNED_MARGIN_BITS
    return {**run.summary(), "untrained_loss": untrained, "final_valid_loss": final, "learned": learned}
