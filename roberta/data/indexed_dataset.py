"""fairseq's memory-mapped dataset format (`<prefix>.idx` + `<prefix>.bin`), byte for byte.

`.idx` (little-endian): magic `MMIDIDX\\x00\\x00` (9 bytes), uint64 version = 1, uint8 dtype
code, uint64 N, int32 sizes[N] (elements per sequence), int64 pointers[N] (byte offset of
each sequence in `.bin`). `.bin`: the sequences back to back, no header.
"""
from __future__ import annotations

import array
import os
import shutil
import struct
from dataclasses import dataclass
from typing import Literal, Sequence, overload

import numpy as np
import torch

from roberta.errors import UserError
from roberta.fileio import atomic_write

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
HEADER_BYTES = len(MAGIC) + 8 + 1 + 8
LEGACY_MAGIC = b"TNTIDX\x00\x00"

DTYPES: dict[int, type[np.generic]] = {
    1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64,
    6: np.float64, 7: np.float64, 8: np.uint16, 9: np.uint32, 10: np.uint64,
}

# Consistency checks walk the pointers in blocks so a huge index never needs a full copy.
_CHECK_BLOCK = 1 << 20
# The token-id check reads `.bin` in blocks of this many values: one sequential pass, little memory.
_VALUE_BLOCK = 1 << 24


@dataclass(frozen=True)
class TokenIdRange:
    """The ids a token split may hold, `0 <= id < size`: the entries (special symbols included) of
    the dictionary file it was binarized with, which error messages name."""
    size: int
    dictionary_path: str


def dtype_code(dtype: np.dtype | type) -> int:
    """The header code of a numpy dtype (the first listed, so float64 -> 6 as fairseq)."""
    for code, candidate in DTYPES.items():
        if np.dtype(candidate) == np.dtype(dtype):
            return code
    raise ValueError(f"dtype {dtype} cannot be stored in the mmap format")


def best_fitting_dtype(vocab_size: int | None = None) -> type[np.generic]:
    """The smallest token dtype fairseq would choose for a vocabulary of this size."""
    if vocab_size is not None and vocab_size < 65500:
        return np.uint16
    if vocab_size is not None and vocab_size < 4294967295:
        return np.uint32
    return np.int64


def index_file_path(prefix: str | os.PathLike) -> str:
    return f"{os.fspath(prefix)}.idx"


def data_file_path(prefix: str | os.PathLike) -> str:
    return f"{os.fspath(prefix)}.bin"


def dataset_exists(prefix: str | os.PathLike) -> bool:
    return os.path.isfile(index_file_path(prefix)) and os.path.isfile(data_file_path(prefix))


class MMapIndexedDataset:
    """Read-only, memory-mapped sequences of `<prefix>.bin`; items are int64 tensors."""

    def __init__(self, prefix: str | os.PathLike) -> None:
        self._open(os.fspath(prefix))

    def _open(self, prefix: str) -> None:
        self.prefix = prefix
        self.dtype, self.sizes, self.pointers = read_index(index_file_path(prefix))
        bin_path = data_file_path(prefix)
        if not os.path.isfile(bin_path):
            raise UserError(f"{bin_path} does not exist (its index {prefix}.idx does); "
                            f"re-run roberta-preprocess for this split")
        _check_layout(bin_path, self.sizes, self.pointers, np.dtype(self.dtype).itemsize)
        if os.path.getsize(bin_path) == 0:
            self._data = np.empty(0, dtype=self.dtype)  # an empty file cannot be mapped
        else:
            self._data = np.memmap(bin_path, dtype=self.dtype, mode="r")

    # Worker processes of a DataLoader get the prefix and map the files again themselves,
    # instead of a pickled copy of all the data.
    def __getstate__(self) -> str:
        return self.prefix

    def __setstate__(self, prefix: str) -> None:
        self._open(prefix)

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, index: int) -> torch.Tensor:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} sequences")
        start = int(self.pointers[index]) // self._data.itemsize
        values = self._data[start:start + int(self.sizes[index])]
        return torch.from_numpy(values.astype(np.int64))

    def num_tokens(self, index: int) -> int:
        return int(self.sizes[index])

    def value_range(self) -> tuple[int, int] | None:
        """The smallest and largest value in `.bin` (None when it holds none), read in blocks."""
        if self._data.size == 0:
            return None
        lows: list[int] = []
        highs: list[int] = []
        for start in range(0, self._data.size, _VALUE_BLOCK):
            block = self._data[start:start + _VALUE_BLOCK]
            lows.append(block.min().item())
            highs.append(block.max().item())
        return min(lows), max(highs)

    def sequence_holding(self, value: int) -> int:
        """The index of the first sequence that contains `value` (which must occur)."""
        for start in range(0, self._data.size, _VALUE_BLOCK):
            hits = np.flatnonzero(self._data[start:start + _VALUE_BLOCK] == value)
            if hits.size:
                byte_offset = (start + int(hits[0])) * self._data.itemsize
                # Empty sequences share their pointer with the next one: take the last match.
                return int(np.searchsorted(self.pointers, byte_offset, side="right")) - 1
        raise ValueError(f"{value} does not occur in {data_file_path(self.prefix)}")


