"""The `ds2` command line: one sub-command per pipeline stage.

    ds2 curate scored.parquet --output curated.parquet --report report.json
    ds2 select curated.parquet --output subset.parquet --budget 10000 --strategy ds2
    ds2 <command> --help

Each sub-command lives in its own module under `ds2_hf.commands` and exposes
`register(subparsers)` (adds its parser) and `run(args) -> int`. The CLI only wires library calls
together; the modules are imported lazily so `ds2 --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> (module, one-line help). Add a stage by adding a line here and a module in ds2_hf/commands.
COMMANDS: dict[str, tuple[str, str]] = {
    "curate": ("ds2_hf.commands.curate", "add curated_score / longtail_score columns to a scored, embedded dataset"),
    "select": ("ds2_hf.commands.select", "pick a budgeted subset (ds2 or a baseline strategy)"),
    "demo": ("ds2_hf.commands.demo", "run the pipeline on built-in offline data and models"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ds2",
        description="DS2 data selection: rate -> embed -> curate -> select -> train -> evaluate.",
        epilog="Run `ds2 <command> --help` for the options of one stage.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, (module, help_text) in COMMANDS.items():
        # argparse needs every sub-parser up front; registering imports only light modules.
        importlib.import_module(module).register(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        # Input errors are the user's to fix: say what went wrong without a traceback.
        print(f"ds2 {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
