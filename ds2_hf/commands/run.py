"""`ds2 run`: the whole pipeline from one YAML file: rate -> embed -> curate -> select -> report [-> push].

    ds2 run --config ds2.yaml
    ds2 run --config ds2.yaml --output_dir out-tau04 --set curation.tau=0.4 --set selection.budget=5000
    ds2 run --dataset data.jsonl --set llama_server.gguf=model.gguf --set embedding.model=./minilm

A finished stage whose inputs and parameters did not change is skipped on the next run; a killed
run picks up where it stopped. See examples/ds2.yaml for every section.
"""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, metavar="YAML", help="pipeline YAML (see examples/ds2.yaml)")
    parser.add_argument("--dataset", default=None, help="input data (overrides `dataset:`)")
    parser.add_argument("--output_dir", default=None, help="output folder (overrides `output_dir:`)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N rows (overrides `limit:`)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override any option, e.g. --set curation.tau=0.4 (repeatable; values are YAML)")


def config_from_args(args: argparse.Namespace):
    """The `PipelineConfig` of a `ds2 run`/`ds2 demo` command line: YAML, then flags, then --set."""
    from pathlib import Path

    import yaml

    from ds2_hf.pipeline import PipelineConfig, apply_overrides

    data: dict = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise FileNotFoundError(f"No pipeline config at {path}; see examples/ds2.yaml for one.")
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a mapping of pipeline options.")
    for name in ("dataset", "output_dir", "limit"):
        if getattr(args, name, None) is not None:
            data[name] = getattr(args, name)
    return PipelineConfig.from_dict(apply_overrides(data, args.overrides))


def run(args: argparse.Namespace) -> int:
    from ds2_hf.pipeline import run_pipeline

    run_pipeline(config_from_args(args))
    return 0
