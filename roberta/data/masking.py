"""Dynamic BERT-style masking for the masked_lm task, reproducible from (seed, epoch, index).

Every example draws its mask from its own generator seeded by `(seed, epoch, index)`, so masks
change from epoch to epoch, are identical in any data-loader worker or rank, and a resumed run
sees exactly the masks the interrupted one would have. The generator and the order of the
draws are fairseq's (`MaskTokensDataset`), so the same seed masks the same tokens as fairseq.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from roberta.data.batching import length_sorted
from roberta.data.seeding import seeded_rng
from roberta.data.token_blocks import TokenBlockDataset
from roberta.errors import UserError


def mask_tokens(
    tokens: torch.Tensor,
    *,
    seed: int,
    epoch: int,
    index: int,
    mask_idx: int,
    vocab_size: int,
    pad_idx: int,
    mask_prob: float = 0.15,
    leave_unmasked_prob: float = 0.1,
    random_token_prob: float = 0.1,
    num_special: int = 4,
    freq_weights: np.ndarray | None = None,
    mask_whole_words: torch.Tensor | None = None,
    mask_multiple_length: int = 1,
    mask_stdev: float = 0.0,
    replacement_cdf: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return `(source, target)` for one example, as fairseq's masked_lm does.

    `floor(mask_prob * n / mask_multiple_length + U[0,1))` units (tokens, or whole words when
    `mask_whole_words` marks word starts per token) are chosen without replacement among the
    non-pad positions, each extended to a span of `mask_multiple_length` units (drawn from
    N(length, mask_stdev) when `mask_stdev > 0`). Each chosen unit independently keeps its token
    with `leave_unmasked_prob`, gets a random non-special token with `random_token_prob`
    (weighted by `freq_weights`, the dictionary counts, if given) and `<mask>` otherwise.
    `target` holds the original token at every chosen position and `pad_idx` elsewhere.
    `replacement_cdf` is `replacement_distribution(vocab_size, num_special, freq_weights)`,
    which a dataset computes once.
    """
    tokens = tokens.long()
    if bool((tokens == mask_idx).any()):
        raise UserError(
            f"example {index} already contains the <mask> token ({mask_idx}); binarize the data with a "
            "dict.txt that has no <mask> entry (the task appends it)"
        )
    rng = seeded_rng(seed, epoch, index)
    real = (tokens != pad_idx).numpy()
    values = tokens.numpy()[real]
    unit_lengths = _unit_lengths(mask_whole_words, real, len(values))
    chosen = _choose_units(rng, len(unit_lengths), mask_prob, mask_multiple_length, mask_stdev)
    keep, rand = _split_decisions(rng, chosen, leave_unmasked_prob, random_token_prob)
    chosen, keep, rand = (np.repeat(m, unit_lengths) for m in (chosen, keep, rand))

    source_values = values.copy()
    source_values[chosen & ~keep & ~rand] = mask_idx
    n_rand = int(rand.sum())
    if n_rand:
        if replacement_cdf is None:
            replacement_cdf = replacement_distribution(vocab_size, num_special, freq_weights)
        source_values[rand] = _random_tokens(rng, n_rand, replacement_cdf)
    source = tokens.clone()
    source[torch.from_numpy(real)] = torch.from_numpy(source_values)
    target = torch.full_like(tokens, pad_idx)
    target_values = np.full_like(values, pad_idx)
    target_values[chosen] = values[chosen]
    target[torch.from_numpy(real)] = torch.from_numpy(target_values)
    return source, target


def _unit_lengths(word_starts: torch.Tensor | None, real: np.ndarray, n_real: int) -> np.ndarray:
    """Length in tokens of each maskable unit: 1 per token, or the length of each word."""
    if word_starts is None:
        return np.ones(n_real, dtype=np.int64)
    starts = word_starts.numpy().astype(bool)[real]
    if n_real:
        starts[0] = True  # a leading continuation piece still belongs to some word
    boundaries = np.append(np.flatnonzero(starts), n_real)
    return np.diff(boundaries)


def _choose_units(rng: np.random.RandomState, n: int, mask_prob: float, span: int, stdev: float) -> np.ndarray:
    """The units to predict, drawn in fairseq's order: the count (rounded at random), the span
    starts without replacement, then the span lengths."""
    chosen = np.zeros(n, dtype=bool)
    n_spans = int(mask_prob * n / float(span) + rng.rand())
    starts = rng.choice(n, n_spans, replace=False)
    if stdev > 0.0:
        lengths = np.maximum(0, np.round(rng.normal(span, stdev, size=n_spans))).astype(np.int64)
    else:
        lengths = np.full(n_spans, span, dtype=np.int64)
    # Expand each start into start, start+1, ..., start+length-1 without a Python loop.
    span_offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    positions = np.repeat(starts, lengths) + span_offsets
    chosen[positions[positions < n]] = True
    return chosen


def _split_decisions(
    rng: np.random.RandomState, chosen: np.ndarray, leave_unmasked_prob: float, random_token_prob: float
) -> tuple[np.ndarray, np.ndarray]:
    """Among chosen units: which keep their token and which get a random one. The second draw
    happens only when both outcomes are possible, as in fairseq."""
    n = len(chosen)
    either_prob = leave_unmasked_prob + random_token_prob
    if either_prob <= 0.0:
        return np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    either = chosen & (rng.rand(n) < either_prob)
    if random_token_prob == 0.0:
        return either, np.zeros(n, dtype=bool)
    if leave_unmasked_prob == 0.0:
        return np.zeros(n, dtype=bool), either
    keep_given_either = rng.rand(n) < leave_unmasked_prob / either_prob
    return either & keep_given_either, either & ~keep_given_either


