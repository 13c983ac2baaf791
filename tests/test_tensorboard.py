"""--tensorboard-logdir for real: real roberta-train runs, their event files read back by
TensorBoard's own EventAccumulator and compared with the JSON log of the same runs.

fairseq's layout: one folder per progress tag (`train_inner`, `train`, `valid`), one scalar per
stat, at the update (num_updates) the log line reports.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from roberta.cli import train
from roberta.cli.assembly import LoopSettings
from roberta.distributed import DistributedContext
from roberta.logging import STAT_DECIMALS, ScalarWriter, scalar_writer
from support.logs import fairseq_log
from support.train_args import SMALLEST_SIZES, tiny_run

# A first run of 6 updates, resumed up to 12. Saves (and so validations) every 4 updates and at
# --max-update: the first run validates at 4 and 6, the resumed run at 8 and 12.
FIRST_RUN, RESUMED_RUN, SAVE_EVERY = 6, 12, 4
VALIDATIONS = [4, 6, 8, 12]


@dataclass(frozen=True)
class Runs:
    save_dir: Path
    logdir: Path
    log: Path  # both runs' --log-file


def run_train(data: Path, save_dir: Path, logdir: Path, log: Path, max_update: int, *extra: str) -> None:
    train.main(tiny_run(data, save_dir, *SMALLEST_SIZES, "--lr", "1e-3", "--total-num-update", str(RESUMED_RUN),
                        "--max-update", str(max_update), "--save-interval-updates", str(SAVE_EVERY),
                        "--log-interval", "1", "--log-file", str(log), "--tensorboard-logdir", str(logdir), *extra))


@pytest.fixture(scope="module")
def runs(demo_data_bin: Path, tmp_path_factory) -> Runs:
    pytest.importorskip("tensorboard")
    root = tmp_path_factory.mktemp("tensorboard")
    found = Runs(root / "save", root / "tb", root / "train.log")
    for max_update in (FIRST_RUN, RESUMED_RUN):
        run_train(demo_data_bin, found.save_dir, found.logdir, found.log, max_update)
    return found


def read_events(logdir: Path, *, hide_orphans: bool = True) -> dict[str, dict[str, list[tuple[int, float | None]]]]:
    """{tag folder: {name: [(step, value), ...]}} of every scalar and text in `logdir`, in the order
    TensorBoard reads them. `hide_orphans=False` turns off TensorBoard's purging of the points
    a restarted run supersedes, so every point written to disk is seen."""
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    found = {}
    for folder in sorted(path for path in logdir.iterdir() if path.is_dir()):
        events = event_accumulator.EventAccumulator(str(folder), purge_orphaned_data=hide_orphans)
        events.Reload()
        tags = events.Tags()
        series = {name: [(point.step, point.value) for point in events.Scalars(name)] for name in tags["scalars"]}
        series.update({name: [(point.step, None) for point in events.Tensors(name)] for name in tags["tensors"]})
        found[folder.name] = series
    return found


def steps(points: list[tuple[int, float | None]]) -> list[int]:
    return [step for step, _ in points]


def assert_shown_as(value: float | None, stat: str, text: str) -> None:
    """`value` (TensorBoard keeps float32) is the number the log shows as `text`, to its rounding."""
    assert value is not None
    name = stat.removeprefix("best_")
    if name == "lr":  # printed with {:g}: six significant digits
        assert value == pytest.approx(float(text), rel=1e-5), (stat, value, text)
    else:
        assert value == pytest.approx(float(text), rel=1e-6, abs=0.5 * 10 ** -STAT_DECIMALS[name]), (stat, value, text)


def assert_matches_log(series: dict[str, list[tuple[int, float | None]]], events: list[dict], prefix: str,
                       stats: tuple[str, ...]) -> None:
    """Each stat is written at the updates of the log's lines, with the values they show."""
    updates = [int(event[f"{prefix}num_updates"]) for event in events]
    for stat in stats:
        assert steps(series[stat]) == updates, stat
        for (_, value), event in zip(series[stat], events):
            assert_shown_as(value, stat, event[f"{prefix}{stat}"])


def test_training_stats_are_written_at_the_logged_updates(runs: Runs) -> None:
    found = read_events(runs.logdir)
    assert sorted(found) == ["train", "train_inner", "valid"]
    inner = fairseq_log(runs.log, "train_inner")
    assert [int(event["num_updates"]) for event in inner] == list(range(1, RESUMED_RUN + 1))
    assert_matches_log(found["train_inner"], inner, "", ("loss", "ppl", "lr", "gnorm"))
    assert "num_updates" not in found["train_inner"]
    # Each run's epoch summary: the first run's at its stop, the resumed run's for the whole epoch.
    summaries = fairseq_log(runs.log, "train")
    assert [int(event["train_num_updates"]) for event in summaries] == [FIRST_RUN, RESUMED_RUN]
    assert_matches_log(found["train"], summaries, "train_", ("loss", "lr", "gnorm"))


def test_validation_metrics_are_written_at_each_validation(runs: Runs) -> None:
    validations = fairseq_log(runs.log, "valid")
    assert [int(event["valid_num_updates"]) for event in validations] == VALIDATIONS
    assert_matches_log(read_events(runs.logdir)["valid"], validations, "valid_", ("loss", "ppl", "best_loss"))


def test_a_resumed_run_writes_each_update_once(runs: Runs) -> None:
    for tag, series in read_events(runs.logdir, hide_orphans=False).items():
        assert len(list((runs.logdir / tag).glob("events.out.tfevents.*"))) == 2, "one event file per tag and run"
        for name, points in series.items():
            assert steps(points) == sorted(set(steps(points))), (tag, name, steps(points))
    # The command line, once per run, at the first update it trained.
    assert steps(read_events(runs.logdir)["valid"]["sys.argv/text_summary"]) == [1, FIRST_RUN + 1]


def test_a_restart_from_an_older_checkpoint_replaces_the_updates_after_it(runs: Runs, demo_data_bin: Path,
                                                                          tmp_path: Path) -> None:
    """As after a crash: the run resumes from update 8 while the folder holds updates up to 12."""
    logdir, log = tmp_path / "tb", tmp_path / "train.log"
    shutil.copytree(runs.logdir, logdir)
    run_train(demo_data_bin, tmp_path / "save", logdir, log, 10,
              "--restore-file", str(runs.save_dir / "checkpoint_1_8.pt"))
    on_disk = read_events(logdir, hide_orphans=False)["train_inner"]["loss"]
    assert steps(on_disk) == [*range(1, 13), 9, 10], "the restart must rewrite updates the folder holds"
    shown = read_events(logdir)
    inner = fairseq_log(log, "train_inner")
    assert [int(event["num_updates"]) for event in inner] == [9, 10]
    assert steps(shown["train_inner"]["loss"]) == list(range(1, 11))
    assert_matches_log({stat: points[-2:] for stat, points in shown["train_inner"].items()}, inner, "",
                       ("loss", "lr", "gnorm"))
    assert steps(shown["valid"]["loss"]) == [4, 6, 8, 10]
    assert steps(shown["train"]["loss"]) == [FIRST_RUN, 10]


def test_only_rank_zero_writes_events() -> None:
    loop = LoopSettings(log_format="tqdm", tensorboard_logdir="tb")
    assert train.rank_loop_settings(loop, DistributedContext(rank=0, world_size=2)) == loop
    other = train.rank_loop_settings(loop, DistributedContext(rank=1, local_rank=1, world_size=2))
    assert (other.tensorboard_logdir, other.log_format) == (None, "simple")
    assert type(scalar_writer(other.tensorboard_logdir)) is ScalarWriter  # writes nothing
