"""Model card and hub upload for a fine-tuned model.

The card names what a reader needs to reproduce or judge the model: the base model, the training
data, how that data was selected, and the full recipe.

    >>> from ds2_hf.sft.card import model_card
    >>> card = model_card(recipe, stats=stats, metrics={"train_loss": 1.23}, merged=True)
    >>> card.save("out/merged/README.md")
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from ds2_hf.sft.recipe import SFTRecipe

logger = logging.getLogger(__name__)

class HubPushError(RuntimeError):
    """Uploading a saved model failed; the model is still on disk (the message says where)."""


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _hub_id(name: str | None) -> str | None:
    # Only hub ids belong in the card's metadata; local paths stay in the prose.
    if name and _HUB_ID.match(name) and not Path(name).exists():
        return name
    return None


def model_card(
    recipe: SFTRecipe,
    *,
    stats: Any = None,
    metrics: dict[str, Any] | None = None,
    merged: bool = False,
) -> Any:
    """A `huggingface_hub.ModelCard` for a model trained with ``recipe``."""
    from huggingface_hub import ModelCard, ModelCardData

    dataset = recipe.dataset_name or recipe.dataset or "(passed in memory; not recorded)"
    selection = recipe.selection_method or "not recorded"
    tags = ["ds2", "data-selection", "sft", "trl"]
    if recipe.use_lora:
        tags.append("lora" if not recipe.load_in_4bit else "qlora")
    if recipe.selection_method:
        tags.append(f"selection-{recipe.selection_method}")
    data = ModelCardData(
        base_model=_hub_id(recipe.model_name_or_path),
        datasets=[d for d in [_hub_id(recipe.dataset_name or recipe.dataset)] if d] or None,
        library_name="peft" if recipe.use_lora and not merged else "transformers",
        pipeline_tag="text-generation",
        tags=tags,
    )
    kind = (
        "the base model with the LoRA adapter merged in"
        if recipe.use_lora and merged
        else ("a LoRA adapter for the base model" if recipe.use_lora else "a fully fine-tuned model")
    )
    lines = [
        f"# {Path(recipe.hub_model_id or recipe.output_dir).name}",
        "",
        f"Instruction-tuned from **{recipe.model_name_or_path}** on **{dataset}**, a subset chosen by "
        f"**{selection}** data selection ([DS2](https://arxiv.org/abs/2410.10877)); trained with TRL's "
        f"`SFTTrainer` via `ds2_hf.sft`. This repository holds {kind}.",
        "",
        "| | |",
        "|---|---|",
        f"| base model | `{recipe.model_name_or_path}`" + (f" (`{recipe.gguf_file}`)" if recipe.gguf_file else "") + " |",
        f"| training data | `{dataset}` |",
        f"| selection method | {selection} |",
        f"| chat format | {recipe.chat_format}; loss on {'assistant tokens only' if recipe.assistant_only_loss else 'all tokens'} |",
    ]
    if recipe.use_lora:
        lines.append(
            f"| LoRA | r={recipe.lora_r}, alpha={recipe.lora_alpha}, dropout={recipe.lora_dropout} on "
            f"{', '.join(recipe.lora_target_modules)}" + ("; 4-bit NF4 base (QLoRA)" if recipe.load_in_4bit else "") + " |"
        )
    lines.append(
        f"| optimisation | lr {recipe.learning_rate}, {recipe.lr_scheduler_type} schedule, warmup {recipe.warmup_ratio}, "
        f"weight decay {recipe.weight_decay}, {recipe.num_train_epochs} epochs, effective batch "
        f"{recipe.effective_batch_size}, max length {recipe.max_length} |"
    )
    if stats is not None:
        lines.append(
            f"| examples | {stats.num_used} used of {stats.num_input} ({stats.num_overlong} truncated to max length, "
            f"{stats.num_without_assistant} without an assistant turn dropped); {stats.num_tokens} tokens per epoch |"
        )
    for key, value in (metrics or {}).items():
        lines.append(f"| {key} | {value} |")
    if recipe.chat_format == "tulu":
        lines += [
            "",
            "## Prompt format",
            "",
            "The tokenizer's chat template is the TULU format; `tokenizer.apply_chat_template(messages, "
            "add_generation_prompt=True)` produces:",
            "",
            "```",
            "<|user|>",
            "Your instruction",
            "<|assistant|>",
            "```",
        ]
    lines += ["", "## Recipe", "", "```yaml", recipe.to_yaml().rstrip(), "```", ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))


def push_folder(folder: str | os.PathLike, repo_id: str, *, private: bool = False, ignore: list[str] | None = None) -> str:
    """Upload a saved model folder to the hub; returns the repo URL.

    The folder is already on disk when this runs, so a failed upload loses nothing: the error says
    how to retry by hand.
    """
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="model",
            commit_message="Upload model fine-tuned with ds2_hf.sft",
            ignore_patterns=ignore,
        )
    except Exception as err:  # network/auth errors come in many types; keep the cause attached
        raise HubPushError(
            f"Pushing {folder} to the hub repo {repo_id!r} failed: {err}. The model is saved in {folder}; "
            f"retry with `hf upload {repo_id} {folder}` once you are logged in (`hf auth login`) and online."
        ) from err
    logger.info("Pushed %s to %s", folder, url)
    return str(url)
