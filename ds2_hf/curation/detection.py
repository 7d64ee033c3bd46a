"""Detect wrong scores (SimiFeat "rank" variant) and derive curated scores.

Per epoch, a random subsample; inside it each sample's k-NN (itself at rank 0, its distance replaced
by 2·d1 - d2) vote for their rated scores weighted by cosine similarity. A sample's suspicion is
-log of the normalised vote for its own score; within each rated class c the top ρ_c fraction by
suspicion is flagged, with ρ_c the class noise rate implied by (T, p). Over epochs each sample gets
a flag rate f = (#flagged + 1) / (#drawn + 2) and a distribution over the scores suggested while it
was flagged; it is *corrupted* when f > 0.5, and its score is replaced by the most suggested other
score when that suggestion's probability times f reaches tau.

    >>> result = detect(index, scores, valid, T, p, k=10, epochs=51, sample_size=50_000, rng=rng)
    >>> curated = curated_scores(scores, result, tau=0.5)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ds2_hf.curation.knn import NeighborIndex

RHO_MIN, RHO_MAX = 0.05, 0.95


@dataclass
class Detection:
    """Per-row results (arrays over all rows; rows without a score hold 0 / NaN)."""

    drawn: np.ndarray  # times the row was in an epoch's subsample
    flagged: np.ndarray  # times it was flagged
    suggest_counts: np.ndarray  # (n, K) scores suggested while flagged
    flag_rate: np.ndarray  # (flagged + 1) / (drawn + 2)
    corrupted: np.ndarray  # flag_rate > 0.5
    suggested: np.ndarray  # argmax of the suggestion distribution, own score excluded
    confidence: np.ndarray  # suggestion probability x flag rate
    noise_rates: np.ndarray  # rho_c per rated class
    info: dict


def noise_rates(T: np.ndarray, p: np.ndarray) -> np.ndarray:
    """ρ_c = clip(1 - P(true=c | rated=c), 0.05, 0.95) by Bayes from T and p."""
    rated = p @ T
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(rated > 0, np.diag(T) * p / rated, 1.0)
    return np.clip(1.0 - q, RHO_MIN, RHO_MAX)


def _epoch_subsamples(valid: np.ndarray, size: int, epochs: int, rng: np.random.Generator):
    """Yield `epochs` subsamples of `size` distinct rows, drawn from a stream of random
    permutations so that every row is drawn floor or ceil(epochs * size / n) times (the authors'
    independent draws leave some rows never drawn at all)."""
    queue = rng.permutation(valid)
    for _ in range(epochs):
        if len(queue) >= size:
            take, queue = queue[:size], queue[size:]
        else:
            # The old cycle's last rows plus the first rows of a new cycle that are not among them;
            # the new cycle keeps every other row, the old cycle's last rows included, for later.
            fresh = rng.permutation(valid)
            need = size - len(queue)
            eligible = np.flatnonzero(~np.isin(fresh, queue))[:need]
            take = np.concatenate([queue, fresh[eligible]])
            rest = np.ones(len(fresh), dtype=bool)
            rest[eligible] = False
            queue = fresh[rest]
        yield np.sort(take)


def _votes(scores_sub: np.ndarray, nbr_scores: np.ndarray, nbr_dist: np.ndarray, num_classes: int) -> np.ndarray:
    weights = 1.0 - nbr_dist
    votes = np.zeros((len(scores_sub), num_classes))
    rows = np.repeat(np.arange(len(scores_sub)), nbr_scores.shape[1])
    np.add.at(votes, (rows, nbr_scores.ravel()), weights.ravel())
    return votes


def _flag_epoch(
    index: NeighborIndex, scores: np.ndarray, members: np.ndarray, k: int, rho: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Flags and suggested scores for one subsample (arrays aligned with ``members``)."""
    nbr, dist = index.search(k - 1, members=members)
    self_dist = 2.0 * dist[:, 0] - dist[:, 1]
    all_dist = np.concatenate([self_dist[:, None], dist], axis=1)
    own = scores[members]
    all_scores = np.concatenate([own[:, None], scores[nbr]], axis=1)
    votes = _votes(own, all_scores, all_dist, num_classes)
    norm = np.linalg.norm(votes, axis=1, keepdims=True)
    norm[norm == 0] = 1.0
    own_vote = (votes / norm)[np.arange(len(own)), own]
    suspicion = -np.log(own_vote + 1e-8)
    suggested = votes.argmax(axis=1)
    flags = np.zeros(len(members), dtype=bool)
    for c in range(num_classes):
        in_class = np.flatnonzero(own == c)
        n_flag = int(np.floor(rho[c] * len(in_class) + 0.5))
        if n_flag == 0:
            continue
        # Most suspicious first; ties by row order so runs are reproducible.
        ranked = in_class[np.lexsort((in_class, -suspicion[in_class]))]
        flags[ranked[:n_flag]] = True
    return flags, suggested


