"""Cosine k-NN over unit-norm embeddings, for whole pools and for random subsamples of them.

DS2 takes neighbours *within random subsamples* (HOC rounds, detection epochs) and over the whole
pool (long-tail score). `NeighborIndex.search(k, members=...)` answers both: for every member row,
its ``k`` nearest *other* members (self excluded by index, never by "drop the first hit"), sorted
by cosine distance ``1 - <e_i, e_j>``.

Two methods:

- ``"exact"``: one exact FAISS flat inner-product search over the pool, with enough neighbours that
  filtering them by subsample membership yields each member's ``k`` nearest members; rows that see
  too few members in their list get an exact brute-force search inside the subsample. Because the
  global list is an exact prefix of the sorted order, the result equals a direct exact search inside
  the subsample (up to the order of exactly tied distances).
- ``"ivf"``: an inverted-file partition (FAISS spherical k-means over ``nlist`` cells). Each cell's
  rows are compared, with one BLAS matrix product, to the members of the ``nprobe`` cells whose
  centroids are nearest to its own. ``nprobe`` is raised until recall@k, measured against exact
  search on a sample of queries, reaches ``target_recall``; the measured recall is reported.

    >>> index = NeighborIndex(embeddings)                 # method chosen by size
    >>> idx, dist = index.search(10)                       # (n, 10) neighbours of every row
    >>> members = np.sort(rng.choice(n, 5_000, replace=False))
    >>> idx, dist = index.search(9, members=members)       # neighbours inside the subsample
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

EXACT_MAX_ROWS = 50_000
_BLOCK = 512


def _faiss():
    import faiss

    return faiss


@dataclass
class KNNInfo:
    """How neighbours were found, for the curation report."""

    method: str
    n: int
    dim: int
    params: dict[str, Any] = field(default_factory=dict)
    recall: dict[str, float] = field(default_factory=dict)
    fallback_rows: int = 0
    searches: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "n": self.n,
            "dim": self.dim,
            **self.params,
            "recall": dict(self.recall),
            "exact_fallback_rows": self.fallback_rows,
            "searches": self.searches,
        }


def _min_list_size(k: int, fraction: float, miss: float = 1e-3, cap: int = 512) -> int:
    """Smallest K with P(Binomial(K, fraction) < k) <= miss: how long a global list must be so that
    filtering it by a random subsample of that fraction leaves k members for all but `miss` rows."""
    if fraction >= 1.0:
        return k
    log_f, log_q = math.log(fraction), math.log1p(-fraction)
    for K in range(k, cap + 1):
        tail = 0.0
        for j in range(k):
            tail += math.exp(math.lgamma(K + 1) - math.lgamma(j + 1) - math.lgamma(K - j + 1) + j * log_f + (K - j) * log_q)
        if tail <= miss:
            return K
    return cap


def _top_k(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column positions and similarities of the k largest entries per row, largest first.

    Ties are broken by column position so results do not depend on the selection algorithm."""
    k = min(k, sims.shape[1])
    if k < sims.shape[1]:
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(sims.shape[1]), sims.shape).copy()
    vals = np.take_along_axis(sims, part, axis=1)
    order = np.lexsort((part, -vals), axis=1) if vals.size else np.zeros_like(part)
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


