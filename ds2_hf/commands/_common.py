"""Pieces shared by the `ds2` sub-commands: input/output arguments and building a config dataclass."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def add_io_arguments(parser: argparse.ArgumentParser, output_help: str) -> None:
    parser.add_argument(
        "input",
        nargs="?",
        help="dataset to read: a .parquet/.jsonl/.json/.csv file, a save_to_disk folder, or a hub id",
    )
    parser.add_argument("--split", default=None, help="split to read from a hub id or a DatasetDict folder (default: train)")
    parser.add_argument("--output", "-o", required=True, help=output_help)


def config_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """Build a `*Config` dataclass from the parsed flags that carry its field names."""
    values: dict[str, Any] = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    return cls(**values)


def require_input(args: argparse.Namespace) -> str:
    if not args.input:
        raise ValueError("Give the input dataset (a path or hub id) as the first argument or `input:` in --config")
    return args.input