def check_token_ids(dataset: MMapIndexedDataset, allowed: TokenIdRange) -> None:
    """Every id in the split must index its dictionary. An id past it fails mid-run in the embedding
    lookup, and one that lands on a symbol the task appends (`<mask>`) would train silently."""
    bin_path = data_file_path(dataset.prefix)
    if np.dtype(dataset.dtype).kind == "f":
        raise UserError(f"{bin_path} stores {np.dtype(dataset.dtype)} values, not token ids; re-binarize the "
                        f"split with roberta-preprocess")
    value_range = dataset.value_range()
    if value_range is None:
        return
    lowest, highest = value_range
    if lowest < 0:
        raise UserError(f"{bin_path} holds token id {lowest} (sequence {dataset.sequence_holding(lowest)}), "
                        f"but token ids are never negative: the file is corrupt; re-binarize the split")
    if highest >= allowed.size:
        raise UserError(f"{bin_path} holds token id {highest} (sequence {dataset.sequence_holding(highest)}), "
                        f"but {allowed.dictionary_path} has {allowed.size} entries (with the special tokens): "
                        f"the data was binarized with another dictionary; re-binarize it or pass the "
                        f"dict.txt it was made with")


def read_index(idx_path: str) -> tuple[type[np.generic], np.ndarray, np.ndarray]:
    """Validate an `.idx` file and return (dtype, sizes int32[N], pointers int64[N])."""
    if not os.path.isfile(idx_path):
        raise UserError(f"index file {idx_path} does not exist; binarize the split with "
                        f"roberta-preprocess")
    file_bytes = os.path.getsize(idx_path)
    with open(idx_path, "rb") as handle:
        header = handle.read(HEADER_BYTES)
    if header.startswith(LEGACY_MAGIC):
        raise UserError(f"{idx_path} is in fairseq's legacy 'cached/lazy' format (TNTIDX); "
                        f"re-binarize with roberta-preprocess --dataset-impl mmap")
    if not header.startswith(MAGIC):
        raise UserError(f"{idx_path} is not an mmap dataset index (bad magic {header[:9]!r}, "
                        f"expected {MAGIC!r}); re-binarize with roberta-preprocess")
    if len(header) < HEADER_BYTES:
        raise UserError(f"{idx_path} is truncated: {file_bytes} bytes, shorter than the "
                        f"{HEADER_BYTES}-byte header; re-binarize the split")
    version, code, count = struct.unpack("<QBQ", header[len(MAGIC):])
    if version != VERSION:
        raise UserError(f"{idx_path}: unsupported index version {version} (only {VERSION} "
                        f"exists in fairseq's format); re-binarize the split")
    if code not in DTYPES:
        raise UserError(f"{idx_path}: unknown dtype code {code} (expected one of "
                        f"{sorted(DTYPES)}); the file is corrupt, re-binarize the split")
    expected = HEADER_BYTES + 12 * count
    if file_bytes != expected:
        raise UserError(f"{idx_path}: {_size_mismatch(idx_path, file_bytes, count)}; "
                        f"re-binarize the split")
    index = np.memmap(idx_path, dtype=np.uint8, mode="r")
    sizes = np.frombuffer(index, dtype="<i4", count=count, offset=HEADER_BYTES)
    pointers = np.frombuffer(index, dtype="<i8", count=count, offset=HEADER_BYTES + 4 * count)
    return DTYPES[code], sizes, pointers


