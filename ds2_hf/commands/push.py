"""`ds2 push`: upload a scored pool and its selected subset to the Hub, with a DS2 dataset card.

    ds2 push curated.parquet --selected subset.parquet --curation_report curated.parquet.report.json \\
        --report_dir out/report --repo_id me/tulu-ds2 --private true
    ds2 push --run_dir out --repo_id me/tulu-ds2         # the files of a finished `ds2 run`

The token comes from ``huggingface-cli login`` / ``HF_TOKEN`` (there is deliberately no --token flag:
it would show in shell history and process lists).
"""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    from ds2_hf.hub import PushConfig

    parser.add_argument("input", nargs="?", help="the scored (curated) dataset: a file, a save_to_disk folder or a hub id")
    parser.add_argument("--input_split", default=None, help="split to read from the inputs (default: the only one, or train)")
    parser.add_argument("--selected", default=None, help="the selected subset to upload as a second config")
    parser.add_argument("--curation_report", default=None, help="CurationReport JSON (k, tau, seed, T and counts for the card)")
    parser.add_argument("--report_dir", default=None, help="folder with report.html and figures/ to upload and show in the card")
    parser.add_argument("--run_info", default=None, help="JSON file of run facts (rater, prompt_version, embedder, budget, ...)")
    parser.add_argument("--run_dir", default=None, help="a `ds2 run` output folder: fills every input above from it")
    parser._add_dataclass_arguments(PushConfig)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ds2_hf import io
    from ds2_hf.commands._common import config_from_args
    from ds2_hf.curation.report import CurationReport
    from ds2_hf.hub import PushConfig, push_to_hub

    scored_path, selected_path = args.input, args.selected
    report_path, report_dir, run_info_path = args.curation_report, args.report_dir, args.run_info
    if args.run_dir:
        from ds2_hf.pipeline import RunLayout

        layout = RunLayout(Path(args.run_dir))
        if not layout.curated.exists():
            raise FileNotFoundError(f"{args.run_dir} has no {layout.curated.name}; is it a finished `ds2 run` output folder?")
        scored_path = scored_path or str(layout.curated)
        selected_path = selected_path or (str(layout.selected) if layout.selected.exists() else None)
        report_path = report_path or (str(layout.curation_report) if layout.curation_report.is_file() else None)
        report_dir = report_dir or (str(layout.report_dir) if (layout.report_dir / "report.html").is_file() else None)
        run_info_path = run_info_path or (str(layout.run_info) if layout.run_info.is_file() else None)
    if not scored_path:
        raise ValueError("Give the scored dataset as the first argument, or --run_dir of a finished run.")
    config = config_from_args(PushConfig, args)
    scored = io.load(scored_path, split=args.input_split)
    selected = io.load(selected_path, split=args.input_split) if selected_path else None
    report = CurationReport.from_json(report_path) if report_path else None
    run_info = None
    if run_info_path:
        data = json.loads(Path(run_info_path).read_text())
        run_info = data.get("card", data)  # a `ds2 run` run.json keeps the card facts under "card"
    info = push_to_hub(config, scored, selected, report=report, run_info=run_info, report_dir=report_dir)
    print(f"pushed {len(scored)} scored rows" + (f" and {len(selected)} selected" if selected is not None else "")
          + f" to {config.repo_id}: {getattr(info, 'commit_url', info)}")
    return 0
