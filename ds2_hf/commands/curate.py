"""`ds2 curate`: add curated_score, curation_confidence, score_flagged and longtail_score.

    ds2 curate scored.parquet --output curated.parquet --report curation.json
    ds2 curate org/scored-pool --split train --output ./curated --tau 0.4 --seed 1
    ds2 curate --config curate.yaml          # YAML keys = the option names below

The input needs a score column (0..5, null for failed ratings) and an embedding column.
"""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    from ds2_hf.commands._common import add_io_arguments
    from ds2_hf.curation.api import CurationConfig

    add_io_arguments(parser, "where to write the curated dataset (.parquet, .jsonl, or a folder for save_to_disk)")
    parser.add_argument("--report", default=None, help="write the curation report (JSON) here; default: OUTPUT + .report.json")
    parser._add_dataclass_arguments(CurationConfig)


def run(args: argparse.Namespace) -> int:
    from ds2_hf import io
    from ds2_hf.commands._common import config_from_args, require_input
    from ds2_hf.curation.api import CurationConfig, curate

    config = config_from_args(CurationConfig, args)
    ds = io.load(require_input(args), split=args.split)
    curated, report = curate(ds, config)
    out = io.save(curated, args.output)
    report_path = args.report or f"{str(out).rstrip('/')}.report.json"
    report.to_json(report_path)
    print(report.summary())
    print(f"wrote {out} ({len(curated)} rows) and {report_path}")
    return 0
