"""Building one model input from parts: an optional leading token, and fairseq's shorten methods."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

SHORTEN_METHODS = ("none", "truncate", "random_crop")


def prefixed(token: int | None, tokens: torch.Tensor) -> torch.Tensor:
    """`tokens` (as int64) with `token` in front, or unchanged when `token` is None."""
    tokens = tokens.long()
    if token is None:
        return tokens
    return torch.cat([tokens.new_tensor([token]), tokens])


def shortened(tokens: torch.Tensor, method: str, max_positions: int | None, crop_key: Sequence[int]) -> torch.Tensor:
    """At most `max_positions` tokens: the start (`truncate`) or a random window (`random_crop`)
    drawn from `crop_key` alone (e.g. seed, epoch, example), so it is resumable and the same in
    every data-loading worker."""
    if method == "none" or len(tokens) <= max_positions:
        return tokens
    if method == "truncate":
        return tokens[:max_positions]
    rng = np.random.default_rng(list(crop_key))
    start = int(rng.integers(0, len(tokens) - max_positions + 1))
    return tokens[start: start + max_positions]
