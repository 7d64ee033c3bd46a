"""Merge a trained LoRA adapter into its base model (PEFT `merge_and_unload`) and save the result.

    >>> from ds2_hf.sft.merge import merge_adapter
    >>> merge_adapter("out/llama31-ds2", "out/llama31-ds2/merged", dtype="bfloat16")

The base is reloaded unquantised from disk rather than merged in the training process: that works
the same after DDP, FSDP or ZeRO-3 (where the in-memory model is sharded) and after QLoRA (where
merging into 4-bit weights would round the update away).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def merge_adapter(
    adapter_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    base_model: str | os.PathLike | None = None,
    *,
    gguf_file: str | None = None,
    dtype: Any = "auto",
) -> Path:
    """Load ``base_model`` (default: the adapter's recorded base), apply the adapter, merge, save.

    The tokenizer (with the chat template used in training) is copied from ``adapter_dir``.
    Returns ``output_dir``.
    """
    import torch
    from peft import PeftConfig, PeftModel
    from transformers import AutoTokenizer

    from ds2_hf.models import load_causal_lm

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"No LoRA adapter in {adapter_dir} (adapter_config.json is missing).")
    base = base_model or PeftConfig.from_pretrained(str(adapter_dir)).base_model_name_or_path
    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype)
    model, _ = load_causal_lm(base, gguf_file=gguf_file, dtype=dtype)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    output_dir = Path(output_dir)
    merged.save_pretrained(output_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(output_dir)
    logger.info("Merged %s into %s and saved it to %s", adapter_dir, base, output_dir)
    return output_dir
