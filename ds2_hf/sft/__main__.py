"""`python -m ds2_hf.sft`: train from a recipe YAML plus flags (flags win), under any launcher.

    python -m ds2_hf.sft --config examples/recipes/smollm2_135m_cpu.yaml --dataset subset.parquet
    accelerate launch --config_file examples/accelerate/multi_gpu.yaml -m ds2_hf.sft \\
        --config examples/recipes/llama31_8b_ds2.yaml --dataset ./ds2_subset --output_dir ./llama31-ds2

Arguments are parsed by `trl.TrlParser` over `SFTRecipe`, so every recipe field is a flag.
"""

from __future__ import annotations

import json
import logging
import sys

from ds2_hf.sft.recipe import SFTRecipe


def parse_recipe(argv: list[str] | None = None) -> SFTRecipe:
    """The recipe given by ``--config FILE`` and flags (``argv`` defaults to ``sys.argv[1:]``)."""
    from trl import TrlParser

    (recipe,) = TrlParser((SFTRecipe,)).parse_args_and_config(argv)
    return recipe


def summary(result) -> str:
    """One JSON line with what a run produced (printed by the CLI entry points)."""
    keys = ("train_loss", "global_steps", "train_wall_s", "tokens_per_s")
    return json.dumps(
        {
            "output_dir": result.output_dir,
            "merged_dir": result.merged_dir,
            "hub_url": result.hub_url,
            "processes": result.num_processes,
            "effective_batch_size": result.effective_batch_size,
            **{k: result.metrics.get(k) for k in keys},
            "losses": [round(x, 4) for x in result.losses],
        }
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ds2_hf.sft.card import HubPushError

    try:
        recipe = parse_recipe(argv)
        from ds2_hf.sft.training import train

        result = train(recipe)
    except (ValueError, FileNotFoundError, HubPushError) as err:
        print(f"ds2_hf.sft: error: {err}", file=sys.stderr)
        return 2
    if result.process_index == 0:
        print(summary(result))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
