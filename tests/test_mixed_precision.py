"""Mixed precision: loss scaling in the trainer, fp16 fallback on the CPU, bf16 autocast, flag checks.

The CPU cannot run `--fp16` (it falls back to fp32), so the loss-scaling tests build a
Trainer with a DynamicLossScaler directly; the memory-efficient test forces float16 weights
and autocast on the CPU, which torch supports (slowly) for a model this small.
"""
from __future__ import annotations

import copy
import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from criterions.masked_lm import MaskedLMCriterion
from roberta.checkpoint.restore import Resets, restored_parts
from roberta.cli import options
from roberta.cli import train
from roberta.errors import UserError
from roberta.models import ModelConfig, RobertaModel
from roberta.optim.adam import Adam
from roberta.optim.loss_scaler import NO_LOSS_SCALING, DynamicLossScaler, LossScaler
from roberta.optim.lr_scheduler.fixed import FixedSchedule
from roberta.precision import FP32, Precision
from roberta.trainer import Trainer
from support.logs import json_events

REPO = Path(__file__).resolve().parent.parent
FALLBACK = "needs a CUDA GPU; running in fp32 on the CPU (the loss-scaling flags are ignored)"


def make_batch(seed: int, size: int = 8, length: int = 16) -> dict:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(4, 60, (size, length), generator=generator)
    tokens[:, 0] = 0
    chosen = torch.rand(size, length, generator=generator) < 0.3
    chosen[:, 0] = False
    target = torch.full_like(tokens, 1).masked_scatter(chosen, tokens[chosen])
    return {"id": torch.arange(size), "nsentences": size, "ntokens": size * length,
            "net_input": {"src_tokens": tokens.masked_fill(chosen, 63)}, "target": target}


class InfLossOnCalls(MaskedLMCriterion):
    """The masked-LM loss, made infinite on the chosen (1-based) calls: an injected fp16 overflow."""

    def __init__(self, bad_calls: set[int]) -> None:
        super().__init__(padding_idx=1)
        self.bad_calls = bad_calls
        self.calls = 0

    def forward(self, model: torch.nn.Module, sample: dict) -> tuple[torch.Tensor, int, dict]:
        loss, sample_size, logging_output = super().forward(model, sample)
        self.calls += 1
        return (loss * math.inf if self.calls in self.bad_calls else loss), sample_size, logging_output


@pytest.fixture
def model() -> RobertaModel:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=64, encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
                         encoder_attention_heads=4, max_positions=32, dropout=0.1, attention_dropout=0.1)
    return RobertaModel(config)


def make_trainer(model: RobertaModel, criterion: MaskedLMCriterion | None = None, *,
                 scaler: LossScaler = NO_LOSS_SCALING, precision: Precision = FP32) -> Trainer:
    optimizer = Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    return Trainer(model, criterion or MaskedLMCriterion(padding_idx=1), optimizer,
                   FixedSchedule(optimizer, [1e-3]), device=torch.device("cpu"), clip_norm=1.0,
                   precision=precision, loss_scaler=scaler)


def weights(trainer: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.model.parameters()]


def test_overflow_skips_exactly_that_update_and_training_goes_on(model: RobertaModel, caplog) -> None:
    scaled = make_trainer(copy.deepcopy(model), InfLossOnCalls({2}), scaler=DynamicLossScaler(128.0))
    plain = make_trainer(copy.deepcopy(model))
    assert scaled.train_step([make_batch(1)]) is not None
    before = weights(scaled)
    with caplog.at_level(logging.INFO, logger="roberta.trainer"):
        assert scaled.train_step([make_batch(2)]) is None
    assert all(torch.equal(a, b) for a, b in zip(before, weights(scaled)))
    assert scaled.num_updates == 1 and scaled.get_lr() == 1e-3
    assert scaled.extra_stats() == {"loss_scale": 64.0}
    assert "gradient overflow detected, ignoring gradient, setting loss scale to: 64" in caplog.text
    assert scaled.train_step([make_batch(3)]) is not None
    # As if batch 2 never came: same weights as an unscaled run on batches 1 and 3 (the dropout
    # seed follows num_updates, and power-of-two scales are undone exactly in fp32).
    plain.train_step([make_batch(1)])
    plain.train_step([make_batch(3)])
    assert scaled.num_updates == plain.num_updates == 2
    for a, b in zip(weights(scaled), weights(plain)):
        assert torch.equal(a, b)


def test_non_finite_gradient_without_a_scaler_still_stops(model: RobertaModel) -> None:
    trainer = make_trainer(model, InfLossOnCalls({1}))
    with pytest.raises(UserError, match="gradient norm became"):
        trainer.train_step([make_batch(1)])


