"""Extractive-QA windows (SQuAD): token windows with answer start/end positions and a no-answer flag."""
from __future__ import annotations

import numpy as np
import torch

from roberta.data.batching import length_sorted
from roberta.data.indexed_dataset import MMapIndexedDataset


class SpanWindowDataset(torch.utils.data.Dataset):
    """`{"id", "source", "start", "end"}` examples, one per window; start = end = 0 (`<s>`) marks
    a window without the answer. Batches add `start_positions`, `end_positions`, `unanswerable`."""

    def __init__(self, windows: MMapIndexedDataset, starts: np.ndarray, ends: np.ndarray, *, pad_idx: int,
                 seed: int = 1) -> None:
        self.windows = windows
        self.starts = starts
        self.ends = ends
        self.pad_idx = pad_idx
        self.seed = seed
        self.sizes = np.asarray(windows.sizes)

    def set_epoch(self, epoch: int) -> None:
        """Windows do not change between epochs."""

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        return {"id": index, "source": self.windows[index].long(), "start": int(self.starts[index]),
                "end": int(self.ends[index])}

    def num_tokens(self, index: int) -> int:
        return int(self.sizes[index])

    def ordered_indices(self) -> np.ndarray:
        return length_sorted(self.sizes, self.seed)

    def collater(self, samples: list[dict]) -> dict:
        if not samples:
            return {}
        width = max(len(sample["source"]) for sample in samples)
        tokens = torch.full((len(samples), width), self.pad_idx, dtype=torch.long)
        for row, sample in enumerate(samples):
            tokens[row, : len(sample["source"])] = sample["source"]
        starts = torch.tensor([sample["start"] for sample in samples], dtype=torch.long)
        ends = torch.tensor([sample["end"] for sample in samples], dtype=torch.long)
        return {
            "id": torch.tensor([sample["id"] for sample in samples], dtype=torch.long),
            "nsentences": len(samples),
            "ntokens": int(tokens.ne(self.pad_idx).sum()),
            "net_input": {"src_tokens": tokens},
            "start_positions": starts,
            "end_positions": ends,
            "unanswerable": (starts == 0).float(),
        }
