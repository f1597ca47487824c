"""Seeded random subsets of a batch of images (MuSc Table 7 scalability study, and job sharding)."""

from __future__ import annotations

import math

import numpy as np


def split_subsets(n: int, num_subsets: int, seed: int) -> list[np.ndarray]:
    """Split indices 0..n-1 into ``num_subsets`` random subsets of near-equal size (sorted inside).

    Mutual scoring needs at least two images per subset, so a split that would leave a subset with
    fewer is refused with a message saying how many subsets at most are possible.
    """
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
    if n < 2 * num_subsets:
        raise ValueError(
            f"cannot split {n} images into {num_subsets} subsets of at least 2 images "
            f"(at most {max(n // 2, 0)} subsets possible)"
        )
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, num_subsets)]


def split_by_max_size(n: int, max_size: int, seed: int) -> list[np.ndarray]:
    """As few near-equal random subsets as keep each at most ``max_size`` images.

    Every subset keeps at least 2 images (mutual scoring compares images), so with ``max_size`` 2
    an odd ``n`` gets one subset of 3: the only split that neither drops nor repeats an image.
    """
    if max_size < 2:
        raise ValueError(f"max subset size must be >= 2, got {max_size}")
    return split_subsets(n, max(1, min(math.ceil(n / max_size), n // 2)), seed)
