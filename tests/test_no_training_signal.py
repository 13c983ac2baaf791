"""Settings that give no training signal stop the run with one line instead of looping over epochs
of zero updates (each saving checkpoint<E>.pt at update 0)."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from roberta.cli import train
from roberta.cli.train import check_epoch_trained
from roberta.errors import UserError
from roberta.faults import ENVIRONMENT_VARIABLE as FAULTS
from support.train_args import model_size_flags

NOTHING_TO_PREDICT = '''
from criterions.masked_lm import MaskedLMCriterion
from roberta.registry import CRITERIONS


@CRITERIONS.register("nothing_to_predict")
class NothingToPredict(MaskedLMCriterion):
    """As if every example had been filtered out of its batch: no target, sample size 0."""

    def forward(self, model, sample):
        loss, _, logging_output = super().forward(model, sample)
        return loss * 0, 0, {**logging_output, "sample_size": 0}
'''


def tiny_training(data: Path, save_dir: Path, *extra: str) -> list[str]:
    # --max-epoch bounds a run that would otherwise loop forever, so a regression fails instead of hanging;
    # the small valid split as training data makes an epoch one step.
    return [str(data), "--task", "masked_lm", "--arch", "roberta_tiny",
            *model_size_flags(layers=1, embed_dim=16, ffn_dim=32, heads=2),
            "--sample-break-mode", "complete", "--tokens-per-sample", "128", "--max-tokens", "16384",
            "--max-epoch", "2", "--train-subset", "valid", "--num-workers", "0", "--cpu", "--no-progress-bar", "--save-dir", str(save_dir),
            *extra]


def saved(save_dir: Path) -> list[str]:
    return sorted(path.name for path in save_dir.iterdir()) if save_dir.exists() else []


def test_mask_prob_zero_is_refused_before_any_data_is_read(demo_data_bin: Path, tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.INFO), pytest.raises(UserError) as refused:
        train.main(tiny_training(demo_data_bin, tmp_path / "ckpt", "--mask-prob", "0"))
    assert str(refused.value) == ("--mask-prob must be in (0, 1] (0 chooses no token to predict, so training "
                                  "would make no update; the default is 0.15), got 0")
    assert "loaded" not in caplog.text and saved(tmp_path / "ckpt") == []


@pytest.mark.parametrize("cause", ["no-target", "oom"])
def test_an_epoch_without_any_update_stops_the_run(demo_data_bin: Path, tmp_path: Path, monkeypatch,
                                                   cause: str) -> None:
    extra: list[str] = []
    if cause == "no-target":
        plugin = tmp_path / "no_signal_plugin"
        plugin.mkdir()
        (plugin / "__init__.py").write_text(NOTHING_TO_PREDICT)
        extra = ["--user-dir", str(plugin), "--criterion", "nothing_to_predict"]
    else:
        monkeypatch.setenv(FAULTS, "oom-forward")
    with pytest.raises(UserError) as stopped:
        train.main(tiny_training(demo_data_bin, tmp_path / "ckpt", *extra))
    message = str(stopped.value)
    assert message.startswith("epoch 1 made no update in ") and "\n" not in message
    assert ("every update ran out of memory" if cause == "oom" else "had nothing to train on (sample size 0") in message
    assert saved(tmp_path / "ckpt") == []  # no checkpoint1.pt at update 0


@pytest.mark.parametrize("steps, oom, overflow, raises", [
    (5, 0, 0, "5 step(s) had nothing to train on"),
    (5, 5, 0, "every update ran out of memory"),
    (5, 2, 0, "3 step(s) had nothing to train on"),
    (5, 0, 5, None),  # fp16 overflows: the loss scale falls until updates succeed
    (5, 2, 3, None),
])
def test_which_zero_update_epochs_stop_and_what_they_say(steps, oom, overflow, raises) -> None:
    if raises is None:
        check_epoch_trained(3, steps, oom, overflow)
        return
    with pytest.raises(UserError, match=rf"^epoch 3 made no update in {steps} step\(s\): .*{re.escape(raises)}"):
        check_epoch_trained(3, steps, oom, overflow)
