"""Building one model input from parts: an optional leading token, and fairseq's shorten methods."""
from __future__ import annotations

from typing import Sequence

import torch

from roberta.data.seeding import seeded_rng

SHORTEN_METHODS = ("none", "truncate", "random_crop")


def prefixed(token: int | None, tokens: torch.Tensor) -> torch.Tensor:
    """`tokens` (as int64) with `token` in front, or unchanged when `token` is None."""
    tokens = tokens.long()
    if token is None:
        return tokens
    return torch.cat([tokens.new_tensor([token]), tokens])


def shortened(tokens: torch.Tensor, method: str, max_positions: int | None, crop_key: Sequence[int]) -> torch.Tensor:
    """At most `max_positions` tokens (None: no limit): the start (`truncate`) or a random window (`random_crop`)
    drawn from `crop_key` alone ((seed, epoch, example), fairseq's key), so it is resumable, the
    same in every data-loading worker, and fairseq's crop."""
    if method == "none" or max_positions is None or len(tokens) <= max_positions:
        return tokens
    if method == "truncate":
        return tokens[:max_positions]
    # As fairseq's RandomCropDataset: the start is below the excess, so the last window is never drawn.
    start = int(seeded_rng(*crop_key).randint(0, len(tokens) - max_positions))
    return tokens[start: start + max_positions]
