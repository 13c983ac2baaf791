"""One seed, fairseq's data: our blocks, orders, batches, masks and crops against fairseq 0.12.2's
own dataset classes (opt-in: set FAIRSEQ_PYTHON, see scripts/fairseq_reference_env.sh).

fairseq's classes run in its venv on a data-bin generated here; every case compares whole
outputs, index for index, over two epochs and several seeds and masking settings.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from roberta.data.batching import batch_by_size, length_sorted, random_order
from roberta.data.dictionary import Dictionary
from roberta.data.indexed_dataset import MMapIndexedDataset, MMapIndexedDatasetBuilder, best_fitting_dtype
from roberta.data.iterators import EpochBatchIterator
from roberta.data.masking import MaskedLMDataset
from roberta.data.shortening import shortened
from roberta.data.token_blocks import BREAK_MODES, TokenBlockDataset

FAIRSEQ_PYTHON = os.environ.get("FAIRSEQ_PYTHON", "")
if not FAIRSEQ_PYTHON:
    pytest.skip("FAIRSEQ_PYTHON is not set (scripts/fairseq_reference_env.sh builds fairseq 0.12.2's venv)",
                allow_module_level=True)

SEEDS = (1, 7)
EPOCHS = (1, 2)
BLOCK = 32
MASKING = {  # name -> (mask_prob, leave_unmasked_prob, random_token_prob, freq_weighted, multiple_length, stdev)
    "default": (0.15, 0.1, 0.1, False, 1, 0.0),
    "no_random": (0.3, 0.2, 0.0, False, 1, 0.0),
    "no_unmask": (0.3, 0.0, 0.3, True, 1, 0.0),
    "spans": (0.2, 0.1, 0.1, False, 3, 0.0),
    "spans_stdev": (0.2, 0.1, 0.1, False, 2, 1.5),
}

FAIRSEQ_SIDE = r'''
import json, sys
import numpy as np
from fairseq.data import (Dictionary, FairseqDataset, MaskTokensDataset, PrependTokenDataset, SortDataset,
                          TokenBlockDataset, data_utils, iterators)
from fairseq.data.shorten_dataset import RandomCropDataset

prefix, seeds, epochs, block, masking = sys.argv[1], *map(json.loads, sys.argv[2:6])
dictionary = Dictionary.load(prefix.rsplit("/", 1)[0] + "/dict.txt")
mask_idx = dictionary.add_symbol("<mask>")
lines = data_utils.load_indexed_dataset(prefix, dictionary, "mmap")
out = {"blocks": {}, "masks": {}, "sorted": {}, "random": {}, "batches": {}, "epoch_order": {}, "crops": {}}
for mode in ("none", "complete", "complete_doc", "eos"):
    blocks = TokenBlockDataset(lines, lines.sizes, block - 1, pad=dictionary.pad(), eos=dictionary.eos(),
                               break_mode=mode)
    out["blocks"][mode] = [blocks[i].tolist() for i in range(len(blocks))]
blocks = PrependTokenDataset(TokenBlockDataset(lines, lines.sizes, block - 1, pad=dictionary.pad(),
                                               eos=dictionary.eos(), break_mode="complete"), dictionary.bos())


class Positions(FairseqDataset):
    def __init__(self, n): self.n = n
    def __getitem__(self, index): return index
    def __len__(self): return self.n


for seed in seeds:
    for name, (prob, unmask, rand, freq, length, stdev) in masking.items():
        source, target = MaskTokensDataset.apply_mask(
            blocks, dictionary, pad_idx=dictionary.pad(), mask_idx=mask_idx, seed=seed, mask_prob=prob,
            leave_unmasked_prob=unmask, random_token_prob=rand, freq_weighted_replacement=freq,
            mask_multiple_length=length, mask_stdev=stdev)
        for epoch in epochs:
            source.set_epoch(epoch); target.set_epoch(epoch)
            out["masks"][f"{seed}/{name}/{epoch}"] = [[source[i].tolist(), target[i].tolist()]
                                                       for i in range(len(blocks))]
    with data_utils.numpy_seed(seed):
        shuffle = np.random.permutation(len(blocks))
    order = SortDataset(blocks, sort_order=[shuffle, blocks.sizes]).ordered_indices()
    out["sorted"][seed] = order.tolist()
    out["random"][seed] = SortDataset(blocks, sort_order=[shuffle]).ordered_indices().tolist()
    for max_tokens, max_sentences, multiple in ((None, 4, 1), (100, None, 1), (128, 6, 4)):
        batches = data_utils.batch_by_size(order, lambda i: int(blocks.sizes[i]), max_tokens=max_tokens,
                                           max_sentences=max_sentences, required_batch_size_multiple=multiple)
        out["batches"][f"{seed}/{max_tokens}/{max_sentences}/{multiple}"] = [b.tolist() for b in batches]
    batches = data_utils.batch_by_size(order, lambda i: int(blocks.sizes[i]), max_sentences=4)
    for shards in (1, 2):
        for shard in range(shards):
            itr = iterators.EpochBatchIterator(Positions(len(blocks)), collate_fn=list, batch_sampler=batches,
                                               seed=seed, num_shards=shards, shard_id=shard)
            for epoch in epochs:
                out["epoch_order"][f"{seed}/{shards}/{shard}/{epoch}"] = list(itr.next_epoch_itr(shuffle=True))
    crops = RandomCropDataset(lines, 5, seed)
    for epoch in epochs:
        crops.set_epoch(epoch)
        out["crops"][f"{seed}/{epoch}"] = [crops[i].tolist() for i in range(len(lines))]
json.dump(out, sys.stdout, default=int)
'''


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A small data-bin with documents (empty lines) and lines of every length up to 2 blocks."""
    root = tmp_path_factory.mktemp("order")
    rng = np.random.default_rng(0)
    dictionary = Dictionary()
    for word in range(60):
        dictionary.add_symbol(f"w{word}", n=int(rng.integers(1, 100)))
    dictionary.finalize()
    dictionary.save(root / "dict.txt")
    builder = MMapIndexedDatasetBuilder(root / "train.bin", best_fitting_dtype(len(dictionary)))
    for line in range(120):
        length = 0 if line % 11 == 10 else int(rng.integers(1, 2 * BLOCK))
        words = " ".join(f"w{w}" for w in rng.integers(0, 60, size=length))
        builder.add_item(dictionary.encode_line(words))
    builder.finalize(root / "train.idx")
    return root


