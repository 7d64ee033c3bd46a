"""`ds2 rate`: add score, score_<field>, rating_error and rating_output columns with an LLM rater.

    ds2 rate pool.jsonl --output rated.parquet --model meta-llama/Llama-3.1-8B-Instruct --base_url http://tgi:8080
    ds2 rate pool.jsonl -o rated.parquet --model smollm2 --base_url http://127.0.0.1:8080/v1 http://127.0.0.1:8081/v1
    ds2 rate pool.jsonl -o rated.parquet --backend transformers --model HuggingFaceTB/SmolLM2-1.7B-Instruct
    ds2 rate --config rate.yaml              # YAML keys = the option names below

Kill it at any point and run the same command again: answers already received come from the
request cache (``--cache_path``), nothing paid for is requested twice.
"""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    from ds2_hf.commands._common import add_io_arguments
    from ds2_hf.rating.config import RatingConfig

    add_io_arguments(parser, "where to write the rated dataset (.parquet, .jsonl, or a folder for save_to_disk)")
    parser.add_argument("--map_batch_size", type=int, default=256, help="samples per datasets.map batch (rated concurrently)")
    parser.add_argument("--num_proc", type=int, default=None, help="datasets.map worker processes (each rates concurrently)")
    parser.add_argument("--stats", default=None, help="also write the run's counters (JSON) to this file")
    parser._add_dataclass_arguments(RatingConfig)


def run(args: argparse.Namespace) -> int:
    import json
    import logging

    from ds2_hf import io
    from ds2_hf.commands._common import config_from_args, require_input
    from ds2_hf.rating import RatingConfig, rate
    from ds2_hf.rating.summary import rating_counts

    # One INFO line per HTTP request would bury the progress bar.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = config_from_args(RatingConfig, args)
    ds = io.load(require_input(args), split=args.split)
    rater = rate(config=config)
    rated = ds.map(
        rater,
        batched=True,
        batch_size=args.map_batch_size,
        num_proc=args.num_proc,
        desc="rating",
        # The request cache is the resume mechanism; the map cache would hide a rerun's retries.
        load_from_cache_file=False,
    )
    out = io.save(rated, args.output)
    counts = rating_counts(rated)
    if rater.stats.samples:
        print(rater.summary())
    print(counts.summary())
    if args.stats:
        with open(args.stats, "w", encoding="utf-8") as fh:
            json.dump({"process": rater.stats.to_dict(), "output": counts.to_dict(), "config": config.to_dict()}, fh, indent=2)
    print(f"wrote {out} ({len(rated)} rows)")
    return 0
