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
    "rate": ("ds2_hf.commands.rate", "rate every sample with an LLM (score 0..5, sub-scores, failure reasons)"),
    "embed": ("ds2_hf.commands.embed", "add a fixed-size float32 embedding column (mean-pooled, L2-normalised)"),
    "curate": ("ds2_hf.commands.curate", "add curated_score / longtail_score columns to a scored, embedded dataset"),
    "select": ("ds2_hf.commands.select", "pick a budgeted subset (ds2 or a baseline strategy)"),
    "sft": ("ds2_hf.commands.sft", "fine-tune a base model on a selected subset (TRL SFTTrainer + LoRA)"),
    "eval": ("ds2_hf.commands.eval", "evaluate a model on MMLU, GSM8K, BBH, TydiQA, TruthfulQA (paper protocol)"),
    "run": ("ds2_hf.commands.run", "the whole pipeline from one YAML: rate -> embed -> curate -> select -> report [-> push]"),
    "report": ("ds2_hf.commands.report", "render report.html and figures from a finished run"),
    "push": ("ds2_hf.commands.push", "upload the scored pool and the selected subset to the Hub with a DS2 dataset card"),
    "demo": ("ds2_hf.commands.demo", "run the pipeline on built-in offline data and models"),
}


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the examples' line breaks and show every option's default."""


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and each sub-command's parser (an `HfArgumentParser`, so a command can
    turn a `*Config` dataclass into flags with `parser._add_dataclass_arguments(Config)`)."""
    from transformers import HfArgumentParser

    parser = argparse.ArgumentParser(
        prog="ds2",
        description="DS2 data selection: rate -> embed -> curate -> select -> train -> evaluate.",
        epilog="Run `ds2 <command> --help` for the options of one stage.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", metavar="<command>", parser_class=HfArgumentParser)
    subparsers: dict[str, argparse.ArgumentParser] = {}
    for name, (module, help_text) in COMMANDS.items():
        # argparse needs every sub-parser up front; registering imports only light modules.
        mod = importlib.import_module(module)
        # The module docstring (usage examples first) is the command's --help text.
        sp = sub.add_parser(name, help=help_text, description=mod.__doc__ or help_text, formatter_class=_HelpFormatter)
        mod.register(sp)
        if "--config" not in sp._option_string_actions:
            sp.add_argument(
                "--config",
                dest="_yaml_config",
                metavar="YAML",
                help="a YAML file of this command's options (keys = option names); flags given on the "
                "command line override it",
            )
        subparsers[name] = sp
    return parser, subparsers


def _apply_yaml(sp: argparse.ArgumentParser, path: str) -> None:
    import yaml

    with open(path, encoding="utf-8") as fh:
        values = yaml.safe_load(fh) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of option names to values")
    dests = {a.dest for a in sp._actions}
    values = {k.replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(values) - dests)
    if unknown:
        raise ValueError(f"{path}: unknown option(s) {unknown}; see --help for the valid ones")
    for action in sp._actions:
        if action.dest in values:
            action.required = False  # YAML can supply required options and positionals
    sp.set_defaults(**values)


def _prescan(argv: list[str]) -> tuple[str | None, str | None]:
    command = next((tok for tok in argv if tok in COMMANDS), None)
    for i, tok in enumerate(argv):
        if tok == "--config" and i + 1 < len(argv):
            return command, argv[i + 1]
        if tok.startswith("--config="):
            return command, tok.split("=", 1)[1]
    return command, None


def main(argv: list[str] | None = None) -> int:
    parser, subparsers = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    command, yaml_path = _prescan(argv)
    if yaml_path and command in subparsers and any(a.dest == "_yaml_config" for a in subparsers[command]._actions):
        # YAML values become the sub-parser's defaults before parsing, so flags override them and
        # YAML can supply required arguments.
        try:
            _apply_yaml(subparsers[command], yaml_path)
        except (OSError, ValueError) as err:
            print(f"ds2 {command}: error: {err}", file=sys.stderr)
            return 2
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # it logs every failed SIMD probe
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
