"""The fairseq mmap format: byte layout, reading back, dtype choice, corruption, atomicity."""
from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from roberta.data.indexed_dataset import (ConcatIndexedDataset, MMapIndexedDataset,
                                          MMapIndexedDatasetBuilder, best_fitting_dtype,
                                          dataset_exists, dtype_code, load_indexed_dataset)
from roberta.errors import UserError

ITEMS = [[0, 31414, 232, 328, 2], [2], [], [65499, 7, 2]]


def build(prefix: Path, items: list[list[int]], dtype: type = np.uint16) -> Path:
    with MMapIndexedDatasetBuilder(f"{prefix}.bin", dtype) as builder:
        for item in items:
            builder.add_item(torch.tensor(item, dtype=torch.int32))
        builder.finalize(f"{prefix}.idx")
    return prefix


def test_idx_and_bin_bytes_match_the_spec(tmp_path: Path) -> None:
    prefix = build(tmp_path / "train", ITEMS)
    sizes = [len(item) for item in ITEMS]
    pointers = [0, 10, 12, 12]
    expected_idx = (b"MMIDIDX\x00\x00" + struct.pack("<Q", 1) + struct.pack("<B", 8)
                    + struct.pack("<Q", 4) + struct.pack("<4i", *sizes)
                    + struct.pack("<4q", *pointers))
    assert (tmp_path / "train.idx").read_bytes() == expected_idx
    assert len(expected_idx) == 26 + 12 * 4
    flat = [value for item in ITEMS for value in item]
    assert (tmp_path / "train.bin").read_bytes() == struct.pack(f"<{len(flat)}H", *flat)
    assert dataset_exists(prefix)
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.int64, np.uint16, np.uint32])
def test_write_then_read(tmp_path: Path, dtype: type) -> None:
    items = [[value % 100 for value in item] for item in ITEMS]
    dataset = MMapIndexedDataset(build(tmp_path / "data", items, dtype))
    assert len(dataset) == len(items)
    assert dataset.sizes.dtype == np.int32
    assert dataset.sizes.tolist() == [len(item) for item in items]
    for index, item in enumerate(items):
        assert dataset[index].dtype == torch.int64
        assert dataset[index].tolist() == item
        assert dataset.num_tokens(index) == len(item)
    assert dataset[-1].tolist() == items[-1]
    with pytest.raises(IndexError):
        dataset[len(items)]
    copy = pickle.loads(pickle.dumps(dataset))  # DataLoader workers re-open the files
    assert copy[0].tolist() == items[0] and copy.prefix == dataset.prefix


def test_empty_dataset(tmp_path: Path) -> None:
    dataset = MMapIndexedDataset(build(tmp_path / "empty", []))
    assert len(dataset) == 0 and (tmp_path / "empty.bin").stat().st_size == 0


def test_dtype_choice_and_codes() -> None:
    assert best_fitting_dtype(50265) is np.uint16
    assert best_fitting_dtype(65499) is np.uint16
    assert best_fitting_dtype(65500) is np.uint32
    assert best_fitting_dtype(4294967294) is np.uint32
    assert best_fitting_dtype(4294967295) is np.int64
    assert best_fitting_dtype(None) is np.int64
    codes = {np.uint8: 1, np.int8: 2, np.int16: 3, np.int32: 4, np.int64: 5, np.float64: 6,
             np.uint16: 8, np.uint32: 9, np.uint64: 10}
    assert {dtype: dtype_code(dtype) for dtype in codes} == codes


def test_merge_file_equals_single_build(tmp_path: Path) -> None:
    build(tmp_path / "whole", ITEMS)
    build(tmp_path / "part0", ITEMS[:2])
    build(tmp_path / "part1", ITEMS[2:])
    with MMapIndexedDatasetBuilder(tmp_path / "merged.bin", np.uint16) as builder:
        builder.merge_file_(tmp_path / "part0")
        builder.merge_file_(tmp_path / "part1")
        builder.finalize(tmp_path / "merged.idx")
    for suffix in (".bin", ".idx"):
        assert ((tmp_path / f"merged{suffix}").read_bytes()
                == (tmp_path / f"whole{suffix}").read_bytes())


