"""Building one model input from parts: an optional leading token, and fairseq's shorten methods."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from typing import Sequence

import torch

from roberta.data.seeding import seeded_rng

SHORTEN_METHODS = ("none", "truncate", "random_crop")


def add_shortening_args(parser: argparse.ArgumentParser | argparse._ArgumentGroup, what: str) -> None:
    """fairseq's shortening flags; `what` names what is cut (examples, sequences)."""
    parser.add_argument("--shorten-method", default="none", choices=SHORTEN_METHODS,
                        help=f"cut {what} longer than --max-positions: keep the start, or a random window")
    parser.add_argument("--shorten-data-split-list", default="",
                        help="comma-separated splits to shorten (default: all)")
    parser.add_argument("--truncate-sequence", action="store_true",
                        help="older fairseq spelling of --shorten-method truncate")


@dataclass(frozen=True, kw_only=True)
class ShorteningSettings:
    """The shortening flags of a fine-tuning task."""
    shorten_method: str = "none"
    shorten_data_split_list: str = ""
    truncate_sequence: bool = False

    def method_for(self, split: str) -> str:
        """The shortening of `split`: none for a split outside a given --shorten-data-split-list;
        --truncate-sequence is fairseq's older spelling of --shorten-method truncate."""
        splits = {name for name in self.shorten_data_split_list.split(",") if name}
        if splits and split not in splits:
            return "none"
        return "truncate" if self.truncate_sequence and self.shorten_method == "none" else self.shorten_method


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