def brute_force(
    x: np.ndarray, queries: np.ndarray, k: int, candidates: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest *other* candidates of each query row (global indices, cosine distances).

    ``queries`` and ``candidates`` are row indices into ``x`` (candidates default to every row, and
    are otherwise sorted unique indices). A query's own row is excluded by index. Rows with fewer
    than k other candidates are padded with index -1 and distance inf."""
    queries = np.asarray(queries, dtype=np.int64)
    if candidates is None:
        cand, cand_x = np.arange(x.shape[0]), x  # no copy of the whole matrix
    else:
        cand = np.unique(candidates)
        cand_x = x[cand]
    out_i = np.full((len(queries), k), -1, dtype=np.int64)
    out_d = np.full((len(queries), k), np.inf, dtype=np.float32)
    # Bound the similarity block (and argpartition's index array) to ~16M entries.
    block = int(max(16, min(_BLOCK, (1 << 24) // max(len(cand), 1))))
    for start in range(0, len(queries), block):
        q = queries[start : start + block]
        sims = x[q] @ cand_x.T
        pos = np.minimum(np.searchsorted(cand, q), len(cand) - 1)
        own = np.flatnonzero(cand[pos] == q)
        sims[own, pos[own]] = -np.inf
        top, val = _top_k(sims, k)
        ok = np.isfinite(val)
        out_i[start : start + len(q), : top.shape[1]] = np.where(ok, cand[top], -1)
        out_d[start : start + len(q), : top.shape[1]] = np.where(ok, 1.0 - val, np.inf)
    return out_i, out_d


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true neighbours (rows of ``truth``) present in ``found``."""
    hits = 0
    total = 0
    for f, t in zip(found, truth):
        t = t[t >= 0]
        hits += len(np.intersect1d(f, t, assume_unique=True))
        total += len(t)
    return hits / max(total, 1)


class NeighborIndex:
    """k-NN over unit-norm rows of ``x`` (float32), exact or IVF; see the module docstring.

    Parameters: ``method`` ("auto" = exact up to ``exact_max_rows`` rows, IVF above), ``nlist``
    (IVF cells; default about 2·sqrt(n)), ``nprobe`` (fixed; default: tuned to ``target_recall``),
    ``recall_queries`` (sample size for recall measurement), ``seed``, ``threads`` (workers for
    the IVF cell join; default: the CPU count, at most 8).
    """

    def __init__(
        self,
        x: np.ndarray,
        method: str = "auto",
        *,
        exact_max_rows: int = EXACT_MAX_ROWS,
        nlist: int | None = None,
        nprobe: int | None = None,
        target_recall: float = 0.97,
        recall_k: int = 10,
        recall_queries: int = 1000,
        seed: int = 0,
        threads: int | None = None,
    ) -> None:
        if x.dtype != np.float32 or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, dtype=np.float32)
        self.x = x
        n, dim = x.shape
        if method == "auto":
            method = "exact" if n <= exact_max_rows else "ivf"
        if method not in ("exact", "ivf"):
            raise ValueError(f"knn method must be 'auto', 'exact' or 'ivf', got {method!r}")
        self.method = method
        self.seed = seed
        self.threads = max(1, threads if threads is not None else min(8, os.cpu_count() or 1))
        self.info = KNNInfo(method=method, n=n, dim=dim)
        self._global: tuple[np.ndarray, np.ndarray] | None = None  # exact path: sorted global lists
        if method == "ivf":
            self._build_ivf(nlist, nprobe, target_recall, recall_k, recall_queries)

    # ------------------------------------------------------------------ public
    def search(self, k: int, members: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest other members of every member row (all rows when ``members`` is None).

        Returns ``(indices, distances)`` of shape ``(len(members), k)``: global row indices and
        cosine distances, nearest first. ``members`` must be sorted unique row indices."""
        n = self.x.shape[0]
        rows = np.arange(n) if members is None else np.asarray(members, dtype=np.int64)
        if len(rows) <= k:
            raise ValueError(f"Need more than k={k} rows to find {k} neighbours, got {len(rows)}")
        self.info.searches += 1
        if self.method == "exact":
            return self._search_exact(k, rows, members is None)
        return self._join(rows, k, rows if members is not None else None)

    def measure_recall(
        self, k: int, members: np.ndarray | None = None, n_queries: int = 1000, salt: int = 7919
    ) -> float:
        """Recall@k of ``search`` against exact search on a random sample of member queries
        (``salt`` picks the sample, so tuning and reporting can use different queries)."""
        rows = np.arange(self.x.shape[0]) if members is None else np.asarray(members)
        rng = np.random.default_rng(self.seed + salt)
        sample = np.sort(rng.choice(rows, size=min(n_queries, len(rows)), replace=False))
        cand = None if members is None else rows
        truth, _ = brute_force(self.x, sample, k, cand)
        if self.method == "exact":
            found, _ = self.search(k, members)
            found = found[np.searchsorted(rows, sample)]
        else:
            found, _ = self._join(sample, k, cand)
        return recall_at_k(found, truth)

    def tune_for_members(self, k: int, members: np.ndarray, n_queries: int = 1000) -> float:
        """IVF only: raise nprobe until recall@k of searches inside a subsample like ``members``
        reaches the target (a subsample's k-th nearest member lies deeper in the global order than
        the k-th nearest row, so it needs more probes). Returns the recall reached."""
        if self.method != "ivf":
            return 1.0
        target = self.info.params["target_recall"]
        nlist = self.info.params["nlist"]
        while True:
            recall = self.measure_recall(k, members, n_queries)
            logger.info("IVF subsample search nprobe=%d: recall@%d %.4f", self.nprobe, k, recall)
            if recall >= target or self.nprobe >= nlist:
                break
            self.nprobe = min(nlist, self.nprobe * 2)
        self.info.params["nprobe"] = self.nprobe
        self.info.recall[f"subsample_tuning@{k}"] = round(recall, 4)
        return recall

    # ------------------------------------------------------------------ exact
    def _global_lists(self, K: int) -> tuple[np.ndarray, np.ndarray]:
        if self._global is None or self._global[0].shape[1] < K:
            faiss = _faiss()
            index = faiss.IndexFlatIP(self.x.shape[1])
            index.add(self.x)
            K_search = min(K + 1, self.x.shape[0])
            sims, idx = index.search(self.x, K_search)
            self._global = self._drop_self(idx, sims)
            self.info.params["global_list_size"] = self._global[0].shape[1]
        return self._global

    @staticmethod
    def _drop_self(idx: np.ndarray, sims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Remove each row's own index; where an exact duplicate pushed it out of the list, drop the
        # last column instead so every row keeps the same width.
        n = idx.shape[0]
        is_self = idx == np.arange(n)[:, None]
        missing = ~is_self.any(axis=1)
        is_self[missing, -1] = True
        keep = ~is_self
        width = idx.shape[1] - 1
        idx = idx[keep].reshape(n, width).astype(np.int64)
        dist = (1.0 - sims[keep]).reshape(n, width).astype(np.float32)
        # faiss marks missing results with -1; keep them at the end with infinite distance.
        dist[idx < 0] = np.inf
        return idx, dist

    def _search_exact(self, k: int, rows: np.ndarray, whole: bool) -> tuple[np.ndarray, np.ndarray]:
        n = self.x.shape[0]
        if whole:
            idx, dist = self._global_lists(k)
            return idx[:, :k], dist[:, :k]
        K = min(n - 1, _min_list_size(k, len(rows) / n))
        idx, dist = self._global_lists(K)
        idx, dist = idx[rows], dist[rows]
        member = np.zeros(n + 1, dtype=bool)  # slot n absorbs the -1 padding index
        member[rows] = True
        ok = member[idx]
        # Stable argsort of "not a member" puts each row's members first, in distance order.
        order = np.argsort(~ok, axis=1, kind="stable")[:, :k]
        out_i = np.take_along_axis(idx, order, axis=1)
        out_d = np.take_along_axis(dist, order, axis=1)
        short = np.flatnonzero(ok.sum(axis=1) < k)
        if len(short):
            self.info.fallback_rows += len(short)
            out_i[short], out_d[short] = brute_force(self.x, rows[short], k, rows)
        return out_i, out_d

    # ------------------------------------------------------------------ ivf
    def _build_ivf(self, nlist, nprobe, target_recall, recall_k, recall_queries) -> None:
        faiss = _faiss()
        n, dim = self.x.shape
        nlist = int(nlist or max(16, min(8192, round(2 * math.sqrt(n)))))
        rng = np.random.default_rng(self.seed)
        train = self.x[np.sort(rng.choice(n, size=min(n, 40 * nlist), replace=False))]
        kmeans = faiss.Kmeans(dim, nlist, niter=10, spherical=True, seed=self.seed, verbose=False)
        logger.info("IVF: k-means with %d cells on %d rows", nlist, len(train))
        kmeans.train(train)
        centroids = kmeans.centroids.astype(np.float32)
        assign = faiss.IndexFlatIP(dim)
        assign.add(centroids)
        _, cell = assign.search(self.x, 1)
        cell = cell[:, 0].astype(np.int64)
        order = np.argsort(cell, kind="stable")
        bounds = np.searchsorted(cell[order], np.arange(nlist + 1))
        self._cells = [order[bounds[c] : bounds[c + 1]] for c in range(nlist)]
        self._cell_of = cell
        csims = centroids @ centroids.T
        self._probe_order = np.argsort(-csims, axis=1, kind="stable")
        self.info.params.update({"nlist": nlist, "train_rows": len(train)})
        if nprobe is not None:
            self.nprobe = int(min(nprobe, nlist))
            recall = self.measure_recall(recall_k, None, recall_queries)
        else:
            self.nprobe = min(4, nlist)
            while True:
                recall = self.measure_recall(recall_k, None, recall_queries)
                logger.info("IVF nlist=%d nprobe=%d: recall@%d %.4f", nlist, self.nprobe, recall_k, recall)
                if recall >= target_recall or self.nprobe >= nlist:
                    break
                self.nprobe = min(nlist, self.nprobe * 2)
            if recall < target_recall:
                logger.warning("IVF recall@%d %.3f is below the target %.3f", recall_k, recall, target_recall)
        self.info.params.update({"nprobe": self.nprobe, "target_recall": target_recall})
        self.info.recall[f"tuning@{recall_k}"] = round(recall, 4)
        # Reported recall comes from other queries than the ones nprobe was tuned on.
        self.info.recall[f"global@{recall_k}"] = round(self.measure_recall(recall_k, None, recall_queries, salt=104_729), 4)

    def _join(self, queries: np.ndarray, k: int, members: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """k nearest other members of each query row, probing each cell's nprobe nearest cells."""
        n = self.x.shape[0]
        member = None
        if members is not None:
            member = np.zeros(n, dtype=bool)
            member[members] = True
        out_i = np.full((len(queries), k), -1, dtype=np.int64)
        out_d = np.full((len(queries), k), np.inf, dtype=np.float32)
        qcell = self._cell_of[queries]
        order = np.argsort(qcell, kind="stable")
        bounds = np.searchsorted(qcell[order], np.arange(len(self._cells) + 1))
        cells = np.flatnonzero(np.diff(bounds))

        def run(part: np.ndarray) -> None:
            for c in part:
                qpos = order[bounds[c] : bounds[c + 1]]
                q = queries[qpos]
                cand = np.concatenate([self._cells[p] for p in self._probe_order[c, : self.nprobe]])
                if member is not None:
                    cand = cand[member[cand]]
                sims = self.x[q] @ self.x[cand].T
                sims[cand[None, :] == q[:, None]] = -np.inf
                pos, val = _top_k(sims, k)
                ok = np.isfinite(val)
                out_i[qpos, : pos.shape[1]] = np.where(ok, cand[pos], -1)
                out_d[qpos, : pos.shape[1]] = np.where(ok, 1.0 - val, np.inf)

        # Thousands of small products: a multi-threaded BLAS spends more on waking its threads than
        # on the work (20x slower when another process holds a core), so BLAS gets one thread and
        # the cells are spread over `threads` Python threads instead (matmul releases the GIL).
        # Each thread writes only its own cells' rows.
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            if self.threads <= 1 or len(cells) < 2 * self.threads:
                run(cells)
            else:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(self.threads) as pool:
                    list(pool.map(run, np.array_split(cells, self.threads * 4)))
        short = np.flatnonzero(out_i[:, -1] < 0)
        if len(short):
            # Tiny cells near sparse regions: an exact search keeps every row at k neighbours.
            self.info.fallback_rows += len(short)
            out_i[short], out_d[short] = brute_force(self.x, queries[short], k, members)
        return out_i, out_d
