"""Resumable epoch iteration over fixed batches: shuffle, shard, load, group into updates.

The batch list is fixed for the whole run; each epoch only reorders it (seeded by
`seed + epoch`), so the position in an epoch is fully described by (epoch, number of
mini-batches consumed). That pair is what a checkpoint stores, and a resumed run rebuilds the
same order and skips the consumed batches without loading them.
"""
from __future__ import annotations

import math
import sys
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from roberta.data.seeding import seeded_rng
from roberta.errors import UserError
from roberta.stop_signals import ignore_interrupts

STATE_VERSION = 2
# Forked workers start in milliseconds. A rank started by torch.multiprocessing.spawn would
# otherwise spawn its workers too, each re-importing torch: seconds at every epoch and validation.
WORKER_START_METHOD = "fork" if sys.platform.startswith("linux") else None


class _Collate:
    """Collates with the dataset, mapping the empty padding batch of a short shard to `{}`."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __call__(self, samples: list) -> dict:
        return self.dataset.collater(samples) if samples else {}


class EpochIterator:
    """One epoch of one shard, yielding lists of up to `update_freq` collated mini-batches.

    `len()` is the number of updates in the epoch and `n` the number done so far, counting the
    ones skipped on resume as done (a partial group rounds up, as fairseq's resume does).
    With `parts` > 1 (--oom-backoff) each mini-batch is collated as that many smaller ones and a
    group holds all of them; positions still count whole mini-batches, so checkpoints agree.
    """

    def __init__(self, dataset: Any, shard: list[np.ndarray], offset: int, stop: int, update_freq: int,
                 num_workers: int, parts: int = 1) -> None:
        self._dataset = dataset
        self._shard = shard
        self._num_workers = num_workers
        self._parts = parts
        self._batches: Iterator[dict] | None = None
        self.offset = offset
        self.consumed = offset
        self.stop = stop
        self.update_freq = update_freq
        self._groups_at_start = math.ceil(offset / update_freq)

    def __len__(self) -> int:
        return self._groups_at_start + math.ceil((self.stop - self.offset) / self.update_freq)

    @property
    def n(self) -> int:
        return self._groups_at_start + math.ceil((self.consumed - self.offset) / self.update_freq)

    def has_next(self) -> bool:
        return self.consumed < self.stop

    def split_batches(self, parts: int) -> None:
        """Serve the rest of the epoch with every mini-batch split in `parts`."""
        if parts != self._parts:
            self._parts = parts
            self._batches = None

    def __iter__(self) -> EpochIterator:
        return self

    def __next__(self) -> list[dict]:
        if not self.has_next():
            raise StopIteration
        if self._batches is None:
            self._batches = iter(self._loader())
        size = min(self.update_freq, self.stop - self.consumed)
        group = [next(self._batches) for _ in range(size * self._parts)]
        self.consumed += size
        return group

    def _loader(self) -> torch.utils.data.DataLoader:
        pieces = [piece for batch in self._shard[self.consumed:self.stop] for piece in _split(batch, self._parts)]
        # DataLoader takes any iterable of index sequences; its stub asks for lists.
        return torch.utils.data.DataLoader(self._dataset, batch_sampler=pieces,  # type: ignore[arg-type]
                                           collate_fn=_Collate(self._dataset),
                                           num_workers=self._num_workers, worker_init_fn=ignore_interrupts,
                                           multiprocessing_context=WORKER_START_METHOD if self._num_workers else None)


def _split(batch: np.ndarray, parts: int) -> list[np.ndarray]:
    # Always `parts` pieces, empty ones included, so every rank's groups have the same length.
    return [batch] if parts == 1 else np.array_split(batch, parts)


class EpochBatchIterator:
    """Serves `batches` (arrays of dataset indices) epoch after epoch for one rank.

    Each epoch: batch order shuffled with `seed + epoch` (fairseq's stream) (batch contents never change), split
    round-robin over `num_shards` ranks (short shards padded with empty batches, collated to
    `{}`, so every rank runs the same number of steps), loaded by a DataLoader with
    `num_workers` processes after `dataset.set_epoch(epoch)`, and grouped per update.
    `update_freq` may be a per-epoch list (the last value holds for later epochs).
    With `skip_remainder_batch`, a final group shorter than `update_freq` is dropped.
    """

    def __init__(
        self,
        dataset: Any,
        batches: Sequence[np.ndarray],
        *,
        seed: int,
        epoch: int = 1,
        shuffle: bool = True,
        num_shards: int = 1,
        shard_id: int = 0,
        num_workers: int = 0,
        update_freq: int | Sequence[int] = 1,
        skip_remainder_batch: bool = False,
    ) -> None:
        if not 0 <= shard_id < num_shards:
            raise ValueError(f"shard_id {shard_id} is not in [0, {num_shards})")
        freqs = [update_freq] if isinstance(update_freq, int) else list(update_freq)
        if not freqs or min(freqs) < 1:  # --update-freq is checked when the flags are parsed
            raise ValueError(f"update_freq {update_freq} is not one or more integers >= 1")
        self.dataset = dataset
        self.batches = [np.asarray(b, dtype=np.int64) for b in batches]
        self.seed = seed
        self.shuffle = shuffle
        self.num_shards = num_shards
        self.shard_id = shard_id
        self.num_workers = num_workers
        self.update_freqs = freqs
        self.skip_remainder_batch = skip_remainder_batch
        self._epoch = epoch
        self.micro_batch_parts = 1
        self._current: EpochIterator | None = None
        self._resume: tuple[bool, int] | None = None  # (shuffle, offset) loaded from a checkpoint

    def __len__(self) -> int:
        """Mini-batches per epoch on this rank (the same on every rank)."""
        return math.ceil(len(self.batches) / self.num_shards)

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def next_epoch_idx(self) -> int:
        """The epoch the next `next_epoch_itr()` call will serve."""
        if self._resume is None and self._current is not None and self.end_of_epoch():
            return self._epoch + 1
        return self._epoch

    def update_freq(self, epoch: int) -> int:
        return self.update_freqs[min(epoch, len(self.update_freqs)) - 1]

    @property
    def iterations_in_epoch(self) -> int:
        """Mini-batches of the current epoch already consumed (or skipped on resume)."""
        if self._current is not None:
            return self._current.consumed
        return self._resume[1] if self._resume is not None else 0

    def end_of_epoch(self) -> bool:
        return self._current is not None and not self._current.has_next()

    def next_epoch_itr(self, shuffle: bool | None = None) -> EpochIterator:
        """Start (or, after `load_state_dict`, resume) the next epoch; returns update groups.

        A resumed epoch keeps the checkpoint's `shuffle` so its batch order is the one saved.
        """
        self._epoch = self.next_epoch_idx
        if self._resume is not None:
            shuffle, offset = self._resume
            self._resume = None
        else:
            shuffle, offset = (self.shuffle if shuffle is None else shuffle), 0
        self.shuffle = shuffle
        self.dataset.set_epoch(self._epoch)
        self._current = self._epoch_iterator(self._epoch, shuffle, offset)
        return self._current

    def state_dict(self) -> dict:
        if self.end_of_epoch():
            return {"version": STATE_VERSION, "epoch": self._epoch + 1, "iterations_in_epoch": 0,
                    "shuffle": self.shuffle}
        return {"version": STATE_VERSION, "epoch": self._epoch, "iterations_in_epoch": self.iterations_in_epoch,
                "shuffle": self.shuffle}

    def load_state_dict(self, state: dict) -> None:
        epoch, offset = int(state["epoch"]), int(state.get("iterations_in_epoch", 0))
        if offset > len(self):
            raise UserError(
                f"cannot resume: the data or batching changed since the checkpoint (it stopped after {offset} "
                f"mini-batches of epoch {epoch}, but this epoch now has {len(self)}); relaunch with "
                "--reset-dataloader to start the epoch over"
            )
        self._epoch = epoch
        self.shuffle = bool(state.get("shuffle", True))
        self._current = None
        self._resume = (self.shuffle, offset) if offset > 0 else None

    def _epoch_iterator(self, epoch: int, shuffle: bool, offset: int) -> EpochIterator:
        shard = self._shard_batches(epoch, shuffle)
        freq = self.update_freq(epoch)
        stop = len(shard)
        if self.skip_remainder_batch:
            stop = offset + (stop - offset) // freq * freq
        return EpochIterator(self.dataset, shard, offset, stop, freq, self.num_workers, self.micro_batch_parts)

    def split_micro_batches(self, parts: int) -> None:
        """From now on (this epoch included) split every mini-batch in `parts` (--oom-backoff)."""
        self.micro_batch_parts = parts
        if self._current is not None:
            self._current.split_batches(parts)

    def _shard_batches(self, epoch: int, shuffle: bool) -> list[np.ndarray]:
        order = list(range(len(self.batches)))
        if shuffle:  # shuffling a list, as fairseq does, draws the same swaps as its batch list
            seeded_rng(self.seed + epoch).shuffle(order)
        shard = [self.batches[i] for i in order[self.shard_id :: self.num_shards]]
        empty = np.zeros(0, dtype=np.int64)
        return shard + [empty] * (len(self) - len(shard))
