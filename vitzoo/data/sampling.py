"""Per-sample seeding, so data augmentation is a function of (seed, epoch, position) only.

With the usual ``DataLoader`` seeding, a worker's RNG advances over every sample it loads, so the
augmentations after a mid-epoch resume depend on which batches were skipped and on the number of
workers. :class:`SeededSampler` wraps any index sampler and hands each position of the epoch its own
seed; the dataset runs the random transform under :func:`seeded_rng`, which seeds Python's, NumPy's and
torch's CPU generators for that one sample and then puts the caller's states back (the main process
keeps its own random stream for dropout and mixup).
"""

from __future__ import annotations

import contextlib
import random
from typing import Iterator, Optional

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["SeededSampler", "sample_seed", "seeded_rng"]


_MASK64 = (1 << 64) - 1


def _splitmix64(value: int) -> int:
    """One step of the SplitMix64 mixer (Steele et al., 2014): a cheap, well-spread 64-bit hash."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def sample_seed(seed: int, epoch: int, rank: int, position: int) -> int:
    """A 32-bit seed for one sample, decorrelated across all four inputs (a few microseconds: the sampler
    computes one per image of the epoch)."""
    state = 0
    for value in (seed, epoch, rank, position):
        state = _splitmix64(state ^ (value & _MASK64))
    return state >> 32


@contextlib.contextmanager
def seeded_rng(seed: Optional[int]) -> Iterator[None]:
    """Seed ``random``, ``numpy.random`` and torch's CPU generator with ``seed`` inside the block and
    restore their previous states after it. ``None`` leaves every generator untouched."""
    if seed is None:
        yield
        return
    saved = random.getstate(), np.random.get_state(), torch.random.default_generator.get_state()
    random.seed(seed)
    np.random.seed(seed)
    # only the CPU generator: torch.manual_seed would also reset every CUDA generator
    torch.random.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.random.default_generator.set_state(saved[2])


class SeededSampler(Sampler):
    """Yields ``(index, seed)`` for each index of ``sampler``; the seed depends on the base seed, the
    epoch, the process rank and the position in this process's stream, so repeated indices
    (repeated augmentation) still get different augmentations.

    Args:
        sampler: the index sampler (``DistributedSampler``, timm's ``RepeatAugSampler``, ...).
        seed: base seed of the run.
        rank: process index, so processes do not draw the same augmentation parameters.
    """

    def __init__(self, sampler: Sampler, seed: int, rank: int = 0):
        self.sampler = sampler
        self.seed = seed
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for position, index in enumerate(self.sampler):
            yield int(index), sample_seed(self.seed, self.epoch, self.rank, position)

    def __len__(self) -> int:
        return len(self.sampler)
