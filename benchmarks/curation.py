"""Curation speed, memory and k-NN recall, with a baseline measured in the same run.

    python benchmarks/curation.py --n 300932 --dim 1024            # the paper's pool size
    python benchmarks/curation.py --n 10000 --dim 1024 --baseline  # + the authors' brute-force cost
    python benchmarks/curation.py --npy embeddings.npy --scores scores.npy

Prints wall time per stage, peak RSS beyond the embedding matrix, and recall@10 of the k-NN
against exact search on sample queries that were not used to tune it.

The baseline (`--baseline`) reproduces the *work* of the authors' released pipeline, written from
DS2_SPEC.md: the pool is loaded twice (2N rows), every one of the 50 HOC rounds and 51 detection
epochs runs an exact brute-force k-NN over its subsample (min(50,000, 2N) rows of the doubled pool),
and the long-tail score runs one more over the whole doubled pool. Brute force uses the same BLAS as
ds2_hf. `--baseline-rounds R` times R of those 101 subsample searches and extrapolates linearly (the
rounds are identical in cost), saying so in the output.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _make_inputs(n: int, dim: int, seed: int, folder: Path) -> tuple[Path, Path, Path]:
    """Generate synthetic data in a child process so its temporaries do not count in our peak RSS."""
    emb, scores, true = folder / "emb.npy", folder / "scores.npy", folder / "true.npy"
    code = (
        "import numpy as np, sys\n"
        "from ds2_hf.curation.synthetic import make_clusterable\n"
        f"d = make_clusterable({n}, dim={dim}, seed={seed})\n"
        f"np.save({str(emb)!r}, d.embeddings); np.save({str(scores)!r}, d.rated_scores); np.save({str(true)!r}, d.true_scores)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    return emb, scores, true


def _brute_force_topk(x: np.ndarray, k: int, block: int = 2048) -> np.ndarray:
    out = np.empty((len(x), k), dtype=np.int64)
    for start in range(0, len(x), block):
        sims = x[start : start + block] @ x.T
        out[start : start + block] = np.argpartition(-sims, k, axis=1)[:, : k]
    return out


def authors_cost(x: np.ndarray, rounds: int, sample_size: int = 50_000, seed: int = 0) -> tuple[float, float, int]:
    """Seconds for the authors' k-NN work on a doubled pool: (measured, extrapolated total, rounds timed)."""
    doubled = np.concatenate([x, x])
    rng = np.random.default_rng(seed)
    size = min(sample_size, len(doubled))
    t = time.perf_counter()
    _brute_force_topk(doubled, 11)  # long-tail over the doubled pool
    once = time.perf_counter() - t
    t = time.perf_counter()
    for r in range(rounds):
        members = rng.choice(len(doubled), size=size, replace=False)
        _brute_force_topk(doubled[members], 3 if r < 50 else 11)
    per_round = (time.perf_counter() - t) / max(rounds, 1)
    return once + per_round * rounds, once + per_round * 101, rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300_932)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--npy", help="embeddings (.npy, n x d) instead of synthetic data")
    parser.add_argument("--scores", help="scores (.npy, n) to go with --npy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="FAISS/BLAS threads")
    parser.add_argument("--baseline", action="store_true", help="also time the authors' brute-force k-NN work")
    parser.add_argument("--baseline-rounds", type=int, default=101, help="subsample searches to time (<=101; rest extrapolated)")
    args = parser.parse_args()

    import logging

    import faiss

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)

    from ds2_hf.curation.api import curate_arrays

    faiss.omp_set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        true = None
        if args.npy:
            emb_path = Path(args.npy)
            scores = np.load(args.scores) if args.scores else np.random.default_rng(args.seed).integers(0, 6, np.load(emb_path, mmap_mode="r").shape[0])
        else:
            t = time.perf_counter()
            emb_path, scores_path, true_path = _make_inputs(args.n, args.dim, args.seed, Path(tmp))
            print(f"generated {args.n} x {args.dim} clusterable synthetic embeddings in {time.perf_counter() - t:.1f}s")
            scores, true = np.load(scores_path), np.load(true_path)
        t = time.perf_counter()
        emb = np.load(emb_path)
        load_s = time.perf_counter() - t
    base_rss = _rss_mb()
    matrix_mb = emb.nbytes / 2**20
    print(f"loaded {emb.shape[0]} x {emb.shape[1]} float32 ({matrix_mb:.0f} MiB) in {load_s:.1f}s; RSS {base_rss:.0f} MiB")

    t = time.perf_counter()
    result = curate_arrays(emb, scores, seed=args.seed)
    total = time.perf_counter() - t
    peak = _peak_mb()
    rep = result.report
    print("\n== ds2_hf curation ==")
    for stage, seconds in rep.timings.items():
        print(f"  {stage:<14} {seconds:9.2f} s")
    print(f"  end-to-end     {total:9.2f} s")
    print(f"  peak RSS {peak:.0f} MiB = matrix {matrix_mb:.0f} MiB + {peak - matrix_mb:.0f} MiB "
          f"(RSS after loading: {base_rss:.0f} MiB; beyond it: {peak - base_rss:.0f} MiB)")
    print(f"  k-NN: {rep.knn['method']}, params { {k: v for k, v in rep.knn.items() if k not in ('recall', 'method')} }")
    print(f"  recall (independent sample queries vs exact search): {rep.knn['recall']}")
    print(f"  HOC: {rep.hoc}")
    print(f"  detection: {rep.detection}")
    print(f"  flagged {rep.n_flagged}, changed {rep.n_changed} of {rep.n_scored}")
    if true is not None:
        raw_acc = float((scores == true).mean())
        cur_acc = float((result.curated_score == true).mean())
        print(f"  score accuracy vs the synthetic truth: raw {raw_acc:.3f} -> curated {cur_acc:.3f}")

    if args.baseline:
        rounds = max(1, min(101, args.baseline_rounds))
        print(f"\n== authors' k-NN work (doubled pool, brute force), {rounds} of 101 subsample searches timed ==")
        measured, extrapolated, _ = authors_cost(emb, rounds, seed=args.seed)
        note = "measured" if rounds == 101 else f"extrapolated from {rounds} timed rounds"
        print(f"  baseline {extrapolated:9.2f} s ({note}; timed part {measured:.1f} s)")
        print(f"  speed-up of ds2_hf: {extrapolated / total:.1f}x")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