def _random_tokens(rng: np.random.RandomState, n: int, cumulative: np.ndarray) -> np.ndarray:
    """`n` replacement tokens drawn as `rng.choice(len(cumulative), n, p=...)` draws them,
    with the cumulative distribution made once (see `replacement_distribution`)."""
    return cumulative.searchsorted(rng.random_sample(n), side="right")


def replacement_distribution(vocab_size: int, num_special: int,
                             freq_weights: np.ndarray | Sequence[int] | None) -> np.ndarray:
    """The normalised cumulative distribution of replacement tokens: uniform over the
    non-special entries, or by dictionary count (fairseq's `--freq-weighted-replacement`)."""
    weights = np.ones(vocab_size) if freq_weights is None else np.array(freq_weights[:vocab_size], dtype=np.float64)
    weights[:num_special] = 0
    cumulative = (weights / weights.sum()).cumsum()
    return cumulative / cumulative[-1]


class MaskedLMDataset(torch.utils.data.Dataset):
    """The masked_lm training dataset: blocks in, `{"id", "source", "target"}` examples out.

    `word_begins` is a per-vocabulary-entry bool tensor (True where a token starts a word) that
    turns on whole-word masking. Masks depend on the epoch set by `set_epoch`.
    """

    def __init__(
        self,
        blocks: TokenBlockDataset,
        *,
        seed: int,
        mask_idx: int,
        vocab_size: int,
        pad_idx: int,
        mask_prob: float = 0.15,
        leave_unmasked_prob: float = 0.1,
        random_token_prob: float = 0.1,
        num_special: int = 4,
        freq_weights: np.ndarray | Sequence[int] | None = None,
        word_begins: torch.Tensor | None = None,
        mask_multiple_length: int = 1,
        mask_stdev: float = 0.0,
    ) -> None:
        _check_args(mask_prob, leave_unmasked_prob, random_token_prob, mask_multiple_length, mask_stdev)
        if freq_weights is not None and not np.asarray(freq_weights)[num_special:vocab_size].sum() > 0:
            raise UserError(
                "--freq-weighted-replacement needs dictionary counts, but every non-special count in dict.txt is 0; "
                "drop the flag or use a dict.txt with counts"
            )
        self.blocks = blocks
        self.sizes = np.asarray(blocks.sizes)
        self.seed = seed
        self.pad_idx = pad_idx
        self.word_begins = word_begins
        self.epoch = 1
        self._mask_args: dict[str, Any] = dict(
            mask_idx=mask_idx, vocab_size=vocab_size, pad_idx=pad_idx, mask_prob=mask_prob,
            leave_unmasked_prob=leave_unmasked_prob, random_token_prob=random_token_prob,
            num_special=num_special, mask_multiple_length=mask_multiple_length, mask_stdev=mask_stdev,
            replacement_cdf=replacement_distribution(vocab_size, num_special, freq_weights),
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        tokens = self.blocks[index].long()
        starts = self.word_begins[tokens] if self.word_begins is not None else None
        source, target = mask_tokens(
            tokens, seed=self.seed, epoch=self.epoch, index=index, mask_whole_words=starts, **self._mask_args
        )
        return {"id": index, "source": source, "target": target}

    def num_tokens(self, index: int) -> int:
        return int(self.sizes[index])

    def ordered_indices(self) -> np.ndarray:
        return length_sorted(self.sizes, self.seed)

    def collater(self, samples: list[dict]) -> dict:
        if not samples:
            return {}
        source = _pad_right([s["source"] for s in samples], self.pad_idx)
        lengths = torch.tensor([len(s["source"]) for s in samples], dtype=torch.long)
        return {
            "id": torch.tensor([s["id"] for s in samples], dtype=torch.long),
            "nsentences": len(samples),
            "ntokens": int((source != self.pad_idx).sum()),
            "net_input": {"src_tokens": source, "src_lengths": lengths},
            "target": _pad_right([s["target"] for s in samples], self.pad_idx),
        }


def _pad_right(tensors: list[torch.Tensor], pad_idx: int) -> torch.Tensor:
    width = max(len(t) for t in tensors)
    out = tensors[0].new_full((len(tensors), width), pad_idx)
    for row, t in enumerate(tensors):
        out[row, : len(t)] = t
    return out


def _check_args(
    mask_prob: float, leave_unmasked_prob: float, random_token_prob: float, mask_multiple_length: int, mask_stdev: float
) -> None:
    for flag, value in (("--mask-prob", mask_prob), ("--leave-unmasked-prob", leave_unmasked_prob),
                        ("--random-token-prob", random_token_prob)):
        if not 0.0 <= value <= 1.0:
            raise UserError(f"{flag} {value} is outside [0, 1]; pass a probability")
    if leave_unmasked_prob + random_token_prob > 1.0:
        raise UserError(
            f"--leave-unmasked-prob {leave_unmasked_prob} + --random-token-prob {random_token_prob} exceeds 1; "
            "lower one of them"
        )
    if mask_multiple_length < 1:
        raise UserError(f"--mask-multiple-length {mask_multiple_length} must be at least 1; pass a span length of 1 or more")
    if mask_stdev < 0.0:
        raise UserError(f"--mask-stdev {mask_stdev} must not be negative; pass 0 for fixed-length spans")
