"""``ds2 eval``: evaluate a model on MMLU, GSM8K, BBH, TydiQA and TruthfulQA (the DS2 paper's protocol).

    ds2 eval --model ./llama31-ds2 --tasks mmlu,gsm8k,bbh,tydiqa,truthfulqa --output results.json
    ds2 eval --config eval.yaml --batch-size 16          # YAML keys = the option names; flags win
    ds2 eval --model ./m --backend server --server-url http://127.0.0.1:8000 --tasks gsm8k,bbh
    ds2 eval --model ./m --bbh-path bigbench --truthfulqa-path bigbench --tasks bbh,truthfulqa   # offline

Every option is a field of ``ds2_hf.evaluation.EvalConfig``; the run's settings are recorded in the
JSON result and per-example outputs in ``<output>.predictions.jsonl``. Missing data (offline, no
local copy) exits with code 2 and a message naming the file to provide.
"""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    from ds2_hf.evaluation.harness import EvalConfig

    parser.add_argument("--subtasks", action="store_true", help="also print per-subtask scores in the table")
    parser._add_dataclass_arguments(EvalConfig)


def run(args: argparse.Namespace) -> int:
    from ds2_hf.commands._common import config_from_args
    from ds2_hf.evaluation.harness import EvalConfig, main

    main(config_from_args(EvalConfig, args), subtasks=args.subtasks)
    return 0
