"""Checkpoint policy: names, retention, best score, atomic writes, safe loading, restore and resets."""
from __future__ import annotations

import argparse
import errno
import math
import os
import pickle
from pathlib import Path

import pytest
import torch

from roberta.checkpoint import files as checkpoint
from roberta.checkpoint.files import build_checkpoint_state, load_checkpoint, plain_config
from roberta.checkpoint.manager import CheckpointManager, SaveSettings, add_save_args
from roberta.checkpoint.restore import (EVERYTHING, Resets, RestoreSettings, RunProgress, TrainerState,
                                        add_restore_args, restored_parts, starting_file)
from roberta.cli.settings import settings_from_flags
from roberta.errors import UserError
from roberta.fileio import temporary_path


def add_checkpoint_args(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    add_restore_args(parser)  # as roberta.cli.options does
    add_save_args(parser)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_checkpoint_args(parser.add_argument_group("checkpoint"))
    return parser.parse_args(argv)


def validate_checkpoint_args(args: argparse.Namespace) -> None:
    """What the command layer does with the flags: assemble both settings, which check themselves."""
    problems = settings_from_flags(RestoreSettings, args).problems()
    try:
        settings_from_flags(SaveSettings, args)
    except UserError as error:
        problems.append(str(error))
    if problems:
        raise UserError("; ".join(problems))


def restore_settings(save_dir: Path, restore_file: str = "checkpoint_last.pt", finetune_from_model: str | None = None,
                     suffix: str = "") -> RestoreSettings:
    return RestoreSettings(save_dir=save_dir, restore_file=restore_file, finetune_from_model=finetune_from_model,
                           checkpoint_suffix=suffix)


def make_state(tag: float, num_updates: int = 0, optimizer_name: str = "adam", **extra) -> dict:
    return build_checkpoint_state(
        cfg={"lr": [1e-5], "arch": "roberta_tiny"}, model_state={"w": torch.full((3,), float(tag))},
        criterion_name="masked_lm", optimizer_name=optimizer_name,
        optimizer_state={"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]},
        lr_scheduler_state={"best": None, "step": num_updates}, num_updates=num_updates,
        train_iterator={"epoch": 1, "iterations_in_epoch": 2, "shuffle": True}, **extra)


def tag_of(path: Path) -> float:
    return load_checkpoint(path)["model"]["w"][0].item()


def names_in(directory: Path) -> set[str]:
    return {path.name for path in directory.iterdir()}


def test_flag_defaults_match_fairseq_and_every_flag_has_help():
    args = parse([])
    assert args.save_dir == "checkpoints" and args.restore_file == "checkpoint_last.pt"
    assert args.finetune_from_model is None and args.optimizer_overrides == "{}"
    assert (args.save_interval, args.save_interval_updates, args.keep_interval_updates) == (1, 0, -1)
    assert (args.keep_interval_updates_pattern, args.keep_last_epochs, args.keep_best_checkpoints) == (-1, -1, -1)
    assert args.best_checkpoint_metric == "loss" and args.patience == -1 and args.checkpoint_suffix == ""
    assert not any([args.reset_optimizer, args.no_save, args.no_epoch_checkpoints, args.unsafe_load,
                    args.no_last_checkpoints, args.no_save_optimizer_state, args.maximize_best_checkpoint_metric])
    parser = argparse.ArgumentParser()
    add_checkpoint_args(parser)
    assert all(action.help for action in parser._actions) and "U % N == 0" in parser.format_help()
    validate_checkpoint_args(args)


@pytest.mark.parametrize("argv, flag", [
    (["--finetune-from-model", "m.pt", "--restore-file", "x.pt"], "--restore-file x.pt"),
    (["--finetune-from-model", "m.pt", "--reset-meters"], "--reset-meters"),
    (["--save-interval", "0"], "--save-interval 0"),
    (["--save-interval-updates", "-5"], "--save-interval-updates -5"),
    (["--keep-last-epochs", "-2"], "--keep-last-epochs -2"),
    (["--patience", "-3"], "--patience -3"),
    (["--optimizer-overrides", "{'lr': __import__('os')}"], "--optimizer-overrides"),
    (["--optimizer-overrides", "[1, 2]"], "--optimizer-overrides"),
    (["--checkpoint-suffix", "a/b"], "--checkpoint-suffix"),
    (["--save-interval", "0", "--keep-best-checkpoints", "-4"], "--save-interval 0.*--keep-best-checkpoints -4"),
])
def test_validate_rejects_nonsense_naming_the_flag(argv, flag):
    with pytest.raises(UserError, match=flag):
        validate_checkpoint_args(parse(argv))


def test_save_settings_from_the_flags(tmp_path):
    args = parse(["--save-dir", str(tmp_path), "--checkpoint-suffix=-x", "--keep-last-epochs", "3",
                  "--maximize-best-checkpoint-metric", "--best-checkpoint-metric", "accuracy"])
    manager = CheckpointManager(settings_from_flags(SaveSettings, args))
    settings = manager.settings
    assert manager.save_dir == tmp_path and settings.checkpoint_suffix == "-x"
    assert settings.keep_last_epochs == 3 and settings.maximize_best_checkpoint_metric
    assert settings.best_checkpoint_metric == "accuracy" and manager.best is None


def simulate(manager: CheckpointManager, epochs: int, updates_per_epoch: int, metrics=None) -> list[list[str]]:
    """Drive the manager like the training loop; returns the names written at each save."""
    written, num_updates, metrics = [], 0, iter(metrics or [])
    for epoch in range(1, epochs + 1):
        for step in range(1, updates_per_epoch + 1):
            num_updates += 1
            end_of_epoch = step == updates_per_epoch
            if manager.is_save_time(epoch, num_updates, end_of_epoch):
                paths = manager.save(make_state(num_updates, num_updates), epoch=epoch, num_updates=num_updates,
                                     end_of_epoch=end_of_epoch, val_metric=next(metrics, None))
                written.append([path.name for path in paths])
    return written


@pytest.mark.parametrize("iterator, epoch, finished", [
    (None, 1, 1),  # a model without training state
    ({"epoch": 1, "iterations_in_epoch": 7}, 1, 1),  # mid-epoch save
    ({"epoch": 3, "iterations_in_epoch": 0}, 3, 2),  # end-of-epoch 2 save: the position is already (3, 0)
    ({"epoch": 3}, 3, 2),  # no iterations_in_epoch: read as an epoch's end, like 0
])
def test_the_epoch_a_checkpoint_was_saved_in(iterator, epoch, finished):
    state = {"extra_state": {"train_iterator": iterator}} if iterator else {}
    assert (checkpoint.epoch(state), checkpoint.last_finished_epoch(state)) == (epoch, finished)


def test_names_over_a_simulated_run(tmp_path):
    manager = CheckpointManager(SaveSettings(tmp_path, save_interval=2, save_interval_updates=3))
    written = simulate(manager, epochs=4, updates_per_epoch=4, metrics=[5.0, 4.0, 4.5, 4.0, 3.0, 6.0, 1.0])
    assert written == [
        ["checkpoint_1_3.pt", "checkpoint_best.pt", "checkpoint_last.pt"],   # U=3, 5.0 first score
        ["checkpoint_2_6.pt", "checkpoint_best.pt", "checkpoint_last.pt"],   # U=6, 4.0 better
        ["checkpoint2.pt", "checkpoint_last.pt"],                            # U=8 end of epoch 2, 4.5
        ["checkpoint_3_9.pt", "checkpoint_best.pt", "checkpoint_last.pt"],   # U=9, 4.0 tie overwrites
        ["checkpoint_best.pt", "checkpoint_last.pt"],  # U=12 ends odd epoch 3 (no checkpoint3.pt), 3.0
        ["checkpoint_4_15.pt", "checkpoint_last.pt"],                        # U=15, 6.0 worse
        ["checkpoint4.pt", "checkpoint_best.pt", "checkpoint_last.pt"],      # U=16 end of epoch 4, 1.0
    ]
    assert tag_of(tmp_path / "checkpoint_last.pt") == 16 and tag_of(tmp_path / "checkpoint_best.pt") == 16
    assert tag_of(tmp_path / "checkpoint_2_6.pt") == 6 and tag_of(tmp_path / "checkpoint2.pt") == 8
    assert not list(tmp_path.glob("*.tmp*"))


def test_flags_that_turn_names_off_and_the_suffix(tmp_path):
    manager = CheckpointManager(SaveSettings(tmp_path, no_epoch_checkpoints=True, checkpoint_suffix="-shard0"))
    written = simulate(manager, epochs=2, updates_per_epoch=2, metrics=[2.0, 3.0])
    assert written == [["checkpoint_best-shard0.pt", "checkpoint_last-shard0.pt"], ["checkpoint_last-shard0.pt"]]
    other = tmp_path / "no_last"
    manager = CheckpointManager(SaveSettings(other, no_last_checkpoints=True))
    assert simulate(manager, epochs=2, updates_per_epoch=1) == [["checkpoint1.pt"], ["checkpoint2.pt"]]


def test_save_schedule_and_no_save(tmp_path):
    manager = CheckpointManager(SaveSettings(tmp_path / "out", no_save=True))
    assert not manager.is_save_time(1, 10, True)
    assert manager.save(make_state(1), epoch=1, num_updates=1, end_of_epoch=True, val_metric=2.0) == []
    assert manager.best == 2.0 and not (tmp_path / "out").exists()
    manager = CheckpointManager(SaveSettings(Path("unused"), save_interval=2, save_interval_updates=5))
    assert manager.is_save_time(2, 7, True) and not manager.is_save_time(1, 7, True)
    assert manager.is_save_time(1, 10, False) and not manager.is_save_time(1, 0, False)
    assert not manager.is_save_time(1, 7, False) and manager.is_save_time(1, 7, False, stopping=True)


@pytest.mark.parametrize("maximize, scores, best_at, best", [
    (False, [3.0, 2.0, 2.0, 5.0, 1.5], [1, 2, 3, 5], 1.5),
    (True, [60.0, 70.0, 70.0, 65.0, 71.0], [1, 2, 3, 5], 71.0),
    (False, [math.nan, 4.0, math.nan, 4.5], [2], 4.0),
])
def test_best_tracking_ties_overwrite(tmp_path, maximize, scores, best_at, best):
    manager = CheckpointManager(SaveSettings(tmp_path, maximize_best_checkpoint_metric=maximize, no_epoch_checkpoints=True))
    for epoch, score in enumerate(scores, start=1):
        paths = manager.save(make_state(epoch), epoch=epoch, num_updates=epoch, end_of_epoch=True, val_metric=score)
        assert (tmp_path / "checkpoint_best.pt" in paths) == (epoch in best_at)
    assert tag_of(tmp_path / "checkpoint_best.pt") == best_at[-1] and manager.best == best
    saved = load_checkpoint(tmp_path / "checkpoint_last.pt")["extra_state"]
    assert saved["best"] == best and saved["val_loss"] == scores[-1]


def test_best_is_recorded_in_the_file_it_is_written_with(tmp_path):
    manager = CheckpointManager(SaveSettings(tmp_path))
    manager.save(make_state(1), epoch=1, num_updates=1, end_of_epoch=True, val_metric=2.0)
    state = make_state(2)
    manager.save(state, epoch=2, num_updates=2, end_of_epoch=True, val_metric=1.0)
    assert load_checkpoint(tmp_path / "checkpoint_best.pt")["extra_state"]["best"] == 1.0
    assert load_checkpoint(tmp_path / "checkpoint1.pt")["extra_state"]["best"] == 2.0
    assert state["extra_state"]["best"] is None  # the caller's dict is left alone
    manager.restore_best(0.5)
    paths = manager.save(make_state(3), epoch=3, num_updates=3, end_of_epoch=True, val_metric=0.6)
    assert tmp_path / "checkpoint_best.pt" not in paths and manager.best == 0.5
    manager.restore_best(None)
    assert manager.best is None


def test_is_better_and_patience(tmp_path):
    low, high = CheckpointManager(SaveSettings(Path("x"))), CheckpointManager(SaveSettings(Path("x"), maximize_best_checkpoint_metric=True))
    assert low.is_better(1.0, 2.0) and low.is_better(1.0, 1.0) and not low.is_better(1.0, 1.0, strict=True)
    assert high.is_better(2.0, 1.0) and not high.is_better(1.0, 2.0) and high.is_better(5.0, None)
    assert not low.is_better(math.nan, 2.0) and not low.is_better(math.inf, None)
    manager = CheckpointManager(SaveSettings(tmp_path, patience=2))
    assert [manager.should_stop_early(v) for v in [5.0, 4.0, 4.0, 3.9, 3.9, 4.2]] == \
        [False, False, False, False, False, True]
    assert not CheckpointManager(SaveSettings(tmp_path)).should_stop_early(1.0)
    maximizing = CheckpointManager(SaveSettings(tmp_path, patience=1, maximize_best_checkpoint_metric=True))
    assert [maximizing.should_stop_early(v) for v in [50.0, 60.0, None, 60.0]] == [False, False, False, True]


def test_keep_interval_updates_with_pattern(tmp_path):
    manager = CheckpointManager(SaveSettings(tmp_path, save_interval_updates=2, keep_interval_updates=2,
                                keep_interval_updates_pattern=8, no_epoch_checkpoints=True))
    simulate(manager, epochs=2, updates_per_epoch=11)
    interval = sorted(name for name in names_in(tmp_path) if name.count("_") == 2)
    # U=2..20 even (22 ends epoch 2): multiples of 8 spared, plus the newest two others.
    assert interval == ["checkpoint_1_8.pt", "checkpoint_2_16.pt", "checkpoint_2_18.pt", "checkpoint_2_20.pt"]


def test_keep_last_epochs_and_foreign_files_survive(tmp_path):
    foreign = ["checkpoint7-old.pt", "checkpoint_best_backup.pt", "notes.txt", "checkpoint3.pt.bak",
               "checkpoint1-x.pt"]
    for name in foreign:
        (tmp_path / name).write_text("mine")
    manager = CheckpointManager(SaveSettings(tmp_path, keep_last_epochs=2))
    simulate(manager, epochs=5, updates_per_epoch=1)
    assert names_in(tmp_path) == {"checkpoint4.pt", "checkpoint5.pt", "checkpoint_last.pt", *foreign}


@pytest.mark.parametrize("maximize, scores, kept", [
    (False, [3.0, 1.0, 2.0, 4.0, 0.5], ["0.500", "1.000"]),
    (True, [3.0, 1.0, 2.0, 4.0, 0.5], ["3.000", "4.000"]),
    (False, [-1.0, -2.0, -0.5], ["-1.000", "-2.000"]),
])
def test_keep_best_checkpoints(tmp_path, maximize, scores, kept):
    manager = CheckpointManager(SaveSettings(tmp_path, keep_best_checkpoints=2, maximize_best_checkpoint_metric=maximize,
                                best_checkpoint_metric="acc", no_epoch_checkpoints=True))
    for epoch, score in enumerate(scores, start=1):
        manager.save(make_state(score), epoch=epoch, num_updates=epoch, end_of_epoch=True, val_metric=score)
    names = sorted(name for name in names_in(tmp_path) if name.startswith("checkpoint.best_"))
    assert names == sorted(f"checkpoint.best_acc_{value}.pt" for value in kept)
    assert [tag_of(tmp_path / f"checkpoint.best_acc_{value}.pt") for value in kept] == [float(v) for v in kept]


def test_hard_linked_names_stay_independent(tmp_path):
    temporary_path(tmp_path / "checkpoint_last.pt").write_bytes(b"junk")  # left by a killed process with our pid
    manager = first_save(tmp_path)
    # one serialized file under several names (hard links), not full copies
    assert (tmp_path / "checkpoint_last.pt").stat().st_ino == (tmp_path / "checkpoint1.pt").stat().st_ino
    manager.save(make_state(2), epoch=2, num_updates=2, end_of_epoch=True, val_metric=3.0)
    assert tag_of(tmp_path / "checkpoint1.pt") == 1 and tag_of(tmp_path / "checkpoint_best.pt") == 1
    assert tag_of(tmp_path / "checkpoint2.pt") == 2 and tag_of(tmp_path / "checkpoint_last.pt") == 2
    assert not list(tmp_path.glob("*.tmp*"))


def test_copies_when_the_file_system_has_no_hard_links(tmp_path, monkeypatch):
    def no_links(*_):
        raise OSError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(os, "link", no_links)
    manager = CheckpointManager(SaveSettings(tmp_path))
    paths = manager.save(make_state(7), epoch=1, num_updates=1, end_of_epoch=True, val_metric=1.0)
    assert [tag_of(path) for path in paths] == [7, 7, 7] and not list(tmp_path.glob("*.tmp*"))


def first_save(tmp_path: Path) -> CheckpointManager:
    manager = CheckpointManager(SaveSettings(tmp_path))
    manager.save(make_state(1), epoch=1, num_updates=1, end_of_epoch=True, val_metric=1.0)
    return manager


def half_written_save(exception: BaseException):
    def save(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise exception
    return save


@pytest.mark.parametrize("failure, raised, message", [
    (KeyboardInterrupt(), KeyboardInterrupt, None),
    (OSError(errno.ENOSPC, "No space left on device"), UserError,
     r"could not write checkpoint to .*checkpoint2\.pt: No space left on device; previous checkpoints are intact"),
])
def test_failed_serialization_keeps_previous_checkpoints(tmp_path, monkeypatch, failure, raised, message):
    manager = first_save(tmp_path)
    monkeypatch.setattr(torch, "save", half_written_save(failure))
    with pytest.raises(raised, match=message):
        manager.save(make_state(2), epoch=2, num_updates=2, end_of_epoch=True, val_metric=0.5)
    monkeypatch.undo()
    assert tag_of(tmp_path / "checkpoint_last.pt") == 1 and tag_of(tmp_path / "checkpoint_best.pt") == 1
    assert names_in(tmp_path) == {"checkpoint1.pt", "checkpoint_best.pt", "checkpoint_last.pt"}  # no temp file


def test_crash_between_renames_leaves_every_name_whole(tmp_path, monkeypatch):
    manager = first_save(tmp_path)
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise RuntimeError("power cut")
        real_replace(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(RuntimeError, match="power cut"):
        manager.save(make_state(2), epoch=2, num_updates=2, end_of_epoch=True, val_metric=0.5)
    monkeypatch.undo()
    assert not list(tmp_path.glob("*.tmp*"))
    assert tag_of(tmp_path / "checkpoint2.pt") == 2
    assert tag_of(tmp_path / "checkpoint_best.pt") == 1 and tag_of(tmp_path / "checkpoint_last.pt") == 1


def test_a_bug_while_saving_keeps_its_traceback(tmp_path):
    manager = CheckpointManager(SaveSettings(tmp_path))
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        manager.save({"model": {}, "bad": lambda: None}, epoch=1, num_updates=1, end_of_epoch=True,
                     val_metric=None)
    assert not list(tmp_path.glob("*.tmp*"))


def test_check_writable_creates_the_directory_and_refuses_a_path_under_a_file(tmp_path):
    CheckpointManager(SaveSettings(tmp_path / "a" / "b")).check_writable()
    assert (tmp_path / "a" / "b").is_dir() and not list((tmp_path / "a" / "b").iterdir())
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match=r"--save-dir .*file/ckpt: not writable"):
        CheckpointManager(SaveSettings(blocker / "ckpt")).check_writable()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root ignores directory permissions; covered by the regular-file case")
def test_check_writable_read_only_directory(tmp_path):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o500)
    try:
        with pytest.raises(UserError, match="--save-dir .*ro: not writable"):
            CheckpointManager(SaveSettings(read_only)).check_writable()
    finally:
        read_only.chmod(0o700)


def test_round_trip_of_the_fairseq_keys(tmp_path):
    flags = dict(lr=[1e-5], save_dir=tmp_path, fn=print, nested=argparse.Namespace(a=(1, 2)),
                 mixed=[1, object()], table={"k": None, "f": len})
    cfg = plain_config(flags)
    assert cfg == {"lr": [1e-5], "save_dir": str(tmp_path), "nested": {"a": (1, 2)}, "table": {"k": None}}
    CheckpointManager(SaveSettings(tmp_path)).save({**make_state(3, 9), "cfg": cfg}, epoch=1, num_updates=9, end_of_epoch=True,
                                     val_metric=None)
    loaded = load_checkpoint(tmp_path / "checkpoint_last.pt")
    assert set(loaded) == {"args", "cfg", "model", "criterion", "optimizer_history", "task_state",
                           "extra_state", "last_optimizer_state"}
    assert loaded["args"] is None and loaded["criterion"] is None and loaded["cfg"] == cfg
    assert loaded["optimizer_history"] == [{"criterion_name": "masked_lm", "optimizer_name": "adam",
                                            "lr_scheduler_state": {"best": None, "step": 9}, "num_updates": 9}]
    assert loaded["extra_state"] == {"train_iterator": {"version": 2, "epoch": 1, "iterations_in_epoch": 2,
                                                        "shuffle": True},
                                     "val_loss": None, "best": None, "metrics": {}, "previous_training_time": 0.0}
    assert "last_optimizer_state" not in make_state(1, save_optimizer_state=False)
    old = make_state(1, 5, optimizer_name="fp16")["optimizer_history"]
    history = make_state(2, 6, previous_history=old)["optimizer_history"]
    assert [entry["optimizer_name"] for entry in history] == ["fp16", "adam"]


def test_what_a_checkpoint_says_about_its_run(tmp_path):
    ours = make_state(1, 42)
    ours["extra_state"]["train_iterator"]["epoch"] = 3
    assert checkpoint.training_flags(ours) == {"lr": [1e-5], "arch": "roberta_tiny"}
    assert checkpoint.num_updates(ours) == 42 and checkpoint.epoch(ours) == 3
    torch.save({"args": argparse.Namespace(arch="roberta_large"), "model": {}}, tmp_path / "model.pt")
    released = load_checkpoint(tmp_path / "model.pt")  # a Namespace needs no unsafe unpickling
    assert checkpoint.training_flags(released) == {"arch": "roberta_large"}
    assert checkpoint.num_updates(released) == 0 and checkpoint.epoch(released) == 1
    fairseq = {"args": None, "cfg": {"common": {"seed": 1}, "task": {"_name": "masked_lm", "data": "d"}}}
    assert checkpoint.training_flags(fairseq) == {"seed": 1, "_name": "masked_lm", "data": "d"}


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = Path("/tmp") / f"roberta-checkpoint-exploit-{os.getpid()}"


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, writer):
    path = tmp_path / "evil.pt"
    payload = {"model": {}, "x": Exploit()}
    if writer == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    MARKER.unlink(missing_ok=True)
    with pytest.raises(UserError, match=r"refusing to unpickle .*evil\.pt: it needs arbitrary code "
                                        r"\(global (posix|os)\.system\)\. If you trust the file, pass "
                                        r"--unsafe-load"):
        load_checkpoint(path)
    assert not MARKER.exists()


def test_unsafe_load_reads_what_safe_load_refuses(tmp_path):
    from fractions import Fraction
    path = tmp_path / "legacy.pt"
    torch.save({"model": {}, "extra_state": {"best": Fraction(1, 3)}}, path)
    with pytest.raises(UserError, match="global fractions.Fraction"):
        load_checkpoint(path)
    assert load_checkpoint(path, unsafe=True)["extra_state"]["best"] == Fraction(1, 3)


def broken_files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.pt"
    torch.save(make_state(1), good)
    paths = {"missing": tmp_path / "nope.pt"}
    files = {"truncated": good.read_bytes()[: good.stat().st_size // 2], "empty": b"",
             "text": b"hello world\nthis is not a checkpoint\n", "literal": b"{'model': 1}"}
    for name, content in files.items():
        paths[name] = tmp_path / f"{name}.pt"
        paths[name].write_bytes(content)
    for name, obj in {"no_model": {"state_dict": {}}, "a_list": [1, 2]}.items():
        paths[name] = tmp_path / f"{name}.pt"
        torch.save(obj, paths[name])
    return paths


@pytest.mark.parametrize("kind, message", [
    ("truncated", "truncated or corrupt"), ("empty", "empty file"), ("text", "not a PyTorch checkpoint"),
    ("literal", "not a PyTorch checkpoint"), ("no_model", "no 'model' entry"), ("a_list", "no 'model' entry"),
    ("missing", "no such file"),
])
def test_load_errors_name_the_file(tmp_path, kind, message):
    path = broken_files(tmp_path)[kind]
    with pytest.raises(UserError, match=message) as caught:
        load_checkpoint(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_every_truncation_point_is_a_user_error(tmp_path):
    good = tmp_path / "good.pt"
    torch.save(make_state(1), good)
    data, cut = good.read_bytes(), tmp_path / "cut.pt"
    for size in range(0, len(data), max(1, len(data) // 60)):
        cut.write_bytes(data[:size])
        with pytest.raises(UserError, match="cut.pt"):
            load_checkpoint(cut)


def test_default_restore_file(tmp_path):
    assert starting_file(restore_settings(tmp_path)) == (None, Resets())
    first_save(tmp_path)
    assert starting_file(restore_settings(tmp_path)) == (tmp_path / "checkpoint_last.pt", Resets())
    assert restore_settings(tmp_path).resumes_own_run
    tmp_path = tmp_path / "suffixed"
    CheckpointManager(SaveSettings(tmp_path, checkpoint_suffix="-s")).save(make_state(1), epoch=1, num_updates=1,
                                                                           end_of_epoch=True, val_metric=None)
    assert starting_file(restore_settings(tmp_path))[0] is None
    assert starting_file(restore_settings(tmp_path, suffix="-s"))[0] == tmp_path / "checkpoint_last-s.pt"


def test_explicit_restore_file_must_exist(tmp_path, monkeypatch):
    missing = tmp_path / "typo.pt"
    with pytest.raises(UserError, match=rf"--restore-file {missing}: no such file"):
        starting_file(restore_settings(tmp_path, str(missing)))
    first_save(tmp_path)
    monkeypatch.chdir(tmp_path.parent)
    with pytest.raises(UserError, match=r"did you mean .*checkpoint_best\.pt"):
        starting_file(restore_settings(tmp_path, "checkpoint_best.pt"))
    explicit = tmp_path / "checkpoint1.pt"
    assert starting_file(restore_settings(tmp_path / "elsewhere", str(explicit))) == (explicit, Resets())
    assert not restore_settings(tmp_path, str(explicit)).resumes_own_run


def test_finetune_from_model_only_for_a_fresh_run(tmp_path):
    pretrained = tmp_path / "model.pt"
    torch.save(make_state(0), pretrained)
    save_dir = tmp_path / "run"
    path, resets = starting_file(restore_settings(save_dir, finetune_from_model=str(pretrained)))
    assert path == pretrained and resets == Resets(True, True, True, True)
    first_save(save_dir)
    assert starting_file(restore_settings(save_dir, finetune_from_model=str(pretrained))) == \
        (save_dir / "checkpoint_last.pt", Resets())
    with pytest.raises(UserError, match="--finetune-from-model .*missing.pt: no such file"):
        starting_file(restore_settings(tmp_path / "new", finetune_from_model=str(tmp_path / "missing.pt")))


def saved_state() -> dict:
    state = make_state(1, 40, best=0.7, metrics={"loss": {"sum": 3.0}}, previous_training_time=120.0)
    state["extra_state"]["train_iterator"]["iterations_in_epoch"] = 5
    return state


def restored(state: dict, resets: Resets, overrides: str = "{}") -> dict:
    """Every restored value by name: the trainer's part and the loop's."""
    trainer, progress = restored_parts(state, resets, overrides)
    return {**vars(trainer), **vars(progress)}


def test_no_resets_restores_everything():
    trainer, progress = restored_parts(saved_state(), Resets(), "{'lr': 1e-4}")
    trainer.check_names("adam", "masked_lm")
    assert trainer.optimizer is not None and trainer.optimizer_overrides == {"lr": 1e-4}
    assert trainer.lr_scheduler == {"best": None, "step": 40} and trainer.num_updates == 40
    assert progress.train_iterator["iterations_in_epoch"] == 5 and progress.meters == {"loss": {"sum": 3.0}}
    assert progress.best == 0.7 and progress.previous_training_time == 120.0 and len(trainer.optimizer_history) == 1


@pytest.mark.parametrize("resets, dropped", [
    # --reset-optimizer also drops the scheduler, the update count and the best score (fairseq #1302)
    (Resets(optimizer=True), {"optimizer", "optimizer_overrides", "lr_scheduler", "num_updates", "best",
                              "optimizer_reset"}),
    (Resets(lr_scheduler=True), {"lr_scheduler"}),
    (Resets(dataloader=True), {"train_iterator"}),
    (Resets(meters=True), {"meters", "best", "previous_training_time"}),
])
def test_single_resets(resets, dropped):
    full = restored(saved_state(), Resets(), "{'lr': 1.0}")
    part = restored(saved_state(), resets, "{'lr': 1.0}")
    assert {name for name in full if full[name] != part[name]} == dropped


def test_epoch_boundary_and_a_model_without_training_state():
    state = saved_state()
    state["extra_state"]["train_iterator"].update(epoch=2, iterations_in_epoch=0)
    _, progress = restored_parts(state, Resets())
    assert progress.meters is None and progress.best == 0.7
    assert restored_parts({"model": {"w": 1}}, Resets()) == (TrainerState(), RunProgress())
    assert restored_parts({}, EVERYTHING) == (TrainerState(optimizer_reset=True), RunProgress())


def test_optimizer_mismatch_suggests_reset_optimizer():
    trainer, _ = restored_parts(saved_state(), Resets())
    with pytest.raises(UserError, match="optimizer adam, this run uses fp16.*--reset-optimizer"):
        trainer.check_names("fp16", "masked_lm")
    with pytest.raises(UserError, match="criterion masked_lm, this run uses sentence_ranking.*--reset-optimizer"):
        trainer.check_names("adam", "sentence_ranking")
    reset, _ = restored_parts(saved_state(), Resets(optimizer=True))
    reset.check_names("fp16", "masked_lm")
    assert reset.num_updates == 0


def test_resets_from_flags_and_merged():
    settings = settings_from_flags(RestoreSettings, parse(["--reset-meters", "--reset-dataloader"]))
    assert settings.resets == Resets(dataloader=True, meters=True)
    assert Resets(optimizer=True).merged_with(Resets(meters=True)) == Resets(optimizer=True, meters=True)
