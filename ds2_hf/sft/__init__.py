"""Fine-tuning recipes for DS2-selected data: TRL `SFTTrainer` + PEFT LoRA, launched with Accelerate.

    >>> from ds2_hf.sft import SFTRecipe, train
    >>> recipe = SFTRecipe.from_yaml("examples/recipes/llama31_8b_ds2.yaml", output_dir="./llama31-ds2")
    >>> result = train(recipe, "./ds2_subset")
    >>> result.merged_dir
    './llama31-ds2/merged'

From the shell (one YAML + flags configure the same run):

    accelerate launch --config_file examples/accelerate/multi_gpu.yaml -m ds2_hf.sft \\
        --config examples/recipes/llama31_8b_ds2.yaml --dataset ./ds2_subset --output_dir ./llama31-ds2
    ds2 sft --config examples/recipes/llama31_8b_ds2.yaml --dataset me/ds2-subset

Names are imported lazily: importing this package does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ds2_hf._lazy import lazy_exports

_LAZY = {
    "SFTRecipe": "ds2_hf.sft.recipe",
    "load_recipe": "ds2_hf.sft.recipe",
    "resolve_gradient_accumulation": "ds2_hf.sft.recipe",
    "train": "ds2_hf.sft.training",
    "build_trainer": "ds2_hf.sft.training",
    "SFTResult": "ds2_hf.sft.training",
    "merge_adapter": "ds2_hf.sft.merge",
    "tulu_chat_template": "ds2_hf.sft.chat",
    "load_sft_dataset": "ds2_hf.sft.data",
    "model_card": "ds2_hf.sft.card",
}

if TYPE_CHECKING:  # pragma: no cover
    from ds2_hf.sft.card import model_card
    from ds2_hf.sft.chat import tulu_chat_template
    from ds2_hf.sft.data import load_sft_dataset
    from ds2_hf.sft.merge import merge_adapter
    from ds2_hf.sft.recipe import SFTRecipe, load_recipe, resolve_gradient_accumulation
    from ds2_hf.sft.training import SFTResult, build_trainer, train


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


__all__ = sorted(_LAZY)