def test_load_combines_numbered_shards(tmp_path: Path) -> None:
    build(tmp_path / "train", ITEMS[:1])
    build(tmp_path / "train1", ITEMS[1:3])
    build(tmp_path / "train2", ITEMS[3:])
    build(tmp_path / "train4", ITEMS)  # after a gap: not part of the set
    combined = load_indexed_dataset(tmp_path / "train", combine=True)
    assert isinstance(combined, ConcatIndexedDataset)
    assert len(combined) == 4 and combined.sizes.tolist() == [5, 1, 0, 3]
    assert [combined[i].tolist() for i in range(4)] == ITEMS
    assert len(load_indexed_dataset(tmp_path / "train")) == 1
    with pytest.raises(UserError, match="valid"):
        load_indexed_dataset(tmp_path / "valid")


def test_interrupted_build_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with MMapIndexedDatasetBuilder(tmp_path / "train.bin", np.uint16) as builder:
            builder.add_item(torch.tensor([1, 2, 3]))
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    unfinished = MMapIndexedDatasetBuilder(tmp_path / "valid.bin", np.uint16)
    unfinished.add_item(torch.tensor([1, 2]))
    assert not dataset_exists(tmp_path / "valid")  # nothing under the final names yet


def test_rebuild_replaces_old_pair(tmp_path: Path) -> None:
    build(tmp_path / "train", ITEMS)
    build(tmp_path / "train", ITEMS[:1])
    assert len(MMapIndexedDataset(tmp_path / "train")) == 1


def corrupt(tmp_path: Path, change: str) -> Path:
    prefix = build(tmp_path / "train", ITEMS)
    idx, data = tmp_path / "train.idx", tmp_path / "train.bin"
    raw = bytearray(idx.read_bytes())
    if change == "magic":
        raw[:9] = b"NOTANIDX!"
    elif change == "version":
        raw[9:17] = struct.pack("<Q", 2)
    elif change == "dtype":
        raw[17] = 42
    elif change == "short_idx":
        raw = raw[:-5]
    elif change == "header_only":
        raw = raw[:20]
    elif change == "pointer":
        raw[26 + 16 + 8:26 + 16 + 16] = struct.pack("<q", 4)
    elif change == "legacy":
        raw = bytearray(b"TNTIDX\x00\x00" + struct.pack("<QQQQQ", 1, 4, 2, 4, 4) + bytes(80))
    elif change == "megatron":
        documents = struct.pack("<Q", 2)
        raw = raw[:26] + documents + raw[26:] + struct.pack("<2q", 0, 4)
    elif change == "short_bin":
        data.write_bytes(data.read_bytes()[:-2])
    elif change == "long_bin":
        data.write_bytes(data.read_bytes() + b"\x00\x00")
    elif change == "no_bin":
        data.unlink()
    idx.write_bytes(bytes(raw))
    return prefix


@pytest.mark.parametrize("change, message", [
    ("magic", "bad magic"), ("version", "unsupported index version 2"),
    ("dtype", "unknown dtype code 42"), ("short_idx", "truncated or corrupt"),
    ("header_only", "truncated"), ("pointer", "sequence 1 points to the wrong byte offset"),
    ("legacy", "legacy"), ("megatron", "Megatron-LM"), ("short_bin", "train.bin is truncated"),
    ("long_bin", "longer than its index"), ("no_bin", "train.bin does not exist"),
])
def test_corruption_is_a_user_error(tmp_path: Path, change: str, message: str) -> None:
    prefix = corrupt(tmp_path, change)
    with pytest.raises(UserError, match=message) as error:
        MMapIndexedDataset(prefix)
    assert str(prefix) in str(error.value)
