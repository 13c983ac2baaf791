"""Multiple-choice examples (RACE): one context, N candidate options, a label naming the right one.

Each option becomes one sequence `[init] option [sep] context`, with the option part capped at
`max_option_length` and the whole sequence shortened to `max_positions` (for RoBERTa:
`<s> question+option </s> </s> article </s>`). An example's size, for length filtering and
batching, is its longest option sequence, as in fairseq.
"""
from __future__ import annotations

import numpy as np
import torch

from roberta.data.batching import example_order
from roberta.data.indexed_dataset import MMapIndexedDataset
from roberta.data.shortening import prefixed, shortened



class MultipleChoiceDataset(torch.utils.data.Dataset):
    """`{"id", "options": [N token tensors], "target"}` examples; batches hold `src_tokens` [B, N, T]."""

    def __init__(self, context: MMapIndexedDataset, options: list[MMapIndexedDataset], labels: np.ndarray | None, *,
                 pad_idx: int, init_token: int | None = None, separator_token: int | None = None,
                 max_option_length: int | None = None, shorten_method: str = "none",
                 max_positions: int | None = None, seed: int = 1, shuffle: bool = True,
                 sort_by_length: bool = False) -> None:
        self.context = context
        self.options = options
        self.labels = labels
        self.pad_idx = pad_idx
        self.init_token = init_token
        self.separator_token = separator_token
        self.max_option_length = max_option_length
        self.shorten_method = shorten_method
        self.max_positions = max_positions
        self.seed = seed
        self.shuffle = shuffle
        self.sort_by_length = sort_by_length
        self.epoch = 1
        self.option_sizes = np.stack([self._sequence_lengths(option.sizes) for option in options], axis=1)
        self.sizes = self.option_sizes.max(axis=1)

    def _sequence_lengths(self, option_sizes: np.ndarray) -> np.ndarray:
        """Lengths after prefixing and shortening, computed from the index alone (no token reads)."""
        option_part = option_sizes.astype(np.int64) + (self.init_token is not None)
        if self.max_option_length is not None:
            option_part = np.minimum(option_part, self.max_option_length)
        total = option_part + self.context.sizes.astype(np.int64) + (self.separator_token is not None)
        if self.shorten_method != "none" and self.max_positions is not None:
            total = np.minimum(total, self.max_positions)
        return total

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        context = prefixed(self.separator_token, self.context[index])
        sequences = []
        for option in self.options:
            tokens = prefixed(self.init_token, option[index])
            if self.max_option_length is not None:
                tokens = tokens[: self.max_option_length]
            sequences.append(shortened(torch.cat([tokens, context]), self.shorten_method, self.max_positions,
                                       (self.seed, self.epoch, index)))
        example = {"id": index, "options": sequences}
        if self.labels is not None:
            example["target"] = int(self.labels[index])
        return example

    def num_tokens(self, index: int) -> int:
        return int(self.sizes[index])

    def ordered_indices(self) -> np.ndarray:
        return example_order(self.sizes, self.seed, shuffle=self.shuffle, by_length=self.sort_by_length)

    def collater(self, samples: list[dict]) -> dict:
        if not samples:
            return {}
        num_options = len(samples[0]["options"])
        width = max(len(tokens) for sample in samples for tokens in sample["options"])
        src_tokens = torch.full((len(samples), num_options, width), self.pad_idx, dtype=torch.long)
        src_lengths = torch.zeros((len(samples), num_options), dtype=torch.long)
        for row, sample in enumerate(samples):
            for choice, tokens in enumerate(sample["options"]):
                src_tokens[row, choice, : len(tokens)] = tokens
                src_lengths[row, choice] = len(tokens)
        batch = {
            "id": torch.tensor([sample["id"] for sample in samples], dtype=torch.long),
            "nsentences": len(samples),
            # fairseq counts the tokens of the first option only (its `net_input1`), so wpb/wps
            # and nll_loss match its logs.
            "ntokens": int(src_lengths[:, 0].sum()),
            "net_input": {"src_tokens": src_tokens, "src_lengths": src_lengths},
        }
        if "target" in samples[0]:
            batch["target"] = torch.tensor([sample["target"] for sample in samples], dtype=torch.long)
        return batch

