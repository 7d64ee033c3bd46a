"""Long-tail (rarity) score: how far a sample sits from its nearest neighbours.

longtail_i = tanh(m_i / 2), with m_i the mean cosine distance to the k nearest *other* samples.
tanh(m/2) = 2·sigmoid(m) - 1, the authors' squashing; monotone in m, in [0, 1). No rounding.

    >>> idx, dist = index.search(10)
    >>> longtail_from_distances(dist)
"""

from __future__ import annotations

import numpy as np


def longtail_from_distances(distances: np.ndarray) -> np.ndarray:
    """float32 long-tail scores from an (n, k) array of neighbour cosine distances."""
    mean = distances.astype(np.float64).mean(axis=1)
    return np.tanh(mean / 2.0).astype(np.float32)