def detect(
    index: NeighborIndex,
    scores: np.ndarray,
    valid: np.ndarray,
    T: np.ndarray,
    p: np.ndarray,
    *,
    num_classes: int = 6,
    k: int = 10,
    epochs: int = 51,
    sample_size: int = 50_000,
    min_draws: int = 10,
    rng: np.random.Generator,
) -> Detection:
    """Run the detection epochs over the rows ``valid`` (sorted indices of rows with a score).

    ``k`` counts the sample itself (k - 1 true neighbours). When ``sample_size`` covers every valid
    row, every epoch sees the same subsample and gives the same flags, so one epoch is computed and
    counted ``epochs`` times. Otherwise epochs are added until every row is drawn ``min_draws``
    times."""
    n = len(scores)
    rho = noise_rates(T, p)
    size = min(sample_size, len(valid))
    if size <= k:
        raise ValueError(f"Detection needs more than k={k} scored rows per subsample, got {size}")
    needed = int(np.ceil(min_draws * len(valid) / size)) if size < len(valid) else 1
    run_epochs = max(epochs, needed) if size < len(valid) else 1
    weight = epochs if size == len(valid) else 1
    drawn = np.zeros(n, dtype=np.int64)
    flagged = np.zeros(n, dtype=np.int64)
    suggest = np.zeros((n, num_classes), dtype=np.int64)
    for members in _epoch_subsamples(valid, size, run_epochs, rng):
        flags, suggested = _flag_epoch(index, scores, members, k, rho, num_classes)
        drawn[members] += weight
        hit = members[flags]
        flagged[hit] += weight
        np.add.at(suggest, (hit, suggested[flags]), weight)
    flag_rate = (flagged + 1) / (drawn + 2)
    dist = (suggest + 1) / (flagged[:, None] + num_classes)
    safe_scores = np.where(scores >= 0, scores, 0)
    dist[np.arange(n), safe_scores] = -1.0  # the original score can never be the suggestion
    best = dist.argmax(axis=1)
    confidence = dist[np.arange(n), best] * flag_rate
    is_valid = np.zeros(n, dtype=bool)
    is_valid[valid] = True
    draws = drawn[valid]
    info = {
        "k": k,
        "epochs": epochs,
        "epochs_run": run_epochs,
        "sample_size": size,
        "min_draws": min_draws,
        "draws_min": int(draws.min()) if len(draws) else 0,
        "draws_mean": round(float(draws.mean()), 3) if len(draws) else 0.0,
        "draws_max": int(draws.max()) if len(draws) else 0,
    }
    return Detection(
        drawn=drawn,
        flagged=flagged,
        suggest_counts=suggest,
        flag_rate=np.where(is_valid, flag_rate, np.nan),
        corrupted=is_valid & (flag_rate > 0.5),
        suggested=np.where(is_valid, best, -1),
        confidence=np.where(is_valid, confidence, np.nan),
        noise_rates=rho,
        info=info,
    )


def curated_scores(scores: np.ndarray, detection: Detection, tau: float = 0.5) -> np.ndarray:
    """Replace confidently wrong scores: the suggestion where corrupted and confidence >= tau.

    Rows without a score (negative) stay negative."""
    change = detection.corrupted & (detection.confidence >= tau)
    return np.where(change, detection.suggested, scores)
