"""Layer-wise LR decay: the groups and their factors, scheduled LRs, resumes, the CLI flags."""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest
import torch

from roberta.cli import train
from roberta.cli.settings import settings_from_flags
from roberta.errors import UserError
from roberta.models import RobertaModel
from roberta.models.config import ModelConfig
from roberta.optim import add_optimization_args
from roberta.optim.adam import Adam
from roberta.optim.layer_decay import align_saved_groups, describe_param_groups, layer_decay_param_groups
from roberta.registry import LR_SCHEDULERS
from support.cli import assert_one_line_error, run_cli
from support.logs import json_events
from support.train_args import tiny_run

DECAY = 0.5
LAYERS = 3


def tiny_model(*, untie: bool = False, seed: int = 0) -> RobertaModel:
    torch.manual_seed(seed)
    model = RobertaModel(ModelConfig(vocab_size=40, encoder_layers=LAYERS, encoder_embed_dim=16,
                                     encoder_ffn_embed_dim=32, encoder_attention_heads=2, max_positions=24,
                                     untie_weights_roberta=untie))
    model.register_classification_head("sentence_classification_head", 3)
    return model


def expected_factor(name: str) -> float:
    """The factor the issue asks for, written out per name: top layer and heads 1, embeddings least."""
    body = "encoder.sentence_encoder."
    for k in range(LAYERS):
        if name.startswith(f"{body}layers.{k}."):
            return DECAY ** (LAYERS - 1 - k)
    if name.startswith((f"{body}embed_tokens.", f"{body}embed_positions.", f"{body}layernorm_embedding.")):
        return DECAY ** LAYERS
    assert name.startswith(("encoder.lm_head.", "classification_heads.")), name
    return 1.0


def factor_of(groups: list[dict]) -> dict[int, float]:
    return {id(p): group["lr_scale"] for group in groups for p in group["params"]}


def test_every_trainable_parameter_in_one_group_with_its_factor() -> None:
    model = tiny_model()
    groups = layer_decay_param_groups(model, DECAY, LAYERS)
    placed = [p for group in groups for p in group["params"]]
    assert len(placed) == len({id(p) for p in placed}) == len(list(model.parameters()))
    assert [g["name"] for g in groups] == ["layer 2 + heads", "layer 1", "layer 0", "embeddings"]
    assert [g["lr_scale"] for g in groups] == [1.0, 0.5, 0.25, 0.125]
    factors = factor_of(groups)
    for name, param in model.named_parameters(remove_duplicate=False):
        if name == "encoder.lm_head.weight":
            continue  # the same Parameter as embed_tokens.weight, checked below
        assert factors[id(param)] == expected_factor(name), name


def test_tied_lm_head_weight_sits_once_with_the_embeddings() -> None:
    model = tiny_model()
    tied = model.encoder.lm_head.weight
    assert tied is model.encoder.sentence_encoder.embed_tokens.weight
    groups = layer_decay_param_groups(model, DECAY, LAYERS)
    holders = [g["name"] for g in groups for p in g["params"] if p is tied]
    assert holders == ["embeddings"]

    untied = tiny_model(untie=True)
    factors = factor_of(layer_decay_param_groups(untied, DECAY, LAYERS))
    assert factors[id(untied.encoder.lm_head.weight)] == 1.0
    assert factors[id(untied.encoder.sentence_encoder.embed_tokens.weight)] == DECAY ** LAYERS


def test_frozen_parameters_are_left_out() -> None:
    model = tiny_model()
    for param in model.encoder.sentence_encoder.layers[0].parameters():
        param.requires_grad_(False)
    model.encoder.sentence_encoder.embed_positions.weight.requires_grad_(False)
    groups = layer_decay_param_groups(model, DECAY, LAYERS)
    assert [g["name"] for g in groups] == ["layer 2 + heads", "layer 1", "embeddings"]
    placed = {id(p) for g in groups for p in g["params"]}
    assert placed == {id(p) for p in model.parameters() if p.requires_grad}


def test_groups_are_the_same_for_the_same_model() -> None:
    first = layer_decay_param_groups(tiny_model(seed=1), DECAY, LAYERS)
    second = layer_decay_param_groups(tiny_model(seed=2), DECAY, LAYERS)
    assert [(g["name"], [p.shape for p in g["params"]]) for g in first] == \
           [(g["name"], [p.shape for p in g["params"]]) for g in second]