def _size_mismatch(idx_path: str, file_bytes: int, count: int) -> str:
    expected = HEADER_BYTES + 12 * count
    if file_bytes > expected + 8:
        # Megatron-LM reuses magic and version but adds a document index after the pointers.
        with open(idx_path, "rb") as handle:
            handle.seek(HEADER_BYTES)
            (documents,) = struct.unpack("<Q", handle.read(8))
        if file_bytes == expected + 8 + 8 * documents:
            return ("this is Megatron-LM's variant of the format (it has a document index), "
                    "not fairseq's")
    return (f"the file is {file_bytes} bytes but a header for {count} sequences needs "
            f"{expected} (truncated or corrupt)")


def _check_layout(bin_path: str, sizes: np.ndarray, pointers: np.ndarray, itemsize: int) -> None:
    """Every sequence must start where the previous one ended and the last end at the end
    of `.bin`: anything else means a truncated file or an `.idx` from another run."""
    bin_bytes = os.path.getsize(bin_path)
    offset = 0
    for start in range(0, len(sizes), _CHECK_BLOCK):
        block_sizes = sizes[start:start + _CHECK_BLOCK].astype(np.int64)
        if (block_sizes < 0).any():
            raise UserError(f"{bin_path[:-4]}.idx: negative sequence length; the index is corrupt")
        ends = offset + np.cumsum(block_sizes * itemsize)
        starts = np.concatenate(([offset], ends[:-1]))
        bad = np.flatnonzero(pointers[start:start + _CHECK_BLOCK] != starts)
        if bad.size:
            raise UserError(f"{bin_path[:-4]}.idx: sequence {start + int(bad[0])} points to the "
                            f"wrong byte offset; the index is corrupt, re-binarize the split")
        offset = int(ends[-1]) if len(ends) else offset
    if offset != bin_bytes:
        problem = "truncated" if bin_bytes < offset else "longer than its index says"
        raise UserError(f"{bin_path} is {problem}: {bin_bytes} bytes, the index describes "
                        f"{offset}; re-binarize the split (the .idx and .bin must come from "
                        f"the same run)")


class ConcatIndexedDataset:
    """Several indexed datasets read as one (the shards `train`, `train1`, ...)."""

    def __init__(self, datasets: Sequence[MMapIndexedDataset]) -> None:
        self.datasets = list(datasets)
        self.sizes = np.concatenate([dataset.sizes for dataset in self.datasets])
        self._ends = np.cumsum([len(dataset) for dataset in self.datasets])

    def __len__(self) -> int:
        return int(self._ends[-1])

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} sequences")
        shard = int(np.searchsorted(self._ends, index, side="right"))
        previous = int(self._ends[shard - 1]) if shard else 0
        return self.datasets[shard][index - previous]

    def num_tokens(self, index: int) -> int:
        return int(self.sizes[index])


@overload
def load_indexed_dataset(prefix: str | os.PathLike, combine: Literal[False] = False,
                         token_ids: TokenIdRange | None = None) -> MMapIndexedDataset: ...


@overload
def load_indexed_dataset(prefix: str | os.PathLike, combine: bool,
                         token_ids: TokenIdRange | None = None) -> MMapIndexedDataset | ConcatIndexedDataset: ...