@pytest.fixture(scope="module")
def fairseq(data: Path) -> dict:
    result = subprocess.run([FAIRSEQ_PYTHON, "-c", FAIRSEQ_SIDE, str(data / "train"), json.dumps(SEEDS),
                             json.dumps(EPOCHS), json.dumps(BLOCK), json.dumps(MASKING)],
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout)


def lines_and_dictionary(data: Path) -> tuple[MMapIndexedDataset, Dictionary]:
    dictionary = Dictionary.load(data / "dict.txt")
    dictionary.add_symbol("<mask>")
    return MMapIndexedDataset(str(data / "train")), dictionary


def ours_blocks(data: Path, mode: str, bos: int | None) -> TokenBlockDataset:
    lines, dictionary = lines_and_dictionary(data)
    return TokenBlockDataset(lines, lines.sizes, BLOCK if bos is not None else BLOCK - 1, mode,
                             pad=dictionary.pad(), eos=dictionary.eos(), bos=bos, allow_overlong=True)


class Positions(torch.utils.data.Dataset):
    """Serves each index itself, so an iterator's output is its batch order."""

    def __getitem__(self, index: int) -> int:
        return int(index)

    def set_epoch(self, epoch: int) -> None:
        pass

    def collater(self, samples: list[int]) -> list[int]:
        return samples


@pytest.mark.parametrize("mode", BREAK_MODES)
def test_token_blocks_are_fairseqs(data: Path, fairseq: dict, mode: str) -> None:
    blocks = ours_blocks(data, mode, bos=None)
    assert [blocks[i].tolist() for i in range(len(blocks))] == fairseq["blocks"][mode]


@pytest.mark.parametrize("seed", SEEDS)
def test_orders_batches_and_epoch_shuffles_are_fairseqs(data: Path, fairseq: dict, seed: int) -> None:
    blocks = ours_blocks(data, "complete", bos=0)
    order = length_sorted(blocks.sizes, seed)
    assert order.tolist() == fairseq["sorted"][str(seed)]
    assert random_order(len(blocks), seed).tolist() == fairseq["random"][str(seed)]
    for key, expected in fairseq["batches"].items():
        if key.startswith(f"{seed}/"):
            _, max_tokens, max_sentences, multiple = key.split("/")
            batches = batch_by_size(order, blocks.sizes, max_tokens=None if max_tokens == "None" else int(max_tokens),
                                    max_sentences=None if max_sentences == "None" else int(max_sentences),
                                    required_batch_size_multiple=int(multiple))
            assert [batch.tolist() for batch in batches] == expected, key
    batches = batch_by_size(order, blocks.sizes, max_sentences=4)
    for shards in (1, 2):
        for shard in range(shards):
            iterator = EpochBatchIterator(Positions(), batches, seed=seed, num_shards=shards, shard_id=shard)
            for epoch in EPOCHS:
                epoch_itr = iterator.next_epoch_itr()
                served = [batch for group in epoch_itr for batch in group]
                assert served == fairseq["epoch_order"][f"{seed}/{shards}/{shard}/{epoch}"], (shards, shard, epoch)


@pytest.mark.parametrize("name", MASKING)
@pytest.mark.parametrize("seed", SEEDS)
def test_masks_are_fairseqs(data: Path, fairseq: dict, seed: int, name: str) -> None:
    _, dictionary = lines_and_dictionary(data)
    prob, unmask, rand, freq, length, stdev = MASKING[name]
    dataset = MaskedLMDataset(ours_blocks(data, "complete", bos=dictionary.bos()), seed=seed,
                              mask_idx=dictionary.index("<mask>"), vocab_size=len(dictionary),
                              pad_idx=dictionary.pad(), mask_prob=prob, leave_unmasked_prob=unmask,
                              random_token_prob=rand, freq_weights=dictionary.count if freq else None,
                              mask_multiple_length=length, mask_stdev=stdev)
    for epoch in EPOCHS:
        dataset.set_epoch(epoch)
        ours = [[dataset[i]["source"].tolist(), dataset[i]["target"].tolist()] for i in range(len(dataset))]
        assert ours == fairseq["masks"][f"{seed}/{name}/{epoch}"], epoch


@pytest.mark.parametrize("seed", SEEDS)
def test_random_crops_are_fairseqs(data: Path, fairseq: dict, seed: int) -> None:
    lines, _ = lines_and_dictionary(data)
    for epoch in EPOCHS:
        ours = [shortened(lines[i], "random_crop", 5, (seed, epoch, i)).tolist() for i in range(len(lines))]
        assert ours == fairseq["crops"][f"{seed}/{epoch}"], epoch
