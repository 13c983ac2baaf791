"""Dynamic masking: determinism per (seed, epoch, index), fairseq proportions, whole words, spans."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from roberta.data.masking import MaskedLMDataset, mask_tokens
from roberta.errors import UserError

BOS, PAD, EOS, MASK, VOCAB = 0, 1, 2, 999, 1000


def mask(tokens: torch.Tensor, index: int = 0, epoch: int = 1, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    return mask_tokens(tokens, seed=7, epoch=epoch, index=index, mask_idx=MASK, vocab_size=VOCAB, pad_idx=PAD, **kwargs)


def sample(n: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(4, MASK, size=n))


def test_same_seed_epoch_index_is_identical_and_other_epochs_or_indices_differ() -> None:
    tokens = sample(200)
    src, tgt = mask(tokens)
    again_src, again_tgt = mask(tokens.clone())
    assert torch.equal(src, again_src) and torch.equal(tgt, again_tgt)
    assert not torch.equal(tgt, mask(tokens, epoch=2)[1])
    assert not torch.equal(tgt, mask(tokens, index=1)[1])


def test_mask_count_is_floor_of_prob_times_length_plus_uniform() -> None:
    tokens = sample(110)  # 0.15 * 110 = 16.5
    counts = [int((mask(tokens, index=i)[1] != PAD).sum()) for i in range(400)]
    assert set(counts) == {16, 17}
    assert abs(counts.count(17) / 400 - 0.5) < 0.1


def test_proportions_match_fairseq_80_10_10() -> None:
    chosen = masked = kept = random = 0
    for i in range(400):
        tokens = sample(128, seed=i)
        src, tgt = mask(tokens, index=i)
        sel = tgt != PAD
        assert torch.equal(tgt[sel], tokens[sel])
        assert torch.equal(src[~sel], tokens[~sel])
        chosen += int(sel.sum())
        masked += int((src[sel] == MASK).sum())
        kept += int((src[sel] == tokens[sel]).sum())
        changed = sel & (src != MASK) & (src != tokens)
        random += int(changed.sum())
        assert bool(((src[changed] >= 4) & (src[changed] < VOCAB)).all())
    assert abs(chosen / (400 * 128) - 0.15) < 0.005
    assert abs(masked / chosen - 0.8) < 0.03
    assert abs(kept / chosen - 0.1) < 0.02
    assert abs(random / chosen - 0.1) < 0.02


def test_pad_is_never_chosen_and_targets_are_pad_elsewhere() -> None:
    tokens = torch.cat([sample(30), torch.full((20,), PAD)])
    for i in range(100):
        src, tgt = mask(tokens, index=i, mask_prob=0.5)
        assert bool((src[30:] == PAD).all()) and bool((tgt[30:] == PAD).all())
        assert int((tgt[:30] != PAD).sum()) in (15, 16)


def test_freq_weighted_replacement_draws_by_count() -> None:
    weights = np.zeros(VOCAB)
    weights[:4] = 100.0  # special symbols must never be drawn even with a count
    weights[42] = 5.0
    tokens = sample(200)
    src, tgt = mask(tokens, random_token_prob=1.0, leave_unmasked_prob=0.0, freq_weights=weights)
    sel = tgt != PAD
    assert bool((src[sel] == 42).all()) and int(sel.sum()) == 30


def test_whole_word_masking_masks_every_piece_of_a_chosen_word() -> None:
    rng = np.random.default_rng(3)
    for i in range(50):
        starts = torch.from_numpy(rng.random(120) < 0.4)
        starts[0] = True
        tokens = sample(120, seed=i)
        src, tgt = mask(tokens, index=i, mask_whole_words=starts)
        word_ids = torch.cumsum(starts.long(), 0)
        chosen = tgt != PAD
        n_words = 0
        for w in torch.unique(word_ids):
            in_word = chosen[word_ids == w]
            assert bool(in_word.all()) or not bool(in_word.any())
            n_words += bool(in_word.any())
        assert n_words in (int(0.15 * int(starts.sum())), int(0.15 * int(starts.sum())) + 1)
        # keep / random / mask is decided per word too
        for w in torch.unique(word_ids[chosen]):
            pieces = src[word_ids == w]
            assert bool((pieces == MASK).all()) or not bool((pieces == MASK).any())


def test_span_masking_chooses_contiguous_spans() -> None:
    tokens = sample(20)
    for i in range(50):
        _, tgt = mask(tokens, index=i, mask_multiple_length=3)  # int(0.15 * 20 / 3 + U) = 1 span
        positions = torch.nonzero(tgt != PAD).flatten().tolist()
        assert positions == list(range(positions[0], positions[0] + len(positions)))
        assert len(positions) == 3 or positions[-1] == 19


def test_span_lengths_vary_with_stdev() -> None:
    tokens = sample(400)
    lengths = {int((mask(tokens, index=i, mask_prob=0.01, mask_multiple_length=4, mask_stdev=2.0)[1] != PAD).sum())
               for i in range(40)}
    assert len(lengths) > 3


def test_input_with_mask_token_is_rejected() -> None:
    tokens = sample(10)
    tokens[3] = MASK
    with pytest.raises(UserError, match="<mask>"):
        mask(tokens)


class Blocks:
    def __init__(self, lengths: list[int]) -> None:
        self.items = [torch.cat([torch.tensor([BOS]), sample(n - 1, seed=n)]) for n in lengths]
        self.sizes = np.array(lengths)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.items[index]


def make_dataset(seed: int = 1, **kwargs) -> MaskedLMDataset:
    blocks = Blocks([5, 9, 5, 7, 5, 9, 5, 12])
    return MaskedLMDataset(blocks, seed=seed, mask_idx=MASK, vocab_size=VOCAB, pad_idx=PAD, mask_prob=0.5, **kwargs)


def test_dataset_masks_depend_on_the_epoch() -> None:
    ds = make_dataset()
    first = [ds[i]["target"] for i in range(len(ds))]
    ds.set_epoch(2)
    second = [ds[i]["target"] for i in range(len(ds))]
    assert any(not torch.equal(a, b) for a, b in zip(first, second))
    ds.set_epoch(1)
    assert all(torch.equal(a, ds[i]["target"]) for i, a in enumerate(first))
    assert ds[3]["id"] == 3


def test_dataset_whole_words_come_from_a_vocabulary_table() -> None:
    word_begins = torch.ones(VOCAB, dtype=torch.bool)
    ds = make_dataset(word_begins=word_begins)
    assert torch.equal(ds[7]["target"], make_dataset()[7]["target"])


def test_collater_pads_right_and_counts_real_tokens() -> None:
    ds = make_dataset()
    batch = ds.collater([ds[0], ds[7], ds[3]])
    src = batch["net_input"]["src_tokens"]
    assert src.shape == (3, 12) and batch["target"].shape == (3, 12)
    assert batch["id"].tolist() == [0, 7, 3]
    assert batch["net_input"]["src_lengths"].tolist() == [5, 12, 7]
    assert batch["nsentences"] == 3 and batch["ntokens"] == 24
    assert bool((src[0, 5:] == PAD).all()) and bool((batch["target"][2, 7:] == PAD).all())
    assert torch.equal(src[1], ds[7]["source"])
    assert ds.collater([]) == {}


def test_ordered_indices_sort_by_length_with_a_seeded_tie_break() -> None:
    order = make_dataset().ordered_indices()
    sizes = make_dataset().sizes[order]
    assert sorted(order.tolist()) == list(range(8)) and (np.diff(sizes) >= 0).all()
    assert order.tolist() == make_dataset().ordered_indices().tolist()
    ties = {tuple(make_dataset(seed=s).ordered_indices()[:4]) for s in range(10)}
    assert len(ties) > 1
    ds = make_dataset()
    ds.set_epoch(5)
    assert ds.ordered_indices().tolist() == order.tolist()
    assert ds.num_tokens(7) == 12


def test_bad_probabilities_name_the_flag() -> None:
    with pytest.raises(UserError, match="--mask-prob"):
        MaskedLMDataset(Blocks([5]), seed=1, mask_idx=MASK, vocab_size=VOCAB, pad_idx=PAD, mask_prob=1.5)
    with pytest.raises(UserError, match="--random-token-prob"):
        make_dataset(leave_unmasked_prob=0.6, random_token_prob=0.6)
