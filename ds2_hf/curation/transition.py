"""HOC: estimate the score transition matrix T[i, j] = P(rated j | true i) and the prior p = P(true).

Under 2-NN clusterability (a sample and its two nearest neighbours share the true score, and the
rater's noise is independent given it) the frequencies of rated-score patterns over
(sample, 1st NN, 2nd NN) satisfy

    c1[j]       = sum_k p_k T[k, j]
    c2[i, j]    = sum_k p_k T[k, i] T[k, j]
    c3[i, j, l] = sum_k p_k T[k, i] T[k, j] T[k, l]

`estimate_transition` counts the patterns inside random subsamples (neighbours found within each
subsample, as DS2 does), then fits T = row-softmax(U), p = softmax(v) by Adam on the sum of the
unsquared residual norms, with hand-derived gradients (numpy only), keeping the best iterate.

    >>> T, p, info = estimate_transition(index, scores, rounds=50, sample_size=50_000, seed=0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ds2_hf.curation.knn import NeighborIndex


@dataclass
class HOCFit:
    T: np.ndarray
    p: np.ndarray
    loss: float
    best_step: int
    initial_loss: float


def consensus_patterns(scores: np.ndarray, rows: np.ndarray, neighbors: np.ndarray, num_classes: int) -> np.ndarray:
    """Frequencies of (own score, 1st-NN score, 2nd-NN score) over ``rows``: a K x K x K array summing
    to 1. ``neighbors`` holds global row indices, aligned with ``rows``."""
    a, b, c = scores[rows], scores[neighbors[:, 0]], scores[neighbors[:, 1]]
    flat = (a * num_classes + b) * num_classes + c
    counts = np.bincount(flat, minlength=num_classes**3).astype(np.float64)
    return (counts / max(len(rows), 1)).reshape(num_classes, num_classes, num_classes)


def _softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _moments(T: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c1 = p @ T
    c2 = np.einsum("k,ki,kj->ij", p, T, T)
    c3 = np.einsum("k,ki,kj,kl->ijl", p, T, T, T)
    return c1, c2, c3


def hoc_loss_and_grad(
    U: np.ndarray, v: np.ndarray, c1_hat: np.ndarray, c2_hat: np.ndarray, c3_hat: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """Loss ||c1-ĉ1|| + ||c2-ĉ2||_F + ||c3-ĉ3||_F and its gradients with respect to U and v."""
    T, p = _softmax(U, axis=1), _softmax(v)
    c1, c2, c3 = _moments(T, p)
    r1, r2, r3 = c1 - c1_hat, c2 - c2_hat, c3 - c3_hat
    n1, n2, n3 = (float(np.linalg.norm(r)) for r in (r1, r2, r3))
    loss = n1 + n2 + n3
    # d||r||/dr = r/||r||; a zero residual contributes no gradient.
    g1 = r1 / n1 if n1 > 0 else np.zeros_like(r1)
    g2 = r2 / n2 if n2 > 0 else np.zeros_like(r2)
    g3 = r3 / n3 if n3 > 0 else np.zeros_like(r3)
    g2s = g2 + g2.T
    # dL/dT[k, m]
    dT = p[:, None] * (
        g1[None, :]
        + T @ g2s
        + np.einsum("mjl,kj,kl->km", g3, T, T)
        + np.einsum("iml,ki,kl->km", g3, T, T)
        + np.einsum("ijm,ki,kj->km", g3, T, T)
    )
    # dL/dp[k]
    dp = T @ g1 + np.einsum("ij,ki,kj->k", g2, T, T) + np.einsum("ijl,ki,kj,kl->k", g3, T, T, T)
    # Back through the softmaxes.
    dU = T * (dT - (dT * T).sum(axis=1, keepdims=True))
    dv = p * (dp - (dp * p).sum())
    return loss, dU, dv


def fit_transition(
    patterns: np.ndarray, *, steps: int = 1500, lr: float = 0.1, seed: int = 0
) -> HOCFit:
    """Fit (T, p) to consensus-pattern frequencies ``patterns`` (K x K x K) by Adam.

    Init U = 5I - 1 (a diagonally dominant T, which fixes the label permutation) and v = 0 (uniform
    p) plus a seeded 1e-3 jitter; the minimum-loss iterate is returned."""
    K = patterns.shape[0]
    c3_hat = patterns
    c2_hat = patterns.sum(axis=2)
    c1_hat = c2_hat.sum(axis=1)
    rng = np.random.default_rng(seed)
    U = 5.0 * np.eye(K) - 1.0
    v = 1e-3 * rng.standard_normal(K)
    params = [U, v]
    m = [np.zeros_like(x) for x in params]
    s = [np.zeros_like(x) for x in params]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    best = (np.inf, U.copy(), v.copy(), -1)
    initial = None
    for step in range(steps + 1):
        loss, dU, dv = hoc_loss_and_grad(params[0], params[1], c1_hat, c2_hat, c3_hat)
        if initial is None:
            initial = loss
        if loss < best[0]:
            best = (loss, params[0].copy(), params[1].copy(), step)
        if step == steps:
            break
        for i, g in enumerate((dU, dv)):
            m[i] = beta1 * m[i] + (1 - beta1) * g
            s[i] = beta2 * s[i] + (1 - beta2) * g * g
            m_hat = m[i] / (1 - beta1 ** (step + 1))
            s_hat = s[i] / (1 - beta2 ** (step + 1))
            params[i] = params[i] - lr * m_hat / (np.sqrt(s_hat) + eps)
    loss, U_best, v_best, best_step = best
    return HOCFit(_softmax(U_best, axis=1), _softmax(v_best), float(loss), best_step, float(initial))


def estimate_transition(
    index: NeighborIndex,
    scores: np.ndarray,
    valid: np.ndarray,
    *,
    num_classes: int = 6,
    rounds: int = 50,
    sample_size: int = 50_000,
    steps: int = 1500,
    lr: float = 0.1,
    rng: np.random.Generator,
    seed: int = 0,
) -> tuple[HOCFit, dict]:
    """Count consensus patterns in ``rounds`` random subsamples of the rows in ``valid`` (sorted
    row indices with a score), each with neighbours found inside the subsample, average, and fit.

    When ``sample_size`` covers every valid row, all rounds are the same subsample, so it is
    counted once (same result, 1/rounds of the work)."""
    n_valid = len(valid)
    size = min(sample_size, n_valid)
    distinct_rounds = 1 if size == n_valid else rounds
    acc = np.zeros((num_classes,) * 3)
    for _ in range(distinct_rounds):
        members = valid if size == n_valid else np.sort(rng.choice(valid, size=size, replace=False))
        nbrs, _ = index.search(2, members=members)
        acc += consensus_patterns(scores, members, nbrs, num_classes)
    patterns = acc / distinct_rounds
    fit = fit_transition(patterns, steps=steps, lr=lr, seed=seed)
    info = {
        "rounds": rounds,
        "distinct_rounds": distinct_rounds,
        "sample_size": size,
        "steps": steps,
        "lr": lr,
        "loss": round(fit.loss, 6),
        "initial_loss": round(fit.initial_loss, 6),
        "best_step": fit.best_step,
    }
    return fit, info
