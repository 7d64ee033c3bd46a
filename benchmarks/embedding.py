"""Throughput of ``ds.map(ds2_hf.embed(...))`` against plain ``SentenceTransformer.encode``.

Both embed the same serialized texts with the same model (offline all-MiniLM-L6-v2 by default) on
one CPU thread, in this one run; the ratio (ours / baseline, in texts per second) is what matters.

    python benchmarks/embedding.py --n 2000
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Alpaca rows of varied length (10-120 words), built from real English vocabulary."""
    from ds2_hf.assets import minilm_path

    vocab = [w for w in (minilm_path() / "vocab.txt").read_text().split() if w.isalpha() and len(w) > 2][:20000]
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        instruction = " ".join(rng.choices(vocab, k=rng.randint(5, 40)))
        output = " ".join(rng.choices(vocab, k=rng.randint(5, 80)))
        rows.append({"instruction": instruction.capitalize() + "?", "input": "", "output": output + "."})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="number of texts")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per method (best is reported)")
    parser.add_argument("--model", default=None, help="encoder model (default: offline all-MiniLM-L6-v2)")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per forward pass, both methods")
    parser.add_argument("--map-batch-size", type=int, default=1000, help="rows per datasets.map batch")
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()

    import datasets
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from ds2_hf.assets import minilm_path
    from ds2_hf.curation.api import read_embeddings
    from ds2_hf.embedding import embed
    from ds2_hf.text import serialize

    torch.set_num_threads(1)
    datasets.disable_progress_bars()
    model = args.model or str(minilm_path())
    rows = make_rows(args.n)
    texts = [serialize(r) for r in rows]
    ds = datasets.Dataset.from_list(rows)

    st = SentenceTransformer(model, device="cpu")
    st.max_seq_length = args.max_length
    embedder = embed(model=model, max_length=args.max_length, batch_size=args.batch_size, device="cpu").load()
    warm = texts[:64]
    st.encode(warm, batch_size=args.batch_size)
    embedder.encode(warm)

    base_times, ours_times, unsorted_times = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        def run_baseline() -> np.ndarray:
            t0 = time.perf_counter()
            emb = st.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True)
            base_times.append(time.perf_counter() - t0)
            return np.asarray(emb)

        def run_ours(r: int) -> np.ndarray:
            t0 = time.perf_counter()
            # a fresh cache file per run: this measures embedding, not the datasets cache
            out = ds.map(embedder, batched=True, batch_size=args.map_batch_size,
                         features=embedder.features(ds.features), cache_file_name=f"{tmp}/ours-{r}.arrow")
            emb = read_embeddings(out, "embedding")
            ours_times.append(time.perf_counter() - t0)
            return emb

        for r in range(args.repeats):
            # alternate the order so a burst of load from other processes does not favour one method
            if r % 2 == 0:
                ref, ours = run_baseline(), run_ours(r)
            else:
                ours, ref = run_ours(r), run_baseline()
        # the same transform without sorting by length inside a batch, to show what sorting buys
        unsorted = embed(config=embedder.config, sort_by_length=False).load()
        t0 = time.perf_counter()
        ds.map(unsorted, batched=True, batch_size=args.map_batch_size, cache_file_name=f"{tmp}/unsorted.arrow")
        unsorted_times.append(time.perf_counter() - t0)
        run_ours(args.repeats)

    cos = (np.asarray(ref) * ours).sum(axis=1)
    base, best = min(base_times), min(ours_times[: args.repeats])
    print(f"texts: {args.n}  model: {model}  threads: {torch.get_num_threads()}  forward batch: {args.batch_size}  "
          f"map batch: {args.map_batch_size}")
    print(f"SentenceTransformer.encode        : {args.n / base:8.1f} texts/s (best of {args.repeats}: "
          f"{', '.join(f'{t:.1f}s' for t in base_times)})")
    print(f"ds.map(ds2_hf.embed(...))         : {args.n / best:8.1f} texts/s (best of {args.repeats}: "
          f"{', '.join(f'{t:.1f}s' for t in ours_times[: args.repeats])})")
    print(f"ds.map(..., sort_by_length=False) : {args.n / unsorted_times[0]:8.1f} texts/s ({unsorted_times[0]:.1f}s)")
    print(f"ratio ours/encode (throughput)    : {base / best:.3f}   (target >= 0.95)")
    print(f"sorting speed-up (sorted/unsorted): {unsorted_times[0] / ours_times[-1]:.2f}x (adjacent runs)")
    print(f"cosine(ours, encode): min {cos.min():.6f}  median {statistics.median(cos.tolist()):.6f}")


if __name__ == "__main__":
    main()
