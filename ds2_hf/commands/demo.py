"""`ds2 demo`: the whole pipeline on built-in offline data and models (being built; see issue 4)."""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default="ds2-demo", help="output folder")


def run(args: argparse.Namespace) -> int:
    raise ValueError("`ds2 demo` is not available yet: the `ds2 run` pipeline it drives is still being built.")