def test_summary_line_lists_every_factor() -> None:
    line = describe_param_groups(DECAY, layer_decay_param_groups(tiny_model(), DECAY, LAYERS))
    assert line == "layer-wise LR decay 0.5: layer 2 + heads x1, layer 1 x0.5, layer 0 x0.25, embeddings x0.125"


@pytest.mark.parametrize("num_layers", [2, 4])
def test_other_layer_count_is_refused(num_layers: int) -> None:
    with pytest.raises(UserError, match=f"--lr-decay-layers {num_layers} does not match the model's 3"):
        layer_decay_param_groups(tiny_model(), DECAY, num_layers)


def build_scheduler(name: str, argv: list[str], optimizer: torch.optim.Optimizer):
    parser = argparse.ArgumentParser()
    add_optimization_args(parser)
    scheduler_cls = LR_SCHEDULERS.get(name)
    scheduler_cls.add_args(parser)
    return scheduler_cls.build(settings_from_flags(scheduler_cls.Settings, parser.parse_args(argv)), optimizer)


GROUP_FACTORS = {"layer 2 + heads": 1.0, "layer 1": DECAY, "layer 0": DECAY ** 2, "embeddings": DECAY ** 3}


def assert_scaled(optimizer: torch.optim.Optimizer, base_lr: float) -> None:
    assert [group["name"] for group in optimizer.param_groups] == list(GROUP_FACTORS)
    for group in optimizer.param_groups:
        expected = base_lr * GROUP_FACTORS[group["name"]]
        assert group["lr"] == pytest.approx(expected, rel=1e-12, abs=1e-18), group["name"]


SCHEDULES = {
    "polynomial_decay": ["--lr", "1e-3", "--warmup-updates", "4", "--total-num-update", "20"],
    "inverse_sqrt": ["--lr", "1e-3", "--warmup-updates", "4"],
    "cosine": ["--lr", "1e-3", "--warmup-updates", "4", "--max-update", "20"],
    "tri_stage": ["--lr", "1e-3", "--warmup-steps", "4", "--hold-steps", "4", "--decay-steps", "8"],
    "fixed": ["--lr", "1e-3,5e-4", "--warmup-updates", "4"],
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_group_lr_is_scheduled_lr_times_factor(name: str) -> None:
    """Effective LR = base_lr(t) * decay^depth, from construction through warmup and decay."""
    model = tiny_model()
    optimizer = Adam(layer_decay_param_groups(model, DECAY, LAYERS), lr=1.0, betas=(0.9, 0.98), eps=0.0)
    scheduler = build_scheduler(name, SCHEDULES[name], optimizer)
    assert_scaled(optimizer, scheduler.get_lr())
    seen = set()
    for n in [1, 2, 3, 4, 5, 9, 13, 17, 25]:
        if n == 13:
            scheduler.step_epoch(2)
        base = scheduler.step_update(n)
        assert base == scheduler.get_lr()
        seen.add(base)
        assert_scaled(optimizer, base)
    assert len(seen) >= 3, "the schedule must move for the test to mean anything"


def test_first_adam_step_moves_each_parameter_by_its_group_lr() -> None:
    """With eps 0, Adam's first update is exactly lr * sign(g): the LR each parameter really gets."""
    model = tiny_model()
    optimizer = Adam(layer_decay_param_groups(model, DECAY, LAYERS), lr=1.0, betas=(0.9, 0.98), eps=0.0)
    scheduler = build_scheduler("polynomial_decay", SCHEDULES["polynomial_decay"], optimizer)
    base = scheduler.step_update(6)
    assert base == pytest.approx(1e-3 * (1 - 2 / 16))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    for name, p in model.named_parameters():
        moved = (before[name] - p.detach()).abs()
        torch.testing.assert_close(moved, torch.full_like(moved, base * expected_factor(name)),
                                   rtol=1e-4, atol=1e-9, msg=name)


def roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, map_location="cpu", weights_only=True)


def train_steps(model: RobertaModel, optimizer, scheduler, updates: range) -> None:
    for n in updates:
        generator = torch.Generator().manual_seed(n)
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=generator)
        optimizer.step()
        scheduler.step_update(n + 1)


