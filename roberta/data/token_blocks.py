"""Pack a line-per-item token dataset into blocks (`--sample-break-mode`, `--tokens-per-sample`).

Block boundaries are computed once, up front, as token offsets into the concatenated stream of
all lines, so `__getitem__` only reads the lines a block touches. The greedy packing of whole
lines runs one `searchsorted` per block rather than a Python step per line, which keeps it fast
on corpora of millions of lines.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from roberta.errors import UserError

BREAK_MODES = ("none", "complete", "complete_doc", "eos")


class LineDataset(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> torch.Tensor: ...


class TokenBlockDataset(torch.utils.data.Dataset):
    """Blocks of tokens cut from `dataset` according to `break_mode`.

    - `none`: fixed `block_size` windows over the token stream; the last one may be shorter.
    - `complete`: as many whole lines as fit in `block_size`; a single overlong line is its own
      (overlong) block, left for the size filter to drop.
    - `complete_doc`: like `complete`, but a block never spans a document boundary, i.e. a line
      of `document_sep_len` tokens (an empty text line, just `</s>`); separators are dropped.
    - `eos`: one line per block. A line longer than `block_size` is a `UserError` unless
      `allow_overlong` is set (the caller then filters by size, as fairseq's trainer does).

    With `bos` set, blocks are packed to `block_size - 1` tokens and `bos` is prepended, so
    `block_size` is the full sample length (`--tokens-per-sample` of the masked_lm task).
    `pad` and `eos` are the dictionary's indices, kept so call sites match fairseq's.
    """

    def __init__(
        self,
        dataset: LineDataset,
        sizes: np.ndarray,
        block_size: int,
        break_mode: str,
        pad: int,
        eos: int,
        document_sep_len: int = 1,
        bos: int | None = None,
        allow_overlong: bool = False,
    ) -> None:
        if break_mode not in BREAK_MODES:
            raise UserError(
                f"--sample-break-mode {break_mode!r} is not supported; choose one of {', '.join(BREAK_MODES)}"
            )
        content_size = block_size - (1 if bos is not None else 0)
        if content_size < 1:
            raise UserError(f"--tokens-per-sample {block_size} is too small; it must leave room for at least one token")
        sizes = np.asarray(sizes, dtype=np.int64).reshape(-1)
        if len(sizes) != len(dataset):
            raise ValueError(f"sizes has {len(sizes)} entries but the dataset has {len(dataset)} items")
        if break_mode == "eos" and not allow_overlong:
            _check_lines_fit(sizes, content_size, block_size)
        self.dataset = dataset
        self.pad, self.eos, self.bos = pad, eos, bos
        self.break_mode = break_mode
        self.block_size = block_size
        bounds = _block_bounds(sizes, content_size, break_mode, document_sep_len)
        self._starts, self._ends = bounds[:, 0], bounds[:, 1]
        self._first_line, self._first_offset, self._last_line = _locate(sizes, self._starts, self._ends)
        self.sizes = self._ends - self._starts + (1 if bos is not None else 0)

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, index: int) -> torch.Tensor:
        first, last = int(self._first_line[index]), int(self._last_line[index])
        lines = [self.dataset[i] for i in range(first, last + 1)]
        stream = lines[0] if len(lines) == 1 else torch.cat(lines)
        offset = int(self._first_offset[index])
        block = stream[offset : offset + int(self._ends[index] - self._starts[index])].long()
        if self.bos is not None:
            block = torch.cat([block.new_full((1,), self.bos), block])
        return block


def _check_lines_fit(sizes: np.ndarray, content_size: int, tokens_per_sample: int) -> None:
    too_long = np.flatnonzero(sizes > content_size)
    if len(too_long):
        ids = ", ".join(str(i) for i in too_long[:5])
        raise UserError(
            f"--sample-break-mode eos: {len(too_long)} lines are longer than the {content_size} tokens that fit "
            f"in --tokens-per-sample {tokens_per_sample} (line ids {ids}{', ...' if len(too_long) > 5 else ''}); "
            "raise --tokens-per-sample or use --sample-break-mode complete"
        )


def _block_bounds(sizes: np.ndarray, block_size: int, break_mode: str, document_sep_len: int) -> np.ndarray:
    """[n_blocks, 2] token offsets (start, end) into the concatenated stream of lines."""
    ends = np.cumsum(sizes)
    total = int(ends[-1]) if len(ends) else 0
    if break_mode == "none":
        starts = np.arange(0, total, block_size, dtype=np.int64)
        return np.stack([starts, np.minimum(starts + block_size, total)], axis=1)
    if break_mode == "eos":
        return np.stack([ends - sizes, ends], axis=1)
    separators = sizes == document_sep_len if break_mode == "complete_doc" else np.zeros(len(sizes), dtype=bool)
    return _pack_lines(sizes, block_size, separators)


def _pack_lines(sizes: np.ndarray, block_size: int, separators: np.ndarray) -> np.ndarray:
    """Greedily group consecutive whole lines into blocks of at most `block_size` tokens.

    `separators` marks lines that end a group and are left out of every block.
    """
    n = len(sizes)
    line_starts = np.concatenate([[0], np.cumsum(sizes)])
    sep_ids = np.flatnonzero(separators)
    # For each line, the index of the next separator at or after it (n when there is none).
    next_sep = np.append(sep_ids, n)[np.searchsorted(sep_ids, np.arange(n))]
    bounds: list[tuple[int, int]] = []
    line = 0
    while line < n:
        if separators[line]:
            line += 1
            continue
        # The last line that still fits is the one before the first whose end exceeds the budget.
        end = int(np.searchsorted(line_starts, line_starts[line] + block_size, side="right")) - 1
        end = min(max(end, line + 1), int(next_sep[line]))
        if line_starts[end] > line_starts[line]:
            bounds.append((int(line_starts[line]), int(line_starts[end])))
        line = end
    return np.array(bounds, dtype=np.int64).reshape(-1, 2)


def _locate(sizes: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each block: the first line it reads, the offset into that line, and the last line."""
    line_starts = np.concatenate([[0], np.cumsum(sizes)])
    # side="right" skips empty lines that share the block's start offset.
    first = np.searchsorted(line_starts, starts, side="right") - 1
    last = np.searchsorted(line_starts, ends - 1, side="right") - 1
    return first, starts - line_starts[first], last
