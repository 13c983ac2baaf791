"""Token ids in a split's `.bin` are checked against its dictionary when the split is loaded:
one line naming the file, the id and the dictionary size, instead of an IndexError mid-run, a
misleading `<mask>` message, or (an id landing on `<mask>`) silent training."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roberta.cli import train
from roberta.data.indexed_dataset import (MMapIndexedDataset, MMapIndexedDatasetBuilder, TokenIdRange,
                                          load_indexed_dataset)
from roberta.errors import UserError
from support.cli import assert_one_line_error
from support.train_args import tiny_args

pytestmark = pytest.mark.reliability

DTYPES = [np.uint8, np.uint16, np.uint32, np.int16, np.int32, np.int64]


def build(prefix: Path, items: list[list[int]], dtype: type) -> Path:
    with MMapIndexedDatasetBuilder(f"{prefix}.bin", dtype) as builder:
        for item in items:
            builder.add_item(np.asarray(item, dtype=np.int64))
        builder.finalize(f"{prefix}.idx")
    return prefix


@st.composite
def split_and_dictionary(draw: st.DrawFn) -> tuple[type, list[list[int]], int]:
    dtype = draw(st.sampled_from(DTYPES))
    info = np.iinfo(dtype)
    size = draw(st.integers(1, min(int(info.max), 70_000)))
    ids = st.integers(max(int(info.min), -3), min(int(info.max), size + 3))
    items = draw(st.lists(st.lists(ids, max_size=6), max_size=6))
    return dtype, items, size


@settings(max_examples=150, deadline=None)
@given(split_and_dictionary())
def test_a_split_loads_exactly_when_every_id_indexes_the_dictionary(case: tuple[type, list[list[int]], int]) -> None:
    dtype, items, size = case
    values = [value for item in items for value in item]
    with tempfile.TemporaryDirectory() as folder:
        prefix = build(Path(folder) / "train", items, dtype)
        allowed = TokenIdRange(size, "data-bin/dict.txt")
        if all(0 <= value < size for value in values):
            dataset = load_indexed_dataset(prefix, token_ids=allowed)
            assert [dataset[i].tolist() for i in range(len(dataset))] == items
            return
        with pytest.raises(UserError) as error:
            load_indexed_dataset(prefix, token_ids=allowed)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{prefix}.bin holds token id ")
    culprit = min(values) if min(values) < 0 else max(values)
    sequence = next(index for index, item in enumerate(items) if culprit in item)
    assert f"token id {culprit} (sequence {sequence})" in message
    if culprit >= 0:
        assert f"data-bin/dict.txt has {size} entries" in message
    else:
        assert "never negative" in message


def test_an_empty_split_loads(tmp_path: Path) -> None:
    for items in ([], [[], []]):
        prefix = build(tmp_path / f"empty{len(items)}", items, np.uint16)
        assert len(load_indexed_dataset(prefix, token_ids=TokenIdRange(8, "dict.txt"))) == len(items)


def test_every_shard_of_a_combined_split_is_checked(tmp_path: Path) -> None:
    build(tmp_path / "train", [[4, 5]], np.uint16)
    build(tmp_path / "train1", [[4], [9]], np.uint16)
    with pytest.raises(UserError, match=r"train1\.bin holds token id 9 \(sequence 1\), but dict\.txt has 9 entries"):
        load_indexed_dataset(tmp_path / "train", combine=True, token_ids=TokenIdRange(9, "dict.txt"))


def test_float_data_is_not_token_ids(tmp_path: Path) -> None:
    prefix = build(tmp_path / "train", [[1, 2]], np.float64)
    with pytest.raises(UserError, match=r"train\.bin stores float64 values, not token ids"):
        load_indexed_dataset(prefix, token_ids=TokenIdRange(9, "dict.txt"))


# ------------------------------------------------------------------------------- the commands


def set_token(prefix: Path, position: int, value: int) -> None:
    """Overwrite one token of a finalized split in place."""
    dtype = MMapIndexedDataset(prefix).dtype
    data = np.memmap(f"{prefix}.bin", dtype=dtype, mode="r+")
    data[position] = value
    data.flush()
    del data


def dictionary_size(data: Path) -> int:
    return 4 + len((data / "dict.txt").read_text(encoding="utf-8").splitlines())


@pytest.fixture(scope="module")
def trained_checkpoint(demo_data_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    save_dir = tmp_path_factory.mktemp("ckpt")
    train.main(tiny_args(demo_data_bin, save_dir, "--max-update", "1"))
    return save_dir / "checkpoint_last.pt"


@pytest.fixture
def data_copy(demo_data_bin: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data-bin"
    shutil.copytree(demo_data_bin, data)
    return data


# The id just past dict.txt is the index the task gives <mask>: once it trained silently.
@pytest.mark.parametrize("past_the_end", [0, 7])
def test_one_id_beyond_the_dictionary_stops_train_and_validate(command, data_copy: Path, trained_checkpoint: Path,
                                                               tmp_path: Path, past_the_end: int) -> None:
    size = dictionary_size(data_copy)
    bad = size + past_the_end
    set_token(data_copy / "train", 3, bad)
    result = command("train", *tiny_args(data_copy, tmp_path / "ckpt"))
    assert_one_line_error(result, "roberta-train", f"{data_copy / 'train.bin'} holds token id {bad}",
                          f"{data_copy / 'dict.txt'} has {size} entries")
    assert not (tmp_path / "ckpt" / "checkpoint_last.pt").exists()

    set_token(data_copy / "valid", 0, bad)
    result = command("validate", data_copy, "--path", trained_checkpoint, "--cpu")
    assert_one_line_error(result, "roberta-validate", f"{data_copy / 'valid.bin'} holds token id {bad}",
                          f"has {size} entries")


def test_a_short_dict_txt_is_named_not_mistaken_for_mask(command, data_copy: Path, tmp_path: Path) -> None:
    highest = max(int(MMapIndexedDataset(data_copy / split).value_range()[1]) for split in ("train", "valid"))
    entries = (data_copy / "dict.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    # Cut dict.txt so the data's largest id is exactly where the task appends <mask>.
    (data_copy / "dict.txt").write_text("".join(entries[:highest - 4]), encoding="utf-8")
    result = command("train", *tiny_args(data_copy, tmp_path / "ckpt"))
    assert_one_line_error(result, "roberta-train", f"holds token id {highest}",
                          f"{data_copy / 'dict.txt'} has {highest} entries", "binarized with another dictionary")
    assert "<mask>" not in result.stderr


def write_split(prefix: Path, items: list[list[int]], dictionary: str = "a 5\nb 3\n") -> None:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    (prefix.parent / "dict.txt").write_text(dictionary, encoding="utf-8")
    build(prefix, items, np.uint16)


def fine_tuning_task(root: Path, task: str, **values: object):
    import tasks  # noqa: F401  (registers the built-in tasks)
    from roberta.registry import TASKS

    task_cls = TASKS.get(task)
    return task_cls.setup_task(task_cls.Settings(data=str(root), criterion=task, max_positions=512, **values))


# dict.txt holds a and b: with the 4 special symbols, 6 entries, and id 6 is where <mask> goes.
@pytest.mark.parametrize("task, fields, values", [
    ("sentence_prediction", ["input0", "input1"], {"num_classes": 1, "regression_target": True}),
    ("sentence_ranking", ["input0", "input1", "input2"], {"num_classes": 2}),
    ("squad2", [""], {}),
])
def test_fine_tuning_splits_are_checked(task: str, fields: list[str], values: dict, tmp_path: Path) -> None:
    for field in fields:
        write_split(tmp_path / field / "train", [[4, 5, 2]])
    write_split(tmp_path / fields[-1] / "train", [[4, 5, 2], [4, 6, 2]])
    loader = fine_tuning_task(tmp_path, task, **values)
    with pytest.raises(UserError, match=r"train\.bin holds token id 6 \(sequence 1\), but "
                                        r"\S+/dict\.txt has 6 entries"):
        loader.load_dataset("train")


def test_a_label_split_is_checked_against_the_label_dictionary(tmp_path: Path) -> None:
    write_split(tmp_path / "input0" / "train", [[4, 2], [5, 2]])
    write_split(tmp_path / "label" / "train", [[4, 2], [9, 2]], dictionary="yes 1\nno 1\n")
    loader = fine_tuning_task(tmp_path, "sentence_prediction", num_classes=2)
    with pytest.raises(UserError, match=r"label/train\.bin holds token id 9 \(sequence 1\), but "
                                        r"\S+label/dict\.txt has 6 entries"):
        loader.load_dataset("train")
    write_split(tmp_path / "label" / "train", [[4, 2], []], dictionary="yes 1\nno 1\n")
    with pytest.raises(UserError, match=r"label/train\.bin: example 1 has no label"):
        loader.load_dataset("train")
