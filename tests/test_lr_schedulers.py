"""LR schedulers against their closed-form formulas, per-group `lr_scale`, state and flag errors."""
from __future__ import annotations

import argparse
import dataclasses
import math

import pytest
import torch

from roberta.cli.settings import settings_from_flags
from roberta.errors import UserError
from roberta.optim import OptimizationSettings, add_optimization_args, parse_lr, parse_update_freq
from roberta.optim.adam import Adam
from roberta.optim.lr_scheduler.cosine import CosineSchedule
from roberta.optim.lr_scheduler.polynomial_decay import PolynomialDecaySchedule
from roberta.optim.lr_scheduler.tri_stage import TriStageSchedule
from roberta.registry import LR_SCHEDULERS

SCALE = 0.25  # lr_scale of the second param group, as layer-wise LR decay would set it


def make_optimizer() -> Adam:
    groups = [{"params": [torch.zeros(2, requires_grad=True)]},
              {"params": [torch.zeros(3, requires_grad=True)], "lr_scale": SCALE}]
    return Adam(groups, lr=1.0)


def parse(name: str, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_optimization_args(parser)
    LR_SCHEDULERS.get(name).add_args(parser)
    return parser.parse_args(argv)


def build(name: str, argv: list[str], optimizer: torch.optim.Optimizer | None = None):
    """The scheduler the command layer builds from `argv`: flags, then its settings, then it."""
    scheduler_cls = LR_SCHEDULERS.get(name)
    settings = settings_from_flags(scheduler_cls.Settings, parse(name, argv))
    return scheduler_cls.build(settings, optimizer or make_optimizer())


def assert_lr(scheduler, returned: float, expected: float) -> None:
    assert returned == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert scheduler.get_lr() == pytest.approx(expected, rel=1e-12, abs=1e-15)
    lrs = [group["lr"] for group in scheduler.optimizer.param_groups]
    assert lrs == pytest.approx([expected, expected * SCALE], rel=1e-12, abs=1e-15)


def poly(n: int, lr: float, end: float, warmup: int, total: int, power: float) -> float:
    if n <= warmup:
        return lr * n / warmup
    if n >= total:
        return end
    return (lr - end) * (1 - (n - warmup) / (total - warmup)) ** power + end


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_polynomial_decay_follows_formula(power: float) -> None:
    lr, end, warmup, total = 1e-3, 1e-5, 10, 100
    scheduler = build("polynomial_decay", ["--lr", str(lr), "--warmup-updates", "10", "--total-num-update", "100",
                                           "--end-learning-rate", str(end), "--power", str(power)])
    assert_lr(scheduler, scheduler.get_lr(), 0.0)  # set at construction: the first update uses LR 0
    for n in [0, 1, 5, 9, 10, 11, 50, 99, 100, 101, 500]:
        assert_lr(scheduler, scheduler.step_update(n), poly(n, lr, end, warmup, total, power))
    assert_lr(scheduler, scheduler.step_update(10), lr)


def test_polynomial_decay_length_defaults_to_max_update() -> None:
    scheduler = build("polynomial_decay", ["--lr", "0.1", "--max-update", "40", "--warmup-updates", "4"])
    assert_lr(scheduler, scheduler.step_update(22), poly(22, 0.1, 0.0, 4, 40, 1.0))
    assert_lr(scheduler, scheduler.step_epoch(2), poly(22, 0.1, 0.0, 4, 40, 1.0))


def test_polynomial_decay_force_anneal_restarts_from_current_lr() -> None:
    # fairseq's behaviour: from epoch F on, each epoch start makes the current LR the new peak.
    scheduler = build("polynomial_decay", ["--lr", "1.0", "--total-num-update", "100", "--force-anneal", "2"])
    scheduler.step_epoch(1)
    assert_lr(scheduler, scheduler.step_update(50), 0.5)
    assert_lr(scheduler, scheduler.step_epoch(2), 0.25)
    assert_lr(scheduler, scheduler.step_update(60), 0.5 * 0.4)


def test_fixed_uses_one_lr_per_epoch_then_anneals() -> None:
    scheduler = build("fixed", ["--lr", "0.1,0.05", "--force-anneal", "4", "--lr-shrink", "0.5"])
    assert_lr(scheduler, scheduler.get_lr(), 0.1)
    expected = {1: 0.1, 2: 0.05, 3: 0.05, 4: 0.05 * 0.5, 5: 0.05 * 0.25}
    for epoch, lr in expected.items():
        assert_lr(scheduler, scheduler.step_epoch(epoch), lr)
        assert_lr(scheduler, scheduler.step_update(100 * epoch), lr)


def test_fixed_warmup_scales_the_epoch_lr() -> None:
    scheduler = build("fixed", ["--lr", "0.2", "--warmup-updates", "4"])
    assert_lr(scheduler, scheduler.get_lr(), 0.2 / 4)
    assert_lr(scheduler, scheduler.step_epoch(1), 0.2 / 4)
    for n, factor in [(0, 1 / 4), (1, 2 / 4), (3, 1.0), (4, 1.0), (9, 1.0)]:
        assert_lr(scheduler, scheduler.step_update(n), 0.2 * factor)


def test_inverse_sqrt_follows_formula() -> None:
    lr, warmup, init = 5e-4, 16, 1e-7
    scheduler = build("inverse_sqrt", ["--lr", str(lr), "--warmup-updates", "16", "--warmup-init-lr", str(init)])
    assert_lr(scheduler, scheduler.get_lr(), init)
    for n in [0, 1, 8, 15]:
        assert_lr(scheduler, scheduler.step_update(n), init + n * (lr - init) / warmup)
    for n in [16, 17, 64, 10000]:
        assert_lr(scheduler, scheduler.step_update(n), lr * math.sqrt(warmup) / math.sqrt(n))


def test_inverse_sqrt_default_warmup_starts_at_zero() -> None:
    scheduler = build("inverse_sqrt", ["--lr", "1e-3"])
    assert scheduler.warmup_updates == 4000
    assert_lr(scheduler, scheduler.step_update(2000), 0.5e-3)


def cosine(n: int, *, lr: float, min_lr: float, warmup: int, init: float, period: float, t_mult: float,
           shrink: float) -> float:
    if n < warmup:
        return init + n * (lr - init) / warmup
    c, i, start = n - warmup, 0, 0.0
    while c >= start + period * t_mult ** i:  # walk the cycles one by one
        start += period * t_mult ** i
        i += 1
    length = period * t_mult ** i
    low, high = min_lr * shrink ** i, lr * shrink ** i
    return low + 0.5 * (high - low) * (1 + math.cos(math.pi * (c - start) / length))


@pytest.mark.parametrize("t_mult", [1.0, 2.0, 3.0])
def test_cosine_follows_formula(t_mult: float) -> None:
    argv = ["--lr", "1e-3", "--min-lr", "1e-5", "--warmup-updates", "5", "--lr-period-updates", "7",
            "--t-mult", str(t_mult), "--lr-shrink", "0.5"]
    scheduler = build("cosine", argv)
    expected = dict(lr=1e-3, min_lr=1e-5, warmup=5, init=1e-5, period=7, t_mult=t_mult, shrink=0.5)
    assert_lr(scheduler, scheduler.get_lr(), 1e-5)
    # 5 + 7 = 12 ends the first cycle; with t_mult 3, 5 + 7 + 21 + 63 = 96 ends the third.
    for n in [0, 4, 5, 6, 11, 12, 13, 18, 19, 40, 95, 96, 97, 852, 853]:
        assert_lr(scheduler, scheduler.step_update(n), cosine(n, **expected))
    assert_lr(scheduler, scheduler.step_update(12), 1e-3 * 0.5 if t_mult == 1 else cosine(12, **expected))


def test_cosine_period_defaults_to_max_update_minus_warmup() -> None:
    scheduler = build("cosine", ["--lr", "1.0", "--max-update", "110", "--warmup-updates", "10"])
    assert_lr(scheduler, scheduler.step_update(60), 0.5)
    assert_lr(scheduler, scheduler.step_update(109), 0.5 * (1 + math.cos(math.pi * 99 / 100)))


def test_cosine_accepts_old_max_lr_as_the_peak() -> None:
    scheduler = build("cosine", ["--lr", "1e-6", "--max-lr", "1e-3", "--lr-period-updates", "10"])
    assert_lr(scheduler, scheduler.step_update(0), 1e-3)
    assert_lr(scheduler, scheduler.step_update(5), 1e-6 + 0.5 * (1e-3 - 1e-6))


def test_tri_stage_follows_formula() -> None:
    lr, init, final = 1e-3, 1e-3 * 0.01, 1e-3 * 0.05
    scheduler = build("tri_stage", ["--lr", str(lr), "--warmup-steps", "10", "--hold-steps", "5",
                                    "--decay-steps", "20", "--final-lr-scale", "0.05"])
    decay = -math.log(0.05) / 20
    expected = {0: init, 5: init + (lr - init) * 0.5, 10: lr, 14: lr, 15: lr, 25: lr * math.exp(-decay * 10),
                35: lr * 0.05, 36: final, 1000: final}
    for n, value in expected.items():
        assert_lr(scheduler, scheduler.step_update(n), value)


def test_tri_stage_phase_ratio_splits_max_update() -> None:
    scheduler = build("tri_stage", ["--lr", "1.0", "--phase-ratio", "(0.1, 0.4, 0.5)", "--max-update", "100"])
    assert (scheduler.warmup_steps, scheduler.hold_steps, scheduler.decay_steps) == (10, 40, 50)


@pytest.mark.parametrize("name, argv", [
    ("fixed", ["--lr", "0.1,0.01", "--warmup-updates", "3", "--force-anneal", "2"]),
    ("polynomial_decay", ["--lr", "0.1", "--warmup-updates", "3", "--total-num-update", "30", "--force-anneal", "2"]),
    ("inverse_sqrt", ["--lr", "0.1", "--warmup-updates", "3"]),
    ("cosine", ["--lr", "0.1", "--lr-period-updates", "5", "--t-mult", "2"]),
    ("tri_stage", ["--lr", "0.1", "--warmup-steps", "3", "--decay-steps", "9"]),
])
def test_state_round_trip_continues_the_schedule(name: str, argv: list[str]) -> None:
    scheduler = build(name, argv)
    for epoch, n in [(1, 2), (2, 7)]:
        scheduler.step_epoch(epoch)
        scheduler.step_update(n)
    resumed = build(name, argv)
    resumed.load_state_dict(scheduler.state_dict())
    assert_lr(resumed, resumed.get_lr(), scheduler.get_lr())
    for epoch, n in [(3, 8), (4, 20)]:
        assert_lr(resumed, resumed.step_epoch(epoch), scheduler.step_epoch(epoch))
        assert_lr(resumed, resumed.step_update(n), scheduler.step_update(n))


def test_fairseq_scheduler_state_is_accepted() -> None:
    scheduler = build("polynomial_decay", ["--lr", "0.1", "--total-num-update", "10"])
    scheduler.load_state_dict({"best": 1.5})
    assert_lr(scheduler, scheduler.get_lr(), 0.1)
    assert scheduler.state_dict()["best"] is None


def test_groups_added_later_are_scaled_too() -> None:
    optimizer = make_optimizer()
    scheduler = build("inverse_sqrt", ["--lr", "1.0", "--warmup-updates", "4"], optimizer)
    optimizer.add_param_group({"params": [torch.zeros(1, requires_grad=True)], "lr_scale": 0.5})
    scheduler.step_update(4)
    assert [g["lr"] for g in optimizer.param_groups] == [1.0, SCALE, 0.5]


@pytest.mark.parametrize("name, argv, message", [
    ("polynomial_decay", ["--warmup-updates", "100", "--total-num-update", "100"], "--warmup-updates"),
    ("polynomial_decay", [], "--total-num-update or --max-update"),
    ("polynomial_decay", ["--total-num-update", "10", "--warmup-updates", "-1"], "--warmup-updates"),
    ("polynomial_decay", ["--lr", "0.1,0.2", "--max-update", "10"], "--lr"),
    ("inverse_sqrt", ["--lr", "0.1,0.2"], "--lr"),
    ("inverse_sqrt", ["--warmup-updates", "0"], "--warmup-updates"),
    ("cosine", ["--lr", "0.1,0.2", "--max-update", "10"], "--lr"),
    ("cosine", [], "--lr-period-updates or --max-update"),
    ("cosine", ["--max-update", "10", "--warmup-updates", "10"], "--warmup-updates"),
    ("cosine", ["--lr", "0.1", "--min-lr", "0.2", "--max-update", "10"], "--min-lr"),
    ("cosine", ["--max-update", "10", "--t-mult", "0.5"], "--t-mult"),
    ("tri_stage", ["--lr", "0.1,0.2", "--warmup-steps", "3"], "--lr"),
    ("tri_stage", [], "--warmup-steps"),
    ("tri_stage", ["--phase-ratio", "(0.5, 0.4)", "--max-update", "10"], "--phase-ratio"),
    ("tri_stage", ["--phase-ratio", "(0.5, 0.4, 0.3)", "--max-update", "10"], "--phase-ratio"),
    ("tri_stage", ["--phase-ratio", "(0.5, 0.25, 0.25)"], "--max-update"),
    ("fixed", ["--force-anneal", "0"], "--force-anneal"),
])
def test_bad_flags_are_user_errors(name: str, argv: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        build(name, argv)


@pytest.mark.parametrize("name", sorted(LR_SCHEDULERS.names()))
def test_settings_fields_are_flag_dests_with_the_flag_defaults(name: str) -> None:
    flags = vars(parse(name, []))
    for field in dataclasses.fields(LR_SCHEDULERS.get(name).Settings):
        assert field.name in flags, f"{name}: field {field.name} is not a flag"
        if field.default is not dataclasses.MISSING:
            assert field.default == flags[field.name], f"{name}: default of {field.name}"


def test_settings_check_the_flags_before_any_optimizer_exists() -> None:
    with pytest.raises(UserError, match="--total-num-update or --max-update"):
        PolynomialDecaySchedule.Settings(lr=(0.1,))
    with pytest.raises(UserError, match="--warmup-updates 10 leaves no updates"):
        CosineSchedule.Settings(lr=(0.1,), warmup_updates=10, max_update=10)
    with pytest.raises(UserError, match="--phase-ratio needs --max-update"):
        TriStageSchedule.Settings(lr=(0.1,), phase_ratio="(0.5, 0.25, 0.25)")


def test_settings_resolve_lengths_from_max_update() -> None:
    assert PolynomialDecaySchedule.Settings(lr=(0.1,), max_update=40).end_update == 40
    assert PolynomialDecaySchedule.Settings(lr=(0.1,), max_update=40, total_num_update=30).end_update == 30
    cosine = CosineSchedule.Settings(lr=(1e-6,), max_lr=1e-3, max_update=110, warmup_updates=10)
    assert (cosine.peak_lr, cosine.floor_lr, cosine.period) == (1e-3, 1e-6, 100)
    tri_stage = TriStageSchedule.Settings(lr=(1.0,), phase_ratio="(0.1, 0.4, 0.5)", max_update=100)
    assert tri_stage.stage_steps == (10, 40, 50)


@pytest.mark.parametrize("argv, flag", [
    (["--lr", "0"], "--lr"), (["--lr=-1e-5"], "--lr"), (["--lr", "abc"], "--lr"), (["--lr", "nan"], "--lr"),
    (["--update-freq", "0"], "--update-freq"), (["--update-freq", "2,x"], "--update-freq"),
    (["--update-freq", "1.5"], "--update-freq"), (["--clip-norm", "-1"], "--clip-norm"),
    (["--max-update", "-3"], "--max-update"), (["--max-epoch", "two"], "--max-epoch"),
])
def test_bad_optimization_flags_name_the_flag(argv: list[str], flag: str) -> None:
    parser = argparse.ArgumentParser()
    add_optimization_args(parser)
    with pytest.raises(UserError, match=flag):
        parser.parse_args(argv)


def test_optimization_flags_parse_fairseq_spellings() -> None:
    parser = argparse.ArgumentParser()
    add_optimization_args(parser)
    defaults = parser.parse_args([])
    assert (defaults.lr, defaults.update_freq, defaults.clip_norm, defaults.max_update) == ([0.25], [1], 0.0, 0)
    assert parser.parse_args(["--lr", "0.1,0.01", "--update-freq", "4,2"]).update_freq == [4, 2]
    assert parse_lr("[1e-5]") == [1e-5]
    assert parse_lr("(0.1, 0.01,)") == [0.1, 0.01]
    assert parse_lr([3e-5]) == [3e-5]
    assert parse_update_freq("8") == [8]


def test_optimization_settings_hold_every_flag_with_its_default() -> None:
    parser = argparse.ArgumentParser()
    add_optimization_args(parser)
    flags = parser.parse_args([])
    assert {field.name for field in dataclasses.fields(OptimizationSettings)} == set(vars(flags))
    assert settings_from_flags(OptimizationSettings, flags) == OptimizationSettings()
    parsed = settings_from_flags(OptimizationSettings, parser.parse_args(["--lr", "0.1,0.01", "--update-freq", "4,2"]))
    assert (parsed.lr, parsed.update_freq) == ((0.1, 0.01), (4, 2))


@pytest.mark.parametrize("values, flag", [
    ({"lr": (0.0,)}, "--lr"), ({"update_freq": (0,)}, "--update-freq"), ({"update_freq": ()}, "--update-freq"),
    ({"clip_norm": -1.0}, "--clip-norm"), ({"max_update": -3}, "--max-update"), ({"max_epoch": -1}, "--max-epoch"),
    ({"stop_min_lr": math.nan}, "--stop-min-lr"), ({"lr_decay": 1.5}, "--lr-decay"),
    ({"lr_decay_layers": 0}, "--lr-decay-layers"),
])
def test_optimization_settings_built_in_code_get_the_flag_checks(values: dict, flag: str) -> None:
    with pytest.raises(UserError, match=flag):
        OptimizationSettings(**values)
