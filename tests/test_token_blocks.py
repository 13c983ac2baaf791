"""TokenBlockDataset: every break mode on hand-made lines, plus a check against a plain loop."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from roberta.data.token_blocks import TokenBlockDataset
from roberta.errors import UserError

PAD, EOS, BOS = 1, 2, 0


class Lines:
    """In-memory stand-in for an indexed dataset: one tensor per line."""

    def __init__(self, lines: list[list[int]]) -> None:
        self.lines = [torch.tensor(line, dtype=torch.int32) for line in lines]
        self.sizes = np.array([len(line) for line in lines], dtype=np.int32)

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.lines[index]


# Two documents separated by an empty line ([2]), then a third document with one long line.
LINES = Lines([[10, 11, 2], [12, 2], [2], [13, 14, 15, 2], [16, 2], [2], [17, 18, 19, 20, 21, 2]])


def blocks(block_size: int, mode: str, data: Lines = LINES, **kwargs) -> list[list[int]]:
    ds = TokenBlockDataset(data, data.sizes, block_size, mode, PAD, EOS, **kwargs)
    items = [ds[i] for i in range(len(ds))]
    assert all(item.dtype == torch.long for item in items)
    assert ds.sizes.tolist() == [len(item) for item in items]
    return [item.tolist() for item in items]


def test_none_cuts_the_stream_into_fixed_blocks() -> None:
    assert blocks(5, "none") == [
        [10, 11, 2, 12, 2],
        [2, 13, 14, 15, 2],
        [16, 2, 2, 17, 18],
        [19, 20, 21, 2],
    ]


def test_complete_packs_whole_lines_and_keeps_an_overlong_line_alone() -> None:
    assert blocks(5, "complete") == [
        [10, 11, 2, 12, 2],
        [2, 13, 14, 15, 2],
        [16, 2, 2],
        [17, 18, 19, 20, 21, 2],
    ]


def test_complete_doc_never_crosses_a_document_and_drops_separators() -> None:
    assert blocks(5, "complete_doc") == [
        [10, 11, 2, 12, 2],
        [13, 14, 15, 2],
        [16, 2],
        [17, 18, 19, 20, 21, 2],
    ]
    assert blocks(7, "complete_doc") == [
        [10, 11, 2, 12, 2],
        [13, 14, 15, 2, 16, 2],
        [17, 18, 19, 20, 21, 2],
    ]


def test_complete_doc_skips_runs_of_separators_and_leading_ones() -> None:
    data = Lines([[2], [2], [10, 2], [2], [2], [11, 12, 2]])
    assert blocks(8, "complete_doc", data) == [[10, 2], [11, 12, 2]]


def test_eos_is_one_line_per_block() -> None:
    assert blocks(6, "eos") == [line.tolist() for line in LINES.lines]


def test_eos_with_an_overlong_line_names_the_flag() -> None:
    with pytest.raises(UserError, match="--tokens-per-sample 5.*line ids 6"):
        blocks(5, "eos")
    assert len(blocks(5, "eos", allow_overlong=True)) == len(LINES)


def test_bos_is_prepended_to_blocks_of_one_less_token() -> None:
    assert blocks(6, "complete", bos=BOS) == [[BOS] + b for b in blocks(5, "complete")]
    assert blocks(6, "none", bos=BOS) == [[BOS] + b for b in blocks(5, "none")]
    with pytest.raises(UserError, match="--tokens-per-sample 5"):
        blocks(5, "eos", bos=BOS)


def test_unknown_break_mode_is_a_user_error() -> None:
    with pytest.raises(UserError, match="--sample-break-mode"):
        blocks(5, "sentence")


def reference_complete(sizes: list[int], block_size: int, doc_sep: int | None) -> list[tuple[int, int]]:
    """The greedy packing written as the obvious per-line loop."""
    out, start, cur = [], 0, 0
    for size in sizes:
        if doc_sep is not None and size == doc_sep:
            if cur:
                out.append((start, start + cur))
            start, cur = start + cur + size, 0
            continue
        if cur and cur + size > block_size:
            out.append((start, start + cur))
            start, cur = start + cur, 0
        cur += size
    if cur:
        out.append((start, start + cur))
    return out


@pytest.mark.parametrize("mode", ["complete", "complete_doc"])
def test_packing_matches_a_per_line_loop_on_random_lines(mode: str) -> None:
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 40, size=3000)
    sizes[rng.random(3000) < 0.1] = 1  # document separators
    sizes[rng.random(3000) < 0.02] = 0
    stream = np.arange(int(sizes.sum()))
    data = Lines(np.split(stream, np.cumsum(sizes)[:-1]))
    ds = TokenBlockDataset(data, data.sizes, 25, mode, PAD, EOS)
    expected = reference_complete(sizes.tolist(), 25, 1 if mode == "complete_doc" else None)
    assert [(int(ds[i][0]), int(ds[i][-1]) + 1) for i in range(len(ds))] == expected
    for i in range(0, len(ds), 97):
        start, end = expected[i]
        assert ds[i].tolist() == stream[start:end].tolist()


def test_none_blocks_reassemble_the_stream_with_empty_lines() -> None:
    data = Lines([[5, 6, 7], [], [8], [], [9, 10, 11, 12, 13, 14, 15], [16]])
    got = blocks(3, "none", data)
    assert [len(b) for b in got] == [3, 3, 3, 3]
    assert sum(got, []) == list(range(5, 17))


def test_empty_dataset_has_no_blocks() -> None:
    for mode in ("none", "complete", "complete_doc", "eos"):
        assert blocks(5, mode, Lines([])) == []
