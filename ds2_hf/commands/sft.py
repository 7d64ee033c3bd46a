"""`ds2 sft`: fine-tune a base model on a selected subset (TRL SFTTrainer + LoRA).

    ds2 sft --config examples/recipes/llama31_8b_ds2.yaml --dataset me/ds2-subset --output_dir ./run
    ds2 sft --config examples/recipes/smollm2_135m_cpu.yaml --dataset subset.parquet --max_steps 5

Same flags and YAML as `python -m ds2_hf.sft` (which is what to give `accelerate launch` for several GPUs).
"""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    from ds2_hf.sft.recipe import add_recipe_arguments

    add_recipe_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import sys

    from ds2_hf.sft.__main__ import summary
    from ds2_hf.sft.card import HubPushError
    from ds2_hf.sft.recipe import namespace_to_recipe
    from ds2_hf.sft.training import train

    recipe = namespace_to_recipe(args)
    try:
        result = train(recipe)
    except HubPushError as err:  # a failed hub push: the model is saved, the message says how to retry
        print(f"ds2 sft: error: {err}", file=sys.stderr)
        return 1
    if result.process_index == 0:
        print(summary(result))
    return 0
