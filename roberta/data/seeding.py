"""fairseq's numpy random streams, so that one seed gives fairseq's data order, masks and crops.

fairseq draws everything that shapes the data from numpy's legacy Mersenne Twister: the
length-sort tie-breaking and the epoch's batch order from `seed` (or `seed + epoch`) directly,
and per-example decisions (masks, random crops) from `hash((seed, epoch, index)) % 1e6`.
Python hashes a tuple of ints identically on every run and platform (no hash randomisation
for ints), so these streams are reproducible across processes, workers and resumes.
"""
from __future__ import annotations

import threading

import numpy as np

# Building a RandomState draws OS entropy first (about as slow as masking a whole example), so
# each thread reseeds one generator instead, as fairseq reseeds numpy's global one.
_PER_THREAD = threading.local()


def seeded_rng(seed: int, *keys: int) -> np.random.RandomState:
    """The generator fairseq's `numpy_seed(seed, *keys)` installs. It is this thread's one
    generator, reseeded: use it up before the next call."""
    if keys:
        seed = int(hash((seed, *keys)) % 1e6)
    rng = getattr(_PER_THREAD, "rng", None)
    if rng is None:
        rng = _PER_THREAD.rng = np.random.RandomState()
    rng.seed(seed)
    return rng
