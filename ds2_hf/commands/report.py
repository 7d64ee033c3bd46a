"""`ds2 report OUT_DIR`: (re-)render report.html and its figures from a finished run's files.

    ds2 report out                                    # reads out/curated, out/curation_report.json, out/selected, out/run.json
    ds2 report out --curated c.parquet --curation_report c.report.json --selected s.parquet

Writes ``OUT_DIR/report/report.html`` (or ``--output``) and prints its path.
"""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    from ds2_hf.report import ReportConfig

    parser.add_argument("run_dir", nargs="?", help="output folder of `ds2 run` (its files are the defaults below)")
    parser.add_argument("--curated", default=None, help="curated dataset (default: RUN_DIR/curated)")
    parser.add_argument("--curation_report", default=None, help="CurationReport JSON (default: RUN_DIR/curation_report.json)")
    parser.add_argument("--selected", default=None, help="selected subset (default: RUN_DIR/selected, if present)")
    parser.add_argument("--timings", default=None, help="JSON file with a 'timings' mapping of stage -> seconds (default: RUN_DIR/run.json)")
    parser.add_argument("--output", "-o", default=None, help="report folder (default: RUN_DIR/report)")
    parser._add_dataclass_arguments(ReportConfig)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ds2_hf import io
    from ds2_hf.commands._common import config_from_args
    from ds2_hf.curation.report import CurationReport
    from ds2_hf.pipeline import RunLayout
    from ds2_hf.report import ReportConfig, write_report

    layout = RunLayout(Path(args.run_dir)) if args.run_dir else None
    curated_path = args.curated or (str(layout.curated) if layout else None)
    report_path = args.curation_report or (str(layout.curation_report) if layout else None)
    if not curated_path or not report_path:
        raise ValueError("Give RUN_DIR (a `ds2 run` output folder), or both --curated and --curation_report.")
    if not Path(report_path).is_file():
        raise FileNotFoundError(f"No curation report at {report_path}; run `ds2 curate ... --report FILE` or `ds2 run` first.")
    selected_path = args.selected or (str(layout.selected) if layout and layout.selected.exists() else None)
    timings_path = args.timings or (str(layout.run_info) if layout and layout.run_info.is_file() else None)
    out_dir = args.output or (str(layout.report_dir) if layout else None)
    if not out_dir:
        raise ValueError("Give --output (the report folder) when there is no RUN_DIR.")

    run_facts = json.loads(Path(timings_path).read_text()) if timings_path else {}
    path = write_report(
        io.load(curated_path),
        CurationReport.from_json(report_path),
        io.load(selected_path) if selected_path else None,
        out_dir=out_dir,
        timings=run_facts.get("timings"),
        run_info=run_facts.get("card"),
        config=config_from_args(ReportConfig, args),
    )
    print(f"report: {path}")
    return 0
