"""Loading causal LMs for rating, fine-tuning and evaluation: any hub id, local folder, or GGUF file.

    >>> from ds2_hf.models import load_causal_lm
    >>> model, tokenizer = load_causal_lm("HuggingFaceTB/SmolLM2-135M-Instruct")          # hub id
    >>> model, tokenizer = load_causal_lm("/models/smol", gguf_file="model.Q4_1.gguf")     # GGUF

A model loaded from GGUF is dequantised to torch weights but still carries transformers' GGUF
"quantizer", which makes `save_pretrained` and `Trainer` refuse it. `load_causal_lm` strips that
marker, and `materialize_gguf` saves such a model once as safetensors so later loads take a fraction
of a second.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def _strip_gguf_quantizer(model: Any) -> Any:
    # The weights are plain dequantised tensors; only the bookkeeping says "quantized".
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    return model


def load_causal_lm(
    name_or_path: str | os.PathLike,
    *,
    gguf_file: str | None = None,
    dtype: Any = "auto",
    device_map: Any = None,
    padding_side: str | None = None,
    **model_kwargs: Any,
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` for a causal LM from a hub id, a local folder or a GGUF file.

    ``gguf_file`` is the file name inside ``name_or_path`` (a folder or hub repo). The tokenizer gets
    a pad token (the EOS token) when it has none, so batched generation and training work.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok_kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    if padding_side:
        tok_kwargs["padding_side"] = padding_side
    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), **tok_kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    kwargs: dict[str, Any] = dict(model_kwargs)
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    if device_map is not None:
        kwargs["device_map"] = device_map
    model = AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=dtype, **kwargs)
    if gguf_file:
        _strip_gguf_quantizer(model)
    return model, tokenizer


def _cache_root() -> Path:
    root = os.environ.get("DS2_HF_CACHE")
    if root:
        return Path(root)
    from huggingface_hub.constants import HF_HOME

    return Path(HF_HOME) / "ds2_hf"


def materialize_gguf(gguf_path: str | os.PathLike, output_dir: str | os.PathLike | None = None) -> Path:
    """Dequantise a GGUF model once and save it as a safetensors folder; return the folder.

    The folder is keyed by the GGUF file's size and modification time, so a second call returns
    at once. Writes go to a temporary folder renamed into place, so a killed conversion leaves
    nothing half-written behind.
    """
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf_path}")
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = Path(output_dir) if output_dir else _cache_root() / "models" / f"{gguf_path.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    import torch

    model, tokenizer = load_causal_lm(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, target)
    except OSError:  # another process won the race; its copy is as good as ours
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("Saved dequantised %s to %s", gguf_path.name, target)
    return target
