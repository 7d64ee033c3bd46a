"""`ds2 select`: write a budgeted subset chosen by DS2 or a baseline strategy.

    ds2 select curated.parquet --output subset.parquet --budget 10000 --strategy ds2
    ds2 select curated.parquet --output subset.jsonl --strategy alpagasus --threshold 4 --seed 1
    ds2 select curated.parquet --output subset --budget_tokens 5000000 --tokenizer meta-llama/Llama-3.1-8B
    ds2 select curated.parquet --output subset.parquet --by source --quotas '{"flan": 0.5, "dolly": 0.5}'

Strategies: ds2 (curated score, then long-tail score), raw, random, alpagasus, deita, longtail,
length, full. Rows with a null score are never selected (except by full).
"""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    from ds2_hf.commands._common import add_io_arguments
    from ds2_hf.selection import SelectionConfig

    add_io_arguments(parser, "where to write the subset (.parquet, .jsonl, or a folder for save_to_disk)")
    parser._add_dataclass_arguments(SelectionConfig)


def run(args: argparse.Namespace) -> int:
    import json

    from ds2_hf import io
    from ds2_hf.commands._common import config_from_args, require_input
    from ds2_hf.selection import SelectionConfig, select_indices

    config = config_from_args(SelectionConfig, args)
    ds = io.load(require_input(args), split=args.split)
    selection = select_indices(ds, config)
    out = io.save(ds.select(selection.indices), args.output)
    summary = selection.to_dict()
    summary.pop("indices")
    summary.pop("config")
    print(json.dumps(summary, indent=2))
    print(f"wrote {out} ({len(selection.indices)} of {len(ds)} rows, strategy {selection.strategy})")
    return 0
