"""Size filtering and token-budgeted batching (`--max-tokens`, `--batch-size`, `--max-positions`).

Both run over every example of a split, so sizes are gathered with one numpy call and the
greedy batching loop works on plain Python ints.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np

from roberta.data.seeding import seeded_rng
from roberta.errors import UserError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchingSettings:
    """The data-loading flags of a run (`--max-tokens`, `--batch-size`, ...), checked together."""
    max_tokens: int | None = None
    batch_size: int | None = None
    required_batch_size_multiple: int = 8
    num_workers: int = 1
    skip_invalid_size_inputs_valid_test: bool = False
    max_tokens_valid: int | None = None
    batch_size_valid: int | None = None
    seed: int = 1
    update_freq: tuple[int, ...] = (1,)

    def __post_init__(self) -> None:
        if self.max_tokens is None and self.batch_size is None:
            raise UserError("give --max-tokens or --batch-size (--max-sentences) to size the mini-batches")
        for flag in ("max_tokens", "batch_size", "max_tokens_valid", "batch_size_valid"):
            value = getattr(self, flag)
            if value is not None and value <= 0:
                raise UserError(f"--{flag.replace('_', '-')} must be positive, got {value}")
        if self.required_batch_size_multiple < 1:
            raise UserError(f"--required-batch-size-multiple must be >= 1, got {self.required_batch_size_multiple}")
        if self.num_workers < 0:
            raise UserError(f"--num-workers must be >= 0, got {self.num_workers}")

    def limits(self, *, train: bool) -> tuple[int | None, int | None]:
        """(max tokens, max examples) per mini-batch; validation falls back to the training limits."""
        if train:
            return self.max_tokens, self.batch_size
        return self.max_tokens_valid or self.max_tokens, self.batch_size_valid or self.batch_size


def length_sorted(sizes: np.ndarray, seed: int) -> np.ndarray:
    """Indices sorted by length, so batches pad little, ties in the order of a seeded
    permutation's values: fairseq's `SortDataset(sort_order=[shuffle, sizes])`, index for index."""
    return np.lexsort([shuffled(len(sizes), seed), np.asarray(sizes)])


def example_order(sizes: np.ndarray, seed: int, *, shuffle: bool, by_length: bool) -> np.ndarray:
    """The order a fine-tuning split is batched in: fairseq's seeded random order; the file order
    with `shuffle` off (--no-shuffle); or, with `by_length` (--sort-by-length, not a fairseq flag),
    sorted by length, which pads less but no longer gives fairseq's batches."""
    if not shuffle:
        return np.arange(len(sizes))
    return length_sorted(sizes, seed) if by_length else random_order(len(sizes), seed)


def random_order(n: int, seed: int) -> np.ndarray:
    """A seeded random order of the n examples, fairseq's `SortDataset(sort_order=[shuffle])`
    for its fine-tuning tasks, which do not sort by length."""
    return np.argsort(shuffled(n, seed), kind="stable")


def shuffled(n: int, seed: int) -> np.ndarray:
    """A permutation of range(n) that depends on the seed only: fairseq's per-split shuffle."""
    return seeded_rng(seed).permutation(n)


def filter_by_size(
    indices: np.ndarray,
    sizes: np.ndarray,
    max_positions: int | None,
    raise_on_long: bool,
    split_name: str,
) -> np.ndarray:
    """Drop examples longer than `max_positions`, keeping the order of `indices`.

    `sizes` is `[N]`, or `[N, k]` for examples made of several inputs (every input must fit).
    Training splits drop them with a warning; validation splits raise unless the user chose
    `--skip-invalid-size-inputs-valid-test` (pass `raise_on_long=False`).
    """
    indices = np.asarray(indices, dtype=np.int64)
    if max_positions is None or len(indices) == 0:
        return indices
    example_sizes = np.asarray(sizes)[indices].reshape(len(indices), -1)
    too_long = (example_sizes > max_positions).any(axis=1)
    n_long = int(too_long.sum())
    if n_long == 0:
        return indices
    ids = indices[too_long][:10].tolist()
    if raise_on_long:
        raise UserError(
            f"{n_long} examples of split '{split_name}' are longer than --max-positions {max_positions} "
            f"(ids {ids}{' ...' if n_long > 10 else ''}); raise --max-positions or pass "
            "--skip-invalid-size-inputs-valid-test to skip them"
        )
    if n_long == len(indices):
        raise UserError(
            f"all {n_long} examples of split '{split_name}' are longer than --max-positions {max_positions}; "
            "raise --max-positions/--max-tokens or check the data"
        )
    logger.warning(
        "%d examples of split '%s' are longer than %d tokens and will be skipped (first ids: %s)",
        n_long, split_name, max_positions, ids,
    )
    return indices[~too_long]


def batch_by_size(
    indices: np.ndarray,
    num_tokens: Callable[[int], int] | np.ndarray,
    max_tokens: int | None = None,
    max_sentences: int | None = None,
    required_batch_size_multiple: int = 1,
) -> list[np.ndarray]:
    """Cut `indices` (in order) into mini-batches, as fairseq does.

    A batch is full when it has `max_sentences` examples, or when adding the next example would
    make `n_examples * longest` (the padded size) exceed `max_tokens`. A full batch of at least
    `required_batch_size_multiple` examples is cut down to a multiple of it; the cut-off
    examples start the next batch. `num_tokens` is a sizes array or a per-index function.
    """
    if not max_tokens and not max_sentences:
        raise UserError("no batch size limit; pass --max-tokens and/or --batch-size")
    if required_batch_size_multiple < 1:
        raise UserError(f"--required-batch-size-multiple {required_batch_size_multiple} must be at least 1")
    indices = np.asarray(indices, dtype=np.int64)
    if callable(num_tokens):
        lengths = [int(num_tokens(int(i))) for i in indices]
    else:
        lengths = np.asarray(num_tokens)[indices].tolist()
    if max_tokens:
        _check_fits(indices, lengths, max_tokens)
    cuts = _batch_ends(lengths, max_tokens or 0, max_sentences or 0, required_batch_size_multiple)
    return np.split(indices, cuts[:-1]) if cuts else []


def _check_fits(indices: np.ndarray, lengths: list[int], max_tokens: int) -> None:
    longest = int(np.argmax(lengths)) if lengths else 0
    if lengths and lengths[longest] > max_tokens:
        raise UserError(
            f"example {int(indices[longest])} has {lengths[longest]} tokens, more than --max-tokens {max_tokens}; "
            "raise --max-tokens or filter long examples with --max-positions"
        )


def _batch_ends(lengths: list[int], max_tokens: int, max_sentences: int, multiple: int) -> list[int]:
    """End offsets (exclusive) of each batch in `lengths`; the last one is `len(lengths)`."""
    ends: list[int] = []
    start = 0  # first example of the open batch
    longest = 0
    for pos, length in enumerate(lengths):
        longest = max(longest, length)
        size = pos - start
        full = size > 0 and (
            (max_sentences and size == max_sentences) or (max_tokens and (size + 1) * longest > max_tokens)
        )
        if full:
            keep = max(multiple * (size // multiple), size % multiple)
            start += keep
            ends.append(start)
            longest = max(lengths[start : pos + 1])
    if start < len(lengths):
        ends.append(len(lengths))
    return ends