def load_indexed_dataset(prefix: str | os.PathLike, combine: bool = False,
                         token_ids: TokenIdRange | None = None) -> MMapIndexedDataset | ConcatIndexedDataset:
    """Open `prefix`; with `combine`, also the shards `prefix1`, `prefix2`, ... that follow
    it without a gap, concatenated in that order. A missing `prefix` raises UserError, and so
    does, with `token_ids`, a shard holding an id outside that range."""
    prefix = os.fspath(prefix)
    if not dataset_exists(prefix):
        raise UserError(f"dataset {prefix} not found: expected {prefix}.bin and {prefix}.idx; "
                        f"binarize the split with roberta-preprocess")
    datasets = [MMapIndexedDataset(prefix)]
    while combine and dataset_exists(f"{prefix}{len(datasets)}"):
        datasets.append(MMapIndexedDataset(f"{prefix}{len(datasets)}"))
    if token_ids is not None:
        for dataset in datasets:
            check_token_ids(dataset, token_ids)
    return datasets[0] if len(datasets) == 1 else ConcatIndexedDataset(datasets)


class MMapIndexedDatasetBuilder:
    """Append sequences to `<bin_path>.tmp`; `finalize` renames it into place and writes the
    index last, so a run killed midway never leaves a pair that looks complete.

    Use it as a context manager: leaving the block by an exception deletes the temporary file.
    """

    def __init__(self, bin_path: str | os.PathLike, dtype: type[np.generic] = np.int64) -> None:
        self.bin_path = os.fspath(bin_path)
        self.dtype = np.dtype(dtype)
        dtype_code(self.dtype)  # fail early on a dtype the format cannot name
        self._tmp_path = self.bin_path + ".tmp"
        self._data = open(self._tmp_path, "wb")
        self._sizes = array.array("i")  # compact: a corpus can hold hundreds of millions of lines

    def __enter__(self) -> MMapIndexedDatasetBuilder:
        return self

    def __exit__(self, exc_type: type | None, *_: object) -> None:
        if exc_type is not None:
            self.discard()

    def add_item(self, tensor: torch.Tensor | np.ndarray | Sequence[int]) -> None:
        values = tensor.numpy() if torch.is_tensor(tensor) else tensor
        array = np.asarray(values, dtype=self.dtype)
        self._data.write(array.tobytes(order="C"))
        self._sizes.append(array.size)

    def merge_file_(self, other_prefix: str | os.PathLike) -> None:
        """Append every sequence of another finalized dataset with the same dtype."""
        other = MMapIndexedDataset(other_prefix)
        if np.dtype(other.dtype) != self.dtype:
            raise ValueError(f"cannot merge {other_prefix} ({np.dtype(other.dtype)}) into a "
                             f"{self.dtype} dataset")
        self._sizes.frombytes(other.sizes.astype(np.int32).tobytes())
        with open(data_file_path(other_prefix), "rb") as source:
            shutil.copyfileobj(source, self._data)

    def finalize(self, idx_path: str | os.PathLike) -> None:
        sizes = np.frombuffer(self._sizes, dtype=np.int32)
        pointers = np.zeros(len(sizes), dtype=np.int64)
        np.cumsum(sizes[:-1].astype(np.int64) * self.dtype.itemsize, out=pointers[1:])
        self._data.flush()
        os.fsync(self._data.fileno())
        self._data.close()
        idx_path = os.fspath(idx_path)
        # Drop an old index first: until the new one lands, the split is visibly absent.
        if os.path.exists(idx_path):
            os.unlink(idx_path)
        os.replace(self._tmp_path, self.bin_path)
        with atomic_write(idx_path, "wb") as handle:
            handle.write(MAGIC)
            handle.write(struct.pack("<QBQ", VERSION, dtype_code(self.dtype), len(sizes)))
            handle.write(sizes.astype("<i4").tobytes())
            handle.write(pointers.astype("<i8").tobytes())

    def discard(self) -> None:
        """Abandon the build and remove the temporary data file."""
        self._data.close()
        if os.path.exists(self._tmp_path):
            os.unlink(self._tmp_path)
