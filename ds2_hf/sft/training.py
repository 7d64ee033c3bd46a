"""Fine-tune a base model on a selected subset with TRL's `SFTTrainer` and a PEFT LoRA adapter.

    >>> from ds2_hf.sft import SFTRecipe, train
    >>> recipe = SFTRecipe.from_yaml("examples/recipes/llama31_8b_ds2.yaml", output_dir="./llama31-ds2")
    >>> result = train(recipe, "./ds2_subset")        # a Dataset, a folder, a data file or a hub id
    >>> result.merged_dir, result.metrics["train_loss"]

The same code runs in one process or under `accelerate launch` (DDP, FSDP2, DeepSpeed ZeRO-3, CPU/gloo):
the gradient accumulation is derived so that per-device batch x accumulation x processes equals the
recipe's effective batch. Only the main process merges, writes the model card and pushes.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ds2_hf.sft.recipe import SFTRecipe

logger = logging.getLogger(__name__)

RESULTS_FILE = "ds2_sft_results.json"
RECIPE_FILE = "ds2_sft_recipe.yaml"


@dataclass
class SFTResult:
    """What a training run produced and measured (also written to ``<output_dir>/ds2_sft_results.json``)."""

    output_dir: str
    adapter_dir: str | None
    merged_dir: str | None
    hub_url: str | None
    metrics: dict[str, Any]
    loss_history: list[dict[str, float]]
    num_processes: int
    gradient_accumulation_steps: int
    effective_batch_size: int
    distributed_type: str
    process_index: int = 0
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def losses(self) -> list[float]:
        return [entry["loss"] for entry in self.loss_history]


def launched_num_processes() -> int:
    """Processes in this run, read from the launcher's environment (torchrun / accelerate / MPI)."""
    for var in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        if os.environ.get(var):
            return int(os.environ[var])
    return 1


def resolve_device(recipe: SFTRecipe) -> tuple[bool, str]:
    """(use_cpu, precision) for this machine: bf16 where a GPU supports it, fp32 on CPU."""
    import torch

    has_gpu = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
    use_cpu = (not has_gpu) if recipe.use_cpu is None else recipe.use_cpu
    precision = recipe.precision
    if precision == "auto":
        precision = "bf16" if (not use_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()) else "fp32"
    if precision in ("bf16", "fp16") and use_cpu:
        logger.warning("precision=%s on CPU is slow and not what the tests run; fp32 is the CPU default.", precision)
    return use_cpu, precision


def build_sft_config(recipe: SFTRecipe, num_processes: int | None = None) -> Any:
    """The `trl.SFTConfig` for ``recipe`` (paper defaults mapped onto TRL/transformers names)."""
    from trl import SFTConfig

    num_processes = num_processes or launched_num_processes()
    use_cpu, precision = resolve_device(recipe)
    accumulation = recipe.gradient_accumulation(num_processes)
    kwargs: dict[str, Any] = dict(
        output_dir=recipe.output_dir,
        num_train_epochs=recipe.num_train_epochs,
        max_steps=recipe.max_steps,
        per_device_train_batch_size=recipe.per_device_train_batch_size,
        gradient_accumulation_steps=accumulation,
        learning_rate=recipe.learning_rate,
        lr_scheduler_type=recipe.lr_scheduler_type,
        # transformers 5 reads a float in [0, 1) here as a fraction of the total steps.
        warmup_steps=recipe.warmup_ratio,
        weight_decay=recipe.weight_decay,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=use_cpu,
        seed=recipe.seed,
        data_seed=recipe.seed,
        logging_steps=recipe.logging_steps,
        save_strategy=recipe.save_strategy,
        save_total_limit=recipe.save_total_limit,
        report_to=recipe.report_to,
        max_length=recipe.max_length,
        assistant_only_loss=recipe.assistant_only_loss,
        packing=recipe.packing,
        dataset_num_proc=recipe.dataset_num_proc,
        # We push the final (merged) model ourselves, with our model card.
        push_to_hub=False,
    )
    # transformers renamed gradient_checkpointing to activation_checkpointing (5.x); TRL still sets the old name.
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in SFTConfig.__dataclass_fields__ else (
        "gradient_checkpointing"
    )
    kwargs[checkpointing] = recipe.gradient_checkpointing
    kwargs.update(recipe.trainer_kwargs or {})
    try:
        config = SFTConfig(**kwargs)
    except TypeError as err:
        raise ValueError(f"trainer_kwargs holds a key trl.SFTConfig does not know: {err}") from None
    if config.world_size != num_processes:
        raise ValueError(
            f"The launcher reports {num_processes} process(es) but training sees {config.world_size}; the effective "
            "batch would be wrong. Launch with `accelerate launch --num_processes N` or torchrun."
        )
    return config


