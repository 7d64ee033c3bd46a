"""Curate LLM ratings and select a DS2 subset from Python.

    python examples/curate_and_select.py scored.parquet --budget 1000 --output subset.parquet
    python examples/curate_and_select.py --synthetic 20000          # no data? a clusterable toy pool

The input needs a `score` column (0..5, null for failed ratings) and an `embedding` column, as
written by `ds.map(ds2_hf.rate(...))` and `ds.map(ds2_hf.embed(...))`.
"""

import argparse

from datasets import Dataset

import ds2_hf
from ds2_hf import io
from ds2_hf.curation.synthetic import make_clusterable

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("input", nargs="?", help="a .parquet/.jsonl file, a save_to_disk folder or a hub id")
parser.add_argument("--synthetic", type=int, default=0, help="use N synthetic rows instead of input")
parser.add_argument("--budget", type=int, default=1000)
parser.add_argument("--output", default="ds2_subset.parquet")
args = parser.parse_args()

if args.synthetic:
    data = make_clusterable(args.synthetic, dim=64, seed=0)
    ds = Dataset.from_dict({"score": data.rated_scores.tolist(), "embedding": data.embeddings.tolist()})
else:
    ds = io.load(args.input)

curated, report = ds2_hf.curate(ds, tau=0.5, seed=0)
print(report.summary())
subset = ds2_hf.select(curated, budget=args.budget, strategy="ds2")
baseline = ds2_hf.select(curated, budget=args.budget, strategy="random", seed=0)
print(f"mean curated score: ds2 {sum(subset['curated_score']) / len(subset):.2f}, "
      f"random {sum(baseline['curated_score']) / len(baseline):.2f}")
print("wrote", io.save(subset, args.output))
