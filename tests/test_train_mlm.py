"""End to end: roberta-train masked-LM learns, resumes exactly, and roberta-validate agrees."""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from roberta.cli import train, validate
from roberta.data.indexed_dataset import MMapIndexedDataset
from support.logs import json_events
from support.train_args import LEARNING_SIZES, tiny_run


def unigram_bits(data: Path) -> float:
    """Cross-entropy (bits/token) of valid tokens under the add-one unigram model of train."""
    train_tokens = np.concatenate([t.numpy() for t in MMapIndexedDataset(str(data / "train"))])
    valid_tokens = np.concatenate([t.numpy() for t in MMapIndexedDataset(str(data / "valid"))])
    counts = Counter(train_tokens.tolist())
    vocab = sum(1 for _ in open(data / "dict.txt")) + 5
    total = len(train_tokens) + vocab
    return float(-np.mean([math.log2((counts.get(t, 0) + 1) / total) for t in valid_tokens.tolist()]))


def learning_run(data: Path, save_dir: Path, updates: int) -> list[str]:
    return tiny_run(data, save_dir, "--lr", "3e-3", "--max-update", str(updates), "--total-num-update",
                    str(updates), "--warmup-updates", "30", "--dropout", "0.0", "--attention-dropout", "0.0",
                    *LEARNING_SIZES, "--sample-break-mode", "none", "--tokens-per-sample", "64",
                    "--no-epoch-checkpoints", "--validate-interval", "100")


@pytest.mark.slow
def test_learns_real_text_far_below_unigram(austen_data_bin: Path, tmp_path: Path, capfd) -> None:
    """A broken model (no usable context, wrong targets) stays at or above the unigram line."""
    train.main(learning_run(austen_data_bin, tmp_path, 300))
    final = json_events(capfd.readouterr().err, "valid")[-1]
    baseline_ppl = 2 ** unigram_bits(austen_data_bin)
    assert float(final["valid_ppl"]) < 0.75 * baseline_ppl, (final, baseline_ppl)


@pytest.mark.slow
def test_learns_generated_grammar(demo_data_bin: Path, tmp_path: Path, capfd) -> None:
    train.main(learning_run(demo_data_bin, tmp_path, 300))
    final = json_events(capfd.readouterr().err, "valid")[-1]
    assert float(final["valid_ppl"]) < 0.75 * 2 ** unigram_bits(demo_data_bin), final


def test_resume_mid_epoch_gives_identical_weights(demo_data_bin: Path, tmp_path: Path) -> None:
    schedule = ["--lr", "1e-3", "--total-num-update", "24", "--save-interval-updates", "5"]
    train.main(tiny_run(demo_data_bin, tmp_path / "straight", *schedule, "--max-update", "24"))
    train.main(tiny_run(demo_data_bin, tmp_path / "resumed", *schedule, "--max-update", "13"))
    state = torch.load(tmp_path / "resumed" / "checkpoint_last.pt", weights_only=True)
    assert state["extra_state"]["train_iterator"]["iterations_in_epoch"] > 0, "stop must fall mid-epoch"
    train.main(tiny_run(demo_data_bin, tmp_path / "resumed", *schedule, "--max-update", "24"))
    straight = torch.load(tmp_path / "straight" / "checkpoint_last.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "checkpoint_last.pt", weights_only=True)
    assert resumed["optimizer_history"][-1]["num_updates"] == 24
    for key, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][key]), key
    for state_a, state_b in zip(straight["last_optimizer_state"]["state"].values(),
                                resumed["last_optimizer_state"]["state"].values()):
        assert torch.equal(state_a["exp_avg_sq"], state_b["exp_avg_sq"])


def test_validate_reports_the_training_metrics(demo_data_bin: Path, tmp_path: Path, capfd) -> None:
    train.main(tiny_run(demo_data_bin, tmp_path, "--lr", "1e-3", "--max-update", "12",
                        "--total-num-update", "12"))
    trained = json_events(capfd.readouterr().err, "valid")[-1]
    validate.main([str(demo_data_bin), "--path", str(tmp_path / "checkpoint_last.pt"),
                   "--log-format", "json", "--cpu"])
    checked = json_events(capfd.readouterr().err, "valid")[-1]
    assert checked["valid_loss"] == trained["valid_loss"]
    assert checked["valid_num_examples"] == trained["valid_num_examples"]


def test_interval_logs_carry_fairseq_fields(demo_data_bin: Path, tmp_path: Path, capfd) -> None:
    train.main(tiny_run(demo_data_bin, tmp_path, "--lr", "1e-3", "--max-update", "10",
                        "--total-num-update", "20", "--log-file", str(tmp_path / "train.log")))
    inner = json_events(capfd.readouterr().err, "train_inner")[-1]
    for field in ("loss", "ppl", "wps", "ups", "wpb", "bsz", "num_updates", "lr", "gnorm", "clip",
                  "train_wall", "wall"):
        assert field in inner, field
    assert inner["num_updates"] == "10"
    assert "train_inner" in (tmp_path / "train.log").read_text()


@pytest.mark.parametrize("break_mode", ["none", "complete_doc", "eos"])
def test_sample_break_modes_train(demo_data_bin: Path, tmp_path: Path, break_mode: str) -> None:
    train.main(tiny_run(demo_data_bin, tmp_path, "--lr", "1e-3", "--max-update", "2", "--total-num-update", "20",
                        "--sample-break-mode", break_mode, "--tokens-per-sample", "128"))
    assert (tmp_path / "checkpoint_last.pt").is_file()


def test_whole_word_and_span_masking_flags(demo_data_bin: Path, tmp_path: Path) -> None:
    bpe_dir = demo_data_bin.parent / "bpe"
    train.main(tiny_run(demo_data_bin, tmp_path, "--lr", "1e-3", "--max-update", "2", "--total-num-update", "20",
                        "--mask-whole-words", "--bpe", "gpt2", "--gpt2-encoder-json", str(bpe_dir / "encoder.json"),
                        "--gpt2-vocab-bpe", str(bpe_dir / "vocab.bpe"), "--mask-multiple-length", "2"))
    assert (tmp_path / "checkpoint_last.pt").is_file()


def test_whole_word_masking_without_bpe_is_refused(demo_data_bin: Path, tmp_path: Path) -> None:
    from roberta.errors import UserError
    with pytest.raises(UserError, match="--mask-whole-words needs --bpe"):
        train.main(tiny_run(demo_data_bin, tmp_path, "--mask-whole-words", "--max-update", "1"))


def test_rerunning_a_finished_run_trains_no_further(demo_data_bin: Path, tmp_path: Path, capfd) -> None:
    args = tiny_run(demo_data_bin, tmp_path, "--lr", "1e-3", "--max-update", "4", "--total-num-update", "20")
    train.main(args)
    before = (tmp_path / "checkpoint_last.pt").read_bytes()
    train.main(args)
    assert "already at --max-update 4: nothing to train" in capfd.readouterr().err
    assert (tmp_path / "checkpoint_last.pt").read_bytes() == before
