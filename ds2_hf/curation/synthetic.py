"""Clusterable synthetic data with a known noise transition matrix, to validate curation end to end.

Samples live in clusters (grouped into topics); every sample of a cluster shares one true score, so
a sample and its nearest neighbours share the true score (the 2-NN clusterability DS2's estimator
assumes). Rated scores are drawn from ``T[true]``.

    >>> from ds2_hf.curation.synthetic import make_clusterable, default_transition
    >>> data = make_clusterable(2_000, dim=64, T=default_transition(), seed=0)
    >>> data.embeddings.shape, data.true_scores[:5], data.rated_scores[:5]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_CLASSES = 6


@dataclass
class SyntheticData:
    embeddings: np.ndarray  # (n, dim) float32, unit norm
    true_scores: np.ndarray  # (n,) int64
    rated_scores: np.ndarray  # (n,) int64
    cluster: np.ndarray  # (n,) int64
    T: np.ndarray  # (K, K) the transition matrix used
    p: np.ndarray  # (K,) the prior used


def default_transition(num_classes: int = NUM_CLASSES, correct: float = 0.7) -> np.ndarray:
    """A rater that is right with probability ``correct`` and otherwise off by one (mostly) or two."""
    k = num_classes
    T = np.zeros((k, k))
    for i in range(k):
        T[i, i] = correct
        spread = {i - 1: 0.4, i + 1: 0.4, i - 2: 0.1, i + 2: 0.1}
        spread = {j: w for j, w in spread.items() if 0 <= j < k}
        total = sum(spread.values())
        for j, w in spread.items():
            T[i, j] = (1 - correct) * w / total
    return T


def make_clusterable(
    n: int,
    dim: int = 64,
    T: np.ndarray | None = None,
    p: np.ndarray | None = None,
    *,
    cluster_size: int = 50,
    num_topics: int = 50,
    noise: float = 0.6,
    seed: int = 0,
    chunk: int = 65_536,
) -> SyntheticData:
    """Draw ``n`` unit-norm embeddings in clusters of about ``cluster_size``, with true and rated scores.

    ``noise`` is the within-cluster spread relative to the cluster centre (0.6 gives neighbour cosine
    similarities around 0.7, like sentence embeddings of related texts). Generated in chunks so a
    300k x 1024 matrix needs no more than its own memory.
    """
    rng = np.random.default_rng(seed)
    T = default_transition() if T is None else np.asarray(T, dtype=np.float64)
    k = T.shape[0]
    p = np.full(k, 1.0 / k) if p is None else np.asarray(p, dtype=np.float64)
    num_clusters = max(1, n // cluster_size)
    topics = _unit(rng.standard_normal((num_topics, dim)))
    centres = _unit(topics[rng.integers(0, num_topics, num_clusters)] + 0.8 * _unit(rng.standard_normal((num_clusters, dim))))
    cluster_true = rng.choice(k, size=num_clusters, p=p)
    cluster = rng.integers(0, num_clusters, n)
    true = cluster_true[cluster]
    # Inverse-CDF sampling of rated | true, vectorised over rows.
    cdf = np.cumsum(T, axis=1)
    rated = (rng.random(n)[:, None] > cdf[true]).sum(axis=1).clip(0, k - 1)
    emb = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        block = centres[cluster[start:stop]] + noise * rng.standard_normal((stop - start, dim)) / np.sqrt(dim)
        emb[start:stop] = _unit(block)
    return SyntheticData(emb, true.astype(np.int64), rated.astype(np.int64), cluster.astype(np.int64), T, p)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
