"""batch_by_size (padded token budget, required multiple) and filter_by_size."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from roberta.data.batching import batch_by_size, filter_by_size
from roberta.errors import UserError


def as_lists(batches: list[np.ndarray]) -> list[list[int]]:
    return [b.tolist() for b in batches]


def test_max_tokens_counts_padded_tokens() -> None:
    sizes = np.array([2, 2, 2, 5, 5])
    # [0,1,2] is 6 padded tokens; adding 3 would make 4 x 5 = 20 > 10.
    assert as_lists(batch_by_size(np.arange(5), sizes, max_tokens=10)) == [[0, 1, 2], [3, 4]]
    assert as_lists(batch_by_size(np.arange(5), sizes, max_tokens=9)) == [[0, 1, 2], [3], [4]]


def test_max_sentences_and_both_limits() -> None:
    sizes = np.ones(7, dtype=np.int64)
    assert [len(b) for b in batch_by_size(np.arange(7), sizes, max_sentences=3)] == [3, 3, 1]
    assert [len(b) for b in batch_by_size(np.arange(7), sizes * 2, max_tokens=8, max_sentences=3)] == [3, 3, 1]
    assert [len(b) for b in batch_by_size(np.arange(7), sizes * 2, max_tokens=4, max_sentences=3)] == [2, 2, 2, 1]


def test_required_multiple_rounds_full_batches_down_and_carries_the_rest() -> None:
    sizes = np.ones(10, dtype=np.int64)
    got = as_lists(batch_by_size(np.arange(10), sizes, max_sentences=5, required_batch_size_multiple=2))
    assert got == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    # A full batch smaller than the multiple is emitted whole.
    got = as_lists(batch_by_size(np.arange(5), np.array([4, 4, 4, 4, 4]), max_tokens=8, required_batch_size_multiple=8))
    assert got == [[0, 1], [2, 3], [4]]


def test_indices_order_is_kept_and_a_function_gives_the_same_batches() -> None:
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 50, size=500)
    order = np.argsort(sizes, kind="stable")
    from_array = batch_by_size(order, sizes, max_tokens=200, required_batch_size_multiple=4)
    from_fn = batch_by_size(order, lambda i: sizes[i], max_tokens=200, required_batch_size_multiple=4)
    assert as_lists(from_array) == as_lists(from_fn)
    assert np.concatenate(from_array).tolist() == order.tolist()
    for batch in from_array:
        assert len(batch) * sizes[batch].max() <= 200
        assert len(batch) % 4 == 0 or batch is from_array[-1] or len(batch) < 4


def reference(sizes: list[int], max_tokens: int, max_sentences: int, mult: int) -> list[list[int]]:
    """fairseq's algorithm, written with lists."""
    batches, batch, lens = [], [], []
    for idx, size in enumerate(sizes):
        lens.append(size)
        n_tok = (len(batch) + 1) * max(lens)
        full = batch and ((max_sentences and len(batch) == max_sentences) or (max_tokens and n_tok > max_tokens))
        if full:
            keep = max(mult * (len(batch) // mult), len(batch) % mult)
            batches.append(batch[:keep])
            batch, lens = batch[keep:], lens[keep:]
        batch.append(idx)
    return batches + ([batch] if batch else [])


@pytest.mark.parametrize("max_tokens,max_sentences,mult", [(300, 0, 1), (300, 0, 8), (0, 13, 4), (256, 10, 3)])
def test_matches_the_reference_algorithm(max_tokens: int, max_sentences: int, mult: int) -> None:
    sizes = np.random.default_rng(1).integers(1, 60, size=2000)
    got = batch_by_size(np.arange(2000), sizes, max_tokens or None, max_sentences or None, mult)
    assert as_lists(got) == reference(sizes.tolist(), max_tokens, max_sentences, mult)


def test_bad_limits_are_user_errors() -> None:
    with pytest.raises(UserError, match="--max-tokens"):
        batch_by_size(np.arange(3), np.array([1, 2, 3]))
    with pytest.raises(UserError, match="example 2 has 30 tokens.*--max-tokens 20"):
        batch_by_size(np.arange(3), np.array([1, 2, 30]), max_tokens=20)
    assert batch_by_size(np.arange(0), np.zeros(0, dtype=np.int64), max_tokens=20) == []


def test_filter_drops_long_training_examples_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    sizes = np.array([5, 12, 3, 20, 7])
    with caplog.at_level(logging.WARNING):
        kept = filter_by_size(np.array([4, 3, 2, 1, 0]), sizes, 10, raise_on_long=False, split_name="train")
    assert kept.tolist() == [4, 2, 0]
    assert "2 examples of split 'train'" in caplog.text and "[3, 1]" in caplog.text
    assert filter_by_size(np.arange(5), sizes, None, raise_on_long=True, split_name="valid").tolist() == list(range(5))


def test_filter_raises_on_long_validation_examples() -> None:
    sizes = np.array([5, 12, 3])
    with pytest.raises(UserError, match=r"split 'valid'.*--max-positions 10 \(ids \[1\]\).*--skip-invalid-size-inputs"):
        filter_by_size(np.arange(3), sizes, 10, raise_on_long=True, split_name="valid")


def test_filter_checks_every_input_of_multi_input_examples() -> None:
    sizes = np.array([[3, 4], [3, 11], [12, 1]])
    assert filter_by_size(np.arange(3), sizes, 10, raise_on_long=False, split_name="train").tolist() == [0]
    with pytest.raises(UserError, match="all 3 examples"):
        filter_by_size(np.arange(3), sizes, 2, raise_on_long=False, split_name="train")
