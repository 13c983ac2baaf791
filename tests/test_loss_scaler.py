"""DynamicLossScaler: fairseq's state machine, step by step."""
from __future__ import annotations

import math

import pytest

from roberta.cli import options
from roberta.cli.assembly import assemble_training
from roberta.errors import UserError
from roberta.optim.loss_scaler import DynamicLossScaler, MinimumLossScaleReached

CLEAN, INF, NAN = 1.0, math.inf, math.nan


def run(scaler: DynamicLossScaler, norms: list[float]) -> list[tuple[bool, float]]:
    """(applied, scale after the iteration) for each gradient norm."""
    return [(scaler.update(norm), scaler.scale) for norm in norms]


@pytest.mark.parametrize("bad", [INF, NAN])
def test_overflow_halves_the_scale_and_skips_the_update(bad: float) -> None:
    scaler = DynamicLossScaler(128.0, scale_window=100)
    assert run(scaler, [CLEAN, bad, bad, CLEAN]) == [(True, 128.0), (False, 64.0), (False, 32.0), (True, 32.0)]


def test_scale_doubles_after_every_window_of_clean_updates() -> None:
    scaler = DynamicLossScaler(8.0, scale_window=3)
    scales = [scale for _, scale in run(scaler, [CLEAN] * 7)]
    assert scales == [8.0, 8.0, 16.0, 16.0, 16.0, 32.0, 32.0]


def test_window_restarts_at_the_last_overflow() -> None:
    scaler = DynamicLossScaler(8.0, scale_window=3)
    # 2 clean (no doubling yet), an overflow (8 -> 4), then 3 clean updates are needed again.
    scales = [scale for _, scale in run(scaler, [CLEAN, CLEAN, INF, CLEAN, CLEAN, CLEAN])]
    assert scales == [8.0, 8.0, 4.0, 4.0, 4.0, 8.0]


def test_tolerance_lowers_the_scale_only_once_enough_updates_overflowed() -> None:
    scaler = DynamicLossScaler(8.0, scale_window=1000, tolerance=0.25)
    run(scaler, [CLEAN] * 10)
    # Overflow shares since the start (iteration -1): 1/11, 2/12, 3/13 stay below 0.25; 4/14 does not.
    # Every overflow is skipped, reduced or not.
    assert run(scaler, [INF] * 4) == [(False, 8.0), (False, 8.0), (False, 8.0), (False, 4.0)]
    # The count restarts at the rescale: the next overflow is 1 of 1 iterations since then.
    assert run(scaler, [INF]) == [(False, 2.0)]


def test_threshold_is_a_floor() -> None:
    scaler = DynamicLossScaler(4.0, scale_window=1000, threshold=1.0)
    assert [scale for _, scale in run(scaler, [INF] * 4)] == [2.0, 1.0, 1.0, 1.0]


def test_minimum_loss_scale_stops_training_with_fairseqs_message() -> None:
    scaler = DynamicLossScaler(1.0, scale_window=1000, min_loss_scale=0.25)
    assert run(scaler, [INF]) == [(False, 0.5)]
    with pytest.raises(MinimumLossScaleReached, match=r"^Minimum loss scale reached \(0.25, --min-loss-scale\)\. "
                                                      r"Your loss is probably exploding"):
        scaler.update(INF)
    assert issubclass(MinimumLossScaleReached, UserError)
    assert scaler.scale == 0.5


def test_state_dict_round_trip_continues_identically() -> None:
    history = [CLEAN, INF, CLEAN, CLEAN, INF, INF, CLEAN]
    future = [CLEAN] * 5 + [INF] + [CLEAN] * 4
    original = DynamicLossScaler(64.0, scale_window=3, tolerance=0.3)
    run(original, history)
    restored = DynamicLossScaler(1.0, scale_window=3, tolerance=0.3)
    restored.load_state_dict(original.state_dict())
    assert run(restored, future) == run(original, future)


def assembled_scaler(*flags: str) -> DynamicLossScaler:
    """The scaler `roberta-train` builds from these flags (the window is derived at assembly)."""
    args = options.parse_args(["data", "--arch", "roberta_tiny", "--max-tokens", "64", "--fp16-init-scale", "4",
                               "--threshold-loss-scale", "1", *flags], train=True)
    return DynamicLossScaler.build(assemble_training(args).loss_scaler)


def test_default_window_follows_update_freq_and_world_size() -> None:
    scaler = assembled_scaler("--update-freq", "8", "--distributed-world-size", "1")
    assert (scaler.scale, scaler.scale_window, scaler.threshold) == (4.0, 2048, 1.0)
    args = options.parse_args(["data", "--arch", "roberta_tiny", "--max-tokens", "64", "--update-freq", "8"],
                              train=True)
    assert assemble_training(args, world_size=8).loss_scaler.fp16_scale_window == 256
    assert assembled_scaler("--update-freq", "8", "--fp16-scale-window", "128").scale_window == 128
