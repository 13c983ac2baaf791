"""Sentence (pair) examples for classification and regression (GLUE, `--task sentence_prediction`).

An example is `[init] first [sep] second` as fairseq builds it: the binarized sentences already
end in `</s>`, so RoBERTa's layout is `<s> first </s> </s> second </s>` (or `<s> first </s>` for
single-sentence tasks), shortened to `max_positions` when a shorten method is set. Batches are
padded to their own longest example only (dynamic padding). `ordered_indices` is fairseq's
seeded random order, so one seed gives fairseq's batches.
"""
from __future__ import annotations

import numpy as np
import torch

from roberta.data.batching import example_order
from roberta.data.indexed_dataset import MMapIndexedDataset
from roberta.data.shortening import prefixed, shortened


class SentencePairDataset(torch.utils.data.Dataset):
    """`{"id", "tokens", "target"}` examples; batches hold `src_tokens` [B, T] and `target` [B]."""

    def __init__(self, first: MMapIndexedDataset, second: MMapIndexedDataset | None, targets: np.ndarray | None, *,
                 pad_idx: int, init_token: int | None = None, separator_token: int | None = None,
                 shorten_method: str = "none", max_positions: int | None = None, seed: int = 1,
                 shuffle: bool = True, sort_by_length: bool = False) -> None:
        self.first = first
        self.second = second
        self.targets = targets
        self.pad_idx = pad_idx
        self.init_token = init_token
        self.separator_token = separator_token
        self.shorten_method = shorten_method
        self.max_positions = max_positions
        self.seed = seed
        self.shuffle = shuffle
        self.sort_by_length = sort_by_length
        self.epoch = 1
        self.sizes = self._lengths()

    def _lengths(self) -> np.ndarray:
        """Lengths after prefixing and shortening, from the index alone (no token reads)."""
        total = self.first.sizes.astype(np.int64) + (self.init_token is not None)
        if self.second is not None:
            total = total + self.second.sizes.astype(np.int64) + (self.separator_token is not None)
        if self.shorten_method != "none" and self.max_positions is not None:
            total = np.minimum(total, self.max_positions)
        return total

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sizes)

    def num_tokens(self, index: int) -> int:
        return int(self.sizes[index])

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        parts = [prefixed(self.init_token, self.first[index])]
        if self.second is not None:
            parts.append(prefixed(self.separator_token, self.second[index]))
        example = {"id": index, "tokens": shortened(torch.cat(parts), self.shorten_method, self.max_positions,
                                                   (self.seed, self.epoch, index))}
        if self.targets is not None:
            example["target"] = self.targets[index]
        return example

    def ordered_indices(self) -> np.ndarray:
        return example_order(self.sizes, self.seed, shuffle=self.shuffle, by_length=self.sort_by_length)

    def collater(self, samples: list[dict]) -> dict:
        if not samples:
            return {}
        width = max(len(sample["tokens"]) for sample in samples)
        src_tokens = torch.full((len(samples), width), self.pad_idx, dtype=torch.long)
        for row, sample in enumerate(samples):
            src_tokens[row, : len(sample["tokens"])] = sample["tokens"]
        lengths = torch.tensor([len(sample["tokens"]) for sample in samples], dtype=torch.long)
        batch = {
            "id": torch.tensor([sample["id"] for sample in samples], dtype=torch.long),
            "nsentences": len(samples),
            "ntokens": int(lengths.sum()),
            "net_input": {"src_tokens": src_tokens, "src_lengths": lengths},
        }
        if "target" in samples[0]:
            batch["target"] = torch.as_tensor(np.asarray([sample["target"] for sample in samples]))
        return batch