def build_lora_config(recipe: SFTRecipe) -> Any:
    """The paper's PEFT `LoraConfig` (None for full fine-tuning)."""
    if not recipe.use_lora:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=recipe.lora_r,
        lora_alpha=recipe.lora_alpha,
        lora_dropout=recipe.lora_dropout,
        target_modules=list(recipe.lora_target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def build_quantization_config(recipe: SFTRecipe, compute_dtype: Any = None) -> Any:
    """`BitsAndBytesConfig` for QLoRA (4-bit NF4, double quantisation), or None.

    Building it imports nothing GPU-only; loading a model with it needs CUDA and bitsandbytes
    (`pip install 'ds2_hf[gpu]'`).
    """
    if not recipe.load_in_4bit:
        return None
    import torch
    from transformers import BitsAndBytesConfig

    kwargs: dict[str, Any] = dict(
        load_in_4bit=True,
        bnb_4bit_quant_type=recipe.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=recipe.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=compute_dtype or torch.bfloat16,
    )
    if recipe.bnb_4bit_quant_storage:
        kwargs["bnb_4bit_quant_storage"] = getattr(torch, recipe.bnb_4bit_quant_storage)
    return BitsAndBytesConfig(**kwargs)


def _torch_dtype(precision: str) -> Any:
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def load_model_and_tokenizer(recipe: SFTRecipe, sft_config: Any) -> tuple[Any, Any]:
    """Base model and tokenizer for training (GGUF, folder or hub id; 4-bit when the recipe asks)."""
    import torch

    from ds2_hf.models import load_causal_lm

    if not recipe.model_name_or_path:
        raise ValueError("The recipe has no model_name_or_path: set it in the YAML or with --model_name_or_path.")
    precision = "bf16" if sft_config.bf16 else ("fp16" if sft_config.fp16 else "fp32")
    dtype = _torch_dtype(precision)
    if precision == "fp16" and not recipe.use_lora:
        dtype = torch.float32  # fp16 AMP cannot unscale fp16 master weights
    kwargs: dict[str, Any] = {}
    if recipe.attn_implementation:
        kwargs["attn_implementation"] = recipe.attn_implementation
    if recipe.trust_remote_code:
        kwargs["trust_remote_code"] = True
    quantization = build_quantization_config(recipe, compute_dtype=dtype)
    device_map = None
    if quantization is not None:
        if not torch.cuda.is_available():
            raise ValueError("load_in_4bit (QLoRA) needs a CUDA GPU and bitsandbytes; this machine has no GPU.")
        kwargs["quantization_config"] = quantization
        device_map = {"": sft_config.local_process_index}
    model, tokenizer = load_causal_lm(
        recipe.model_name_or_path, gguf_file=recipe.gguf_file, dtype=dtype, device_map=device_map, **kwargs
    )
    return model, tokenizer


@dataclass
class PreparedRun:
    """Everything `build_trainer` set up; `train` runs it."""

    recipe: SFTRecipe
    trainer: Any
    stats: Any
    num_processes: int
    chat_template: str


def build_trainer(recipe: SFTRecipe, dataset: Any = None) -> PreparedRun:
    """Load model, tokenizer and data and build the `SFTTrainer` (without training).

    ``dataset`` is a `datasets.Dataset`, a path or a hub id; None reads ``recipe.dataset``.
    """
    from trl import SFTTrainer

    from ds2_hf.sft.chat import check_loss_mask, resolve_chat_template
    from ds2_hf.sft.data import load_sft_dataset, prepare_chat_dataset

    source = dataset if dataset is not None else recipe.dataset
    if source is None:
        raise ValueError("No training data: pass a dataset to train(), or set `dataset` in the recipe (--dataset).")
    # Data first: a wrong path should fail before minutes of model loading.
    raw = load_sft_dataset(source, split=recipe.dataset_split, config=recipe.dataset_config)
    if recipe.max_train_samples is not None:
        raw = raw.select(range(min(recipe.max_train_samples, len(raw))))
    num_processes = launched_num_processes()
    sft_config = build_sft_config(recipe, num_processes)
    model, tokenizer = load_model_and_tokenizer(recipe, sft_config)
    chat_template = resolve_chat_template(tokenizer, recipe.chat_format)
    if recipe.assistant_only_loss:
        check_loss_mask(tokenizer, chat_template)
    tokenizer.chat_template = chat_template

    with sft_config.main_process_first(desc="preparing the SFT dataset"):
        train_dataset, stats = prepare_chat_dataset(
            raw,
            tokenizer_name_or_path=str(recipe.model_name_or_path),
            chat_template=chat_template,
            max_length=recipe.max_length,
            gguf_file=recipe.gguf_file,
            num_proc=recipe.dataset_num_proc,
            tokenizer=tokenizer,
        )
    trainer = SFTTrainer(
        model=model,
        args=sft_config,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=build_lora_config(recipe),
    )
    if len(trainer.train_dataset) == 0:
        raise ValueError(
            f"After truncation to max_length={recipe.max_length}, no example keeps an assistant token to learn from. "
            "Raise max_length or select examples with shorter prompts."
        )
    return PreparedRun(recipe, trainer, stats, num_processes, chat_template)


def _resume_arg(recipe: SFTRecipe) -> Any:
    value = recipe.resume_from_checkpoint
    if value is None:
        return None
    if value.lower() in ("last", "true"):
        return True
    if not Path(value).is_dir():
        raise FileNotFoundError(f"resume_from_checkpoint: no checkpoint folder at {value}")
    return value


def train(recipe: SFTRecipe, dataset: Any = None) -> SFTResult:
    """Fine-tune per ``recipe``; save the adapter, optionally merge it, write the card, push.

    Output layout (``recipe.output_dir``): the adapter (or full model) and tokenizer at the top,
    ``merged/`` when ``merge_adapter``, ``ds2_sft_recipe.yaml`` and ``ds2_sft_results.json``.
    """
    run = build_trainer(recipe, dataset)
    trainer, stats = run.trainer, run.stats
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=_resume_arg(recipe))
    wall = time.perf_counter() - started
    trainer.save_model(recipe.output_dir)

    state = trainer.state
    epochs_done = float(state.epoch or 0.0)
    metrics = {k: v for k, v in output.metrics.items() if isinstance(v, (int, float))}
    metrics.update(
        global_steps=state.global_step,
        train_wall_s=round(wall, 3),
        epochs_done=round(epochs_done, 4),
        tokens_per_s=round(stats.num_tokens * epochs_done / wall, 2) if wall > 0 else None,
    )
    loss_history = [
        {"step": entry["step"], "loss": float(entry["loss"])} for entry in state.log_history if "loss" in entry
    ]
    accelerator = trainer.accelerator
    effective = (
        recipe.per_device_train_batch_size * trainer.args.gradient_accumulation_steps * run.num_processes
    )
    result = SFTResult(
        output_dir=str(recipe.output_dir),
        adapter_dir=str(recipe.output_dir) if recipe.use_lora else None,
        merged_dir=None,
        hub_url=None,
        metrics=metrics,
        loss_history=loss_history,
        num_processes=accelerator.num_processes,
        gradient_accumulation_steps=trainer.args.gradient_accumulation_steps,
        effective_batch_size=effective,
        distributed_type=str(accelerator.distributed_type).split(".")[-1],
        process_index=accelerator.process_index,
        data=asdict(stats),
    )
    is_main = accelerator.is_main_process
    # Free the training copy (the accelerator holds references too) before the merge loads the base again.
    del trainer, run, accelerator
    gc.collect()
    _empty_device_cache()
    if is_main:
        _finish(recipe, result, stats)
    return result


