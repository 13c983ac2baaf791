"""EpochBatchIterator: coverage, per-epoch shuffling, sharding, grouping, workers and resume."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from roberta.data.batching import batch_by_size
from roberta.data.iterators import EpochBatchIterator
from roberta.data.masking import MaskedLMDataset
from roberta.errors import UserError

N = 40


class Examples:
    """A trainer-contract dataset whose items are just their ids; it counts item loads."""

    def __init__(self, n: int = N) -> None:
        self.sizes = np.arange(n) % 7 + 1
        self.epochs: list[int] = []
        self.loaded: list[int] = []

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, index: int) -> dict:
        self.loaded.append(int(index))
        return {"id": int(index)}

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def collater(self, samples: list[dict]) -> dict:
        return {"id": torch.tensor([s["id"] for s in samples])}


def make(dataset: Examples | None = None, **kwargs) -> EpochBatchIterator:
    dataset = dataset or Examples()
    batches = batch_by_size(np.arange(len(dataset)), dataset.sizes, max_sentences=3)  # 14 batches
    return EpochBatchIterator(dataset, batches, seed=3, **kwargs)


def ids(groups) -> list[list[int]]:
    return [batch["id"].tolist() if batch else [] for group in groups for batch in group]


def test_an_epoch_covers_every_example_once_and_sets_the_dataset_epoch() -> None:
    dataset = Examples()
    itr = make(dataset)
    epoch_ids = ids(itr.next_epoch_itr())
    assert sorted(sum(epoch_ids, [])) == list(range(N))
    assert dataset.epochs == [1] and itr.end_of_epoch()
    assert itr.state_dict() == {"version": 2, "epoch": 2, "iterations_in_epoch": 0, "shuffle": True}
    ids(itr.next_epoch_itr())
    assert itr.epoch == 2 and dataset.epochs == [1, 2]


def test_batch_order_depends_on_seed_and_epoch_but_contents_do_not() -> None:
    itr = make()
    first, second = ids(itr.next_epoch_itr()), ids(itr.next_epoch_itr())
    assert first != second and sorted(first) == sorted(second)
    assert ids(make().next_epoch_itr()) == first
    assert ids(make(epoch=2).next_epoch_itr()) == second
    unshuffled = ids(make().next_epoch_itr(shuffle=False))
    assert unshuffled == sorted(unshuffled)


@pytest.mark.parametrize("update_freq,consumed_groups", [(1, 5), (3, 2)])
def test_resume_mid_epoch_yields_exactly_the_remaining_batches(update_freq: int, consumed_groups: int) -> None:
    full = ids(make(update_freq=update_freq).next_epoch_itr())
    itr = make(update_freq=update_freq)
    epoch_itr = itr.next_epoch_itr()
    for _ in range(consumed_groups):
        next(epoch_itr)
    state = itr.state_dict()
    done = consumed_groups * update_freq
    assert state == {"version": 2, "epoch": 1, "iterations_in_epoch": done, "shuffle": True}

    dataset = Examples()
    resumed = make(dataset, update_freq=update_freq)
    resumed.load_state_dict(state)
    assert resumed.iterations_in_epoch == done and resumed.epoch == 1
    rest_itr = resumed.next_epoch_itr()
    assert rest_itr.n == consumed_groups and len(rest_itr) == len(epoch_itr)
    assert ids(rest_itr) == full[done:]
    assert sorted(dataset.loaded) == sorted(sum(full[done:], []))  # skipped batches never loaded
    assert resumed.end_of_epoch() and resumed.state_dict()["epoch"] == 2


def test_resume_at_an_epoch_boundary_starts_the_next_epoch() -> None:
    itr = make()
    ids(itr.next_epoch_itr())
    resumed = make()
    resumed.load_state_dict(itr.state_dict())
    assert resumed.state_dict()["epoch"] == 2
    assert ids(resumed.next_epoch_itr()) == ids(itr.next_epoch_itr())
    assert resumed.epoch == 2


def test_a_resume_offset_past_the_epoch_is_a_user_error() -> None:
    itr = make()
    with pytest.raises(UserError, match="cannot resume.*--reset-dataloader"):
        itr.load_state_dict({"version": 2, "epoch": 1, "iterations_in_epoch": 15, "shuffle": True})
    itr.load_state_dict({"version": 2, "epoch": 1, "iterations_in_epoch": 14, "shuffle": True})
    assert ids(itr.next_epoch_itr()) == [] and itr.end_of_epoch()


def test_update_freq_groups_and_the_remainder() -> None:
    epoch_itr = make(update_freq=4).next_epoch_itr()
    assert len(epoch_itr) == 4 and epoch_itr.n == 0
    groups = list(epoch_itr)
    assert [len(g) for g in groups] == [4, 4, 4, 2] and epoch_itr.n == 4
    skipping = make(update_freq=4, skip_remainder_batch=True).next_epoch_itr()
    assert len(skipping) == 3 and [len(g) for g in skipping] == [4, 4, 4]
    per_epoch = make(update_freq=[1, 2])
    assert [len(list(per_epoch.next_epoch_itr())) for _ in range(3)] == [14, 7, 7]


def test_shards_cover_the_data_and_take_the_same_number_of_steps() -> None:
    shards = [make(num_shards=3, shard_id=k) for k in range(3)]
    per_shard = [ids(s.next_epoch_itr()) for s in shards]
    assert [len(p) for p in per_shard] == [5, 5, 5] and all(len(s) == 5 for s in shards)
    assert sorted(sum(sum(per_shard, []), [])) == list(range(N))
    # 14 batches over 3 ranks: one rank pads with an empty placeholder batch
    assert sum(b == [] for p in per_shard for b in p) == 1
    raw = [b for p in per_shard for b in p if b]
    assert sorted(map(tuple, raw)) == sorted(map(tuple, ids(make().next_epoch_itr())))


def test_split_micro_batches_keep_every_update_and_the_resume_position() -> None:
    whole = ids(make(update_freq=2).next_epoch_itr())
    itr = make(update_freq=2)
    epoch = itr.next_epoch_itr()
    first = next(epoch)
    itr.split_micro_batches(2)
    rest = list(epoch)
    # Each group now holds 2 x 2 pieces (a 1-example batch leaves an empty piece), and together
    # they hold exactly the examples of the unsplit groups, in order.
    assert all(len(group) == 4 for group in rest[:-1])
    halves = [batch["id"].tolist() if batch else [] for group in rest for batch in group]
    assert [i for batch in ids([first]) + halves for i in batch] == [i for batch in whole for i in batch]
    assert epoch.n == 7 and itr.state_dict()["epoch"] == 2
    # The next epoch keeps the split.
    assert all(len(group) == 4 for group in list(itr.next_epoch_itr())[:-1])


def test_the_empty_placeholder_is_an_empty_dict() -> None:
    groups = list(make(num_shards=3, shard_id=2).next_epoch_itr())
    assert groups[-1] == [{}]


class Blocks:
    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.sizes = rng.integers(3, 20, size=30)
        self.items = [torch.from_numpy(rng.integers(4, 99, size=n)) for n in self.sizes]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.items[index]


def masked_dataset() -> MaskedLMDataset:
    return MaskedLMDataset(Blocks(), seed=5, mask_idx=99, vocab_size=100, pad_idx=1, mask_prob=0.3)


def test_worker_processes_give_the_same_batches_and_masks() -> None:
    def run(num_workers: int) -> list[torch.Tensor]:
        dataset = masked_dataset()
        batches = batch_by_size(dataset.ordered_indices(), dataset.sizes, max_tokens=40)
        itr = EpochBatchIterator(dataset, batches, seed=1, num_workers=num_workers, update_freq=2)
        itr.next_epoch_itr()
        out = []
        for group in itr.next_epoch_itr():  # epoch 2: workers must see the new epoch
            out += [t for b in group for t in (b["net_input"]["src_tokens"], b["target"], b["id"])]
        return out

    in_process, with_workers = run(0), run(2)
    assert len(in_process) == len(with_workers) > 0
    assert all(torch.equal(a, b) for a, b in zip(in_process, with_workers))