@pytest.mark.parametrize("reset_optimizer", [False, True])
def test_loss_scaler_state_is_checkpointed_with_the_optimizer(model: RobertaModel,
                                                              reset_optimizer: bool) -> None:
    trainer = make_trainer(copy.deepcopy(model), InfLossOnCalls({2}), scaler=DynamicLossScaler(128.0))
    for seed in (1, 2, 3):
        trainer.train_step([make_batch(seed)])
    state = trainer.checkpoint_state({}, {"train_iterator": {"epoch": 1}})
    assert state["last_optimizer_state"]["loss_scale"] == 64.0
    resumed = make_trainer(copy.deepcopy(model), InfLossOnCalls(set()), scaler=DynamicLossScaler(128.0))
    resumed.restore(restored_parts(state, Resets(optimizer=reset_optimizer))[0], path="ckpt.pt")
    expected = DynamicLossScaler(128.0).state_dict() if reset_optimizer else trainer.loss_scaler.state_dict()
    assert resumed.loss_scaler.state_dict() == expected
    fp32_run = make_trainer(copy.deepcopy(model), InfLossOnCalls(set()))
    fp32_run.restore(restored_parts(state, Resets())[0], path="ckpt.pt")  # the scale is simply not needed
    assert fp32_run.extra_stats() == {}


def test_memory_efficient_fp16_keeps_16_bit_weights_and_finds_a_working_scale(model: RobertaModel) -> None:
    """An initial scale far too high overflows for real (no injection) until the scaler backs off."""
    scaler = DynamicLossScaler(2.0 ** 15, scale_window=5)
    trainer = make_trainer(model, scaler=scaler,
                           precision=Precision(torch.float16, torch.float16, loss_scaling=True))
    batch = make_batch(1)
    results = [trainer.train_step([batch]) for _ in range(30)]
    losses = [r["logging_output"]["loss"] / r["logging_output"]["sample_size"] for r in results if r]
    assert results[0] is None and scaler.scale < 2.0 ** 15
    assert trainer.num_updates == len(losses) >= 20
    assert losses[-1] < 0.9 * losses[0]
    assert all(p.dtype == torch.float16 for p in trainer.model.parameters())
    assert all(s["exp_avg_sq"].dtype == torch.float32 for s in trainer.optimizer.state.values())


def tiny_run(data: Path, save_dir: Path, *extra: str) -> list[str]:
    return [str(data), "--arch", "roberta_tiny", "--sample-break-mode", "none", "--tokens-per-sample", "64",
            "--max-tokens", "1024", "--lr", "3e-3", "--lr-scheduler", "polynomial_decay", "--warmup-updates", "5",
            "--dropout", "0.0", "--attention-dropout", "0.0", "--save-dir", str(save_dir), "--no-epoch-checkpoints",
            "--num-workers", "0", "--seed", "3", "--log-format", "json", "--cpu", *extra]


def final_valid_loss(stderr: str) -> float:
    return float(json_events(stderr, "valid")[-1]["valid_loss"])


@pytest.mark.parametrize("flag", ["--fp16", "--memory-efficient-fp16"])
def test_fp16_on_the_cpu_warns_once_and_trains_in_fp32(demo_data_bin: Path, tmp_path: Path, capfd,
                                                       flag: str) -> None:
    train.main(tiny_run(demo_data_bin, tmp_path, flag, "--max-update", "3", "--total-num-update", "20",
                        "--fp16-init-scale", "4"))
    err = capfd.readouterr().err
    assert err.count(FALLBACK) == 1 and f"{flag} {FALLBACK}" in err
    assert "loss_scale" not in err.split(FALLBACK, 1)[1]
    assert math.isfinite(final_valid_loss(err))


def test_bf16_autocast_on_the_cpu_trains_like_fp32(demo_data_bin: Path, tmp_path: Path, capfd) -> None:
    schedule = ("--max-update", "30", "--total-num-update", "30", "--max-tokens", "512", "--log-interval", "1")
    train.main(tiny_run(demo_data_bin, tmp_path / "fp32", *schedule))
    err = capfd.readouterr().err
    fp32, untrained = final_valid_loss(err), float(json_events(err, "train_inner")[0]["loss"])
    train.main(tiny_run(demo_data_bin, tmp_path / "bf16", *schedule, "--bf16"))
    err = capfd.readouterr().err
    bf16 = final_valid_loss(err)
    assert "precision: bfloat16 arithmetic, float32 weights" in err
    assert abs(bf16 - fp32) < 0.05 * fp32 and bf16 < untrained - 0.3, (bf16, fp32, untrained)
    # The logged losses agree to the printed digits; the weights show that bf16 really ran.
    fp32_bias, bf16_bias = (torch.load(tmp_path / run / "checkpoint_last.pt", weights_only=True)["model"]
                            ["encoder.lm_head.bias"] for run in ("fp32", "bf16"))
    assert bf16_bias.dtype == torch.float32 and not torch.equal(fp32_bias, bf16_bias)


def test_fp16_with_bf16_fails_in_one_line_before_reading_data(tmp_path: Path) -> None:
    argv = tiny_run(tmp_path / "nowhere", tmp_path, "--fp16", "--bf16")
    result = subprocess.run([sys.executable, "-m", "roberta.cli.train", *argv], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("roberta-train: error: --fp16 and --bf16 cannot be combined"), result.stderr


def test_per_epoch_update_freq_needs_an_explicit_scale_window(tmp_path: Path) -> None:
    argv = tiny_run(tmp_path / "nowhere", tmp_path, "--fp16", "--update-freq", "2,1")
    with pytest.raises(UserError, match="--fp16-scale-window explicitly"):
        options.parse_args(argv, train=True)
    options.parse_args([*argv, "--fp16-scale-window", "128"], train=True)