def _empty_device_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _finish(recipe: SFTRecipe, result: SFTResult, stats: Any) -> None:
    from ds2_hf.sft.card import model_card, push_folder

    out = Path(recipe.output_dir)
    recipe.to_yaml(out / RECIPE_FILE)
    card_metrics = {
        "final train loss": round(result.losses[-1], 4) if result.losses else None,
        "optimiser steps": result.metrics.get("global_steps"),
        "processes": f"{result.num_processes} ({result.distributed_type})",
    }
    model_card(recipe, stats=stats, metrics=card_metrics, merged=False).save(out / "README.md")
    push_target, ignore = out, ["checkpoint-*", "checkpoint-*/**", "merged/**", "runs/**"]
    if recipe.use_lora and recipe.merge_adapter:
        _, precision = resolve_device(recipe)
        merged = out / "merged"
        from ds2_hf.sft.merge import merge_adapter

        merge_adapter(out, merged, recipe.model_name_or_path, gguf_file=recipe.gguf_file, dtype=_torch_dtype(precision))
        model_card(recipe, stats=stats, metrics=card_metrics, merged=True).save(merged / "README.md")
        recipe.to_yaml(merged / RECIPE_FILE)
        result.merged_dir = str(merged)
        push_target, ignore = merged, None
    _write_results(out, result)
    if recipe.push_to_hub:
        result.hub_url = push_folder(push_target, recipe.hub_model_id, private=recipe.hub_private, ignore=ignore)
        _write_results(out, result)


def _write_results(out: Path, result: SFTResult) -> None:
    (out / RESULTS_FILE).write_text(json.dumps(asdict(result), indent=2, default=str))