def test_resume_keeps_groups_factors_and_moments() -> None:
    argv = SCHEDULES["polynomial_decay"]
    model = tiny_model()
    optimizer = Adam(layer_decay_param_groups(model, DECAY, LAYERS), lr=1.0)
    scheduler = build_scheduler("polynomial_decay", argv, optimizer)
    train_steps(model, optimizer, scheduler, range(6))
    saved = roundtrip({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                       "scheduler": scheduler.state_dict()})

    resumed = tiny_model(seed=9)
    resumed.load_state_dict(saved["model"])
    resumed_optimizer = Adam(layer_decay_param_groups(resumed, DECAY, LAYERS), lr=1.0)
    resumed_scheduler = build_scheduler("polynomial_decay", argv, resumed_optimizer)
    resumed_optimizer.load_state_dict(align_saved_groups(saved["optimizer"], resumed_optimizer, path="ckpt"))
    resumed_scheduler.load_state_dict(saved["scheduler"])
    assert [(g["name"], g["lr_scale"], g["lr"]) for g in resumed_optimizer.param_groups] == \
           [(g["name"], g["lr_scale"], g["lr"]) for g in optimizer.param_groups]
    assert_scaled(resumed_optimizer, resumed_scheduler.get_lr())
    train_steps(model, optimizer, scheduler, range(6, 10))
    train_steps(resumed, resumed_optimizer, resumed_scheduler, range(6, 10))
    assert_scaled(resumed_optimizer, resumed_scheduler.get_lr())
    for (name, p), r in zip(model.named_parameters(), resumed.parameters()):
        assert torch.equal(p, r), name


def test_resume_applies_this_runs_factors_and_refuses_other_groups() -> None:
    model = tiny_model()
    optimizer = Adam(layer_decay_param_groups(model, DECAY, LAYERS), lr=1.0)
    saved = roundtrip(optimizer.state_dict())

    other_decay = Adam(layer_decay_param_groups(tiny_model(), 0.8, LAYERS), lr=1.0)
    other_decay.load_state_dict(align_saved_groups(saved, other_decay, path="ckpt"))
    assert [g["lr_scale"] for g in other_decay.param_groups] == pytest.approx([1.0, 0.8, 0.64, 0.512])

    no_decay = Adam([p for p in tiny_model().parameters()], lr=1.0)
    with pytest.raises(UserError, match="ckpt: its optimizer has 4 parameter groups.*--reset-optimizer"):
        align_saved_groups(saved, no_decay, path="ckpt")


def test_masked_lm_run_with_lr_decay(demo_data_bin: Path, tmp_path: Path, capfd) -> None:
    schedule = ["--lr", "1e-3", "--total-num-update", "20", "--max-update", "6", "--lr_decay", "0.5",
                "--lr_decay_layers", "2"]
    train.main(tiny_run(demo_data_bin, tmp_path, *schedule))
    err = capfd.readouterr().err
    assert ("layer-wise LR decay 0.5: layer 1 + heads x1, layer 0 x0.5, embeddings x0.25") in err
    summary = json_events(err, "train")[-1]
    assert (summary["train_num_updates"], summary["train_lr"]) == ("6", "0.0006"), summary
    state = torch.load(tmp_path / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    scheduled = state["optimizer_history"][-1]["lr_scheduler_state"]["lr"]
    groups = state["last_optimizer_state"]["param_groups"]
    assert [(g["name"], g["lr_scale"]) for g in groups] == \
           [("layer 1 + heads", 1.0), ("layer 0", 0.5), ("embeddings", 0.25)]
    assert [g["lr"] for g in groups] == pytest.approx([scheduled, scheduled / 2, scheduled / 4])
    moments = state["last_optimizer_state"]["state"]
    assert sorted(moments) == sorted(i for g in groups for i in g["params"])
    assert all(m["step"] == 6 and m["exp_avg_sq"].abs().sum() > 0 for m in moments.values())
    with pytest.raises(UserError, match="--reset-optimizer"):  # the same run resumed without the decay
        train.main(tiny_run(demo_data_bin, tmp_path, "--lr", "1e-3", "--total-num-update", "20",
                            "--max-update", "8"))


@pytest.mark.parametrize("value", ["0", "1.5"])
def test_lr_decay_outside_unit_interval_is_one_line(tmp_path: Path, value: str) -> None:
    result = run_cli("train", tmp_path, "--arch", "roberta_tiny", "--lr-decay", value)
    assert_one_line_error(result, "roberta-train", "--lr-decay must be in (0, 1]", value)


def test_lr_decay_layers_must_be_positive(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_optimization_args(parser)
    with pytest.raises(UserError, match="--lr-decay-layers must be >= 1"):
        parser.parse_args(["--lr_decay_layers", "0"])
    assert parser.parse_args(["--lr_decay", "0.75"]).lr_decay == 0.75
    assert parser.parse_args([]).lr_decay == 1.0
