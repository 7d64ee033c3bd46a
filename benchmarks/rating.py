"""Rating throughput and failure rates against a real local llama.cpp server (SmolLM2-135M-Instruct).

    python benchmarks/rating.py                       # both parts, defaults below
    python benchmarks/rating.py --part throughput --throughput_samples 48 --concurrency 4
    python benchmarks/rating.py --part failures --failure_samples 200 --modes text,json_object,json_schema

1. Throughput: samples/s of ``ds.map(ds2_hf.rate(...), batched=True)`` (request cache on, fresh
   file, so every request is sent and stored) against a plain asyncio loop that sends the *same*
   prompts with `huggingface_hub.AsyncInferenceClient` and the same concurrency, parsing nothing and
   storing nothing. Runs alternate in one process against one server (plain, rate | rate, plain | ...);
   the ratio of medians and the median of per-round ratios are printed. The local server handles one request at a time, so this measures
   the overhead ds2_hf adds around the requests (cache, parsing, re-asks, datasets.map batching).
2. Failure rates: the share of samples SmolLM2 fails to rate, per ``response_format`` mode, on real
   instructions from BIG-bench's Natural Instructions tasks: first answer only (``max_reasks=0``),
   then after up to 2 re-asks (same cache, so only the re-asks are sent; ``--reask_levels``).

Timings on a shared machine are noisy; the ratio, measured within one run, is what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def natural_instruction_rows(n: int, seed: int = 0, max_chars: int = 1600) -> list[dict]:
    """``n`` Alpaca rows from BIG-bench Natural Instructions (definition + input -> target), seeded."""
    from ds2_hf.assets import bigbench_tasks
    from ds2_hf.text import serialize

    root = bigbench_tasks("natural_instructions") / "natural_instructions"
    rng = random.Random(seed)
    tasks = sorted(root.glob("*/task.json"))
    per_task: list[list[dict]] = []
    for path in tasks:
        task = json.loads(path.read_text())
        prefix = (task.get("task_prefix") or "").strip()
        rows = []
        for ex in task["examples"]:
            target = ex.get("target")
            target = target[0] if isinstance(target, list) and target else target
            if not isinstance(target, str) or not target.strip():
                continue
            row = {"instruction": prefix, "input": ex["input"].strip(), "output": target.strip(), "task": path.parent.name}
            if len(serialize(row)) <= max_chars:
                rows.append(row)
        rng.shuffle(rows)
        per_task.append(rows)
    # Round-robin over tasks so every task type is represented.
    out: list[dict] = []
    while len(out) < n and any(per_task):
        for rows in per_task:
            if rows and len(out) < n:
                out.append(rows.pop())
    if len(out) < n:
        raise RuntimeError(f"only {len(out)} Natural Instructions rows fit in {max_chars} characters")
    return out


async def plain_client(base_url: str, model: str, prompts: list[list[dict]], concurrency: int, payload: dict) -> float:
    """The baseline: the same requests, same concurrency, nothing else. Returns seconds."""
    from huggingface_hub import AsyncInferenceClient

    client = AsyncInferenceClient(base_url=base_url, timeout=600)
    slots = asyncio.Semaphore(concurrency)

    async def one(messages):
        async with slots:
            out = await client.chat_completion(messages, model=model, **payload)
            return out.choices[0].message.content

    start = time.perf_counter()
    texts = await asyncio.gather(*(one(m) for m in prompts))
    seconds = time.perf_counter() - start
    await client.close()
    assert all(t is not None for t in texts)
    return seconds


def throughput(server, args) -> dict:
    import ds2_hf
    from datasets import Dataset
    from ds2_hf.prompts import get_template
    from ds2_hf.rating.backends import response_format_payload
    from ds2_hf.text import to_messages

    rows = natural_instruction_rows(args.throughput_samples, seed=1)
    template = get_template("ds2")
    prompts = [template.messages_for(to_messages(r)) for r in rows]
    payload = dict(
        max_tokens=args.max_tokens,
        temperature=0.0,
        seed=0,
        response_format=response_format_payload("json_schema", template, via_base_url=True),
    )
    ds = Dataset.from_list(rows)
    # Warm the server (model pages, prompt cache) so neither side pays for it.
    asyncio.run(plain_client(server.base_url, server.alias, prompts[:2], args.concurrency, payload))
    plain_rates, rate_rates, failures = [], [], []

    def run_plain() -> None:
        seconds = asyncio.run(plain_client(server.base_url, server.alias, prompts, args.concurrency, payload))
        plain_rates.append(len(rows) / seconds)

    def run_rate() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            rater = ds2_hf.rate(
                model=server.alias,
                base_url=server.base_url,
                concurrency=args.concurrency,
                max_tokens=args.max_tokens,
                response_format="json_schema",
                max_reasks=0,  # the baseline sends exactly one request per sample
                cache_path=str(Path(tmp) / "bench.sqlite"),
                progress=False,
            )
            start = time.perf_counter()
            rated = ds.map(rater, batched=True, batch_size=args.map_batch_size, load_from_cache_file=False, keep_in_memory=True)
            seconds = time.perf_counter() - start
            assert rater.stats.requests_sent == len(rows) and rater.stats.cache_hits == 0
            failures.append(sum(e is not None for e in rated["rating_error"]))
            rater.close()
        rate_rates.append(len(rows) / seconds)

    for round_ in range(args.rounds):
        # Alternate the order (plain, rate / rate, plain) so load drift on a shared machine cancels out.
        for step in (run_plain, run_rate) if round_ % 2 == 0 else (run_rate, run_plain):
            step()
        print(
            f"  round {round_ + 1}: plain {plain_rates[-1]:.3f} samples/s, ds.map(rate) {rate_rates[-1]:.3f} samples/s, "
            f"ratio {rate_rates[-1] / plain_rates[-1]:.3f}",
            flush=True,
        )
    result = {
        "samples": len(rows),
        "concurrency": args.concurrency,
        "map_batch_size": args.map_batch_size,
        "max_tokens": args.max_tokens,
        "plain_samples_per_s": [round(x, 4) for x in plain_rates],
        "rate_samples_per_s": [round(x, 4) for x in rate_rates],
        "ratio_of_medians": round(statistics.median(rate_rates) / statistics.median(plain_rates), 4),
        "median_of_round_ratios": round(statistics.median(r / p for r, p in zip(rate_rates, plain_rates)), 4),
        "rate_failed_samples": failures,
    }
    print(
        f"throughput: ds.map(rate) / plain client = {result['ratio_of_medians']:.3f} (ratio of medians), "
        f"{result['median_of_round_ratios']:.3f} (median of per-round ratios) "
        f"(median {statistics.median(rate_rates):.3f} vs {statistics.median(plain_rates):.3f} samples/s, "
        f"{len(rows)} samples, concurrency {args.concurrency}, {args.rounds} rounds)",
        flush=True,
    )
    return result


def failure_rates(server, args) -> dict:
    import ds2_hf
    from datasets import Dataset
    from ds2_hf.rating.summary import rating_counts

    rows = natural_instruction_rows(args.failure_samples, seed=0)
    ds = Dataset.from_list(rows)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes.split(","):
            per_mode = {}
            for reasks in (int(x) for x in args.reask_levels.split(",")):
                rater = ds2_hf.rate(
                    model=server.alias,
                    base_url=server.base_url,
                    concurrency=args.concurrency,
                    max_tokens=args.max_tokens,
                    response_format=mode,
                    max_reasks=reasks,
                    cache_path=str(Path(tmp) / "failures.sqlite"),
                    progress=False,
                    error_budget=1.0,
                )
                start = time.perf_counter()
                rated = ds.map(rater, batched=True, batch_size=args.map_batch_size, load_from_cache_file=False, keep_in_memory=True)
                counts = rating_counts(rated)
                per_mode[f"max_reasks={reasks}"] = {
                    **counts.to_dict(),
                    "requests_sent": rater.stats.requests_sent,
                    "cache_hits": rater.stats.cache_hits,
                    "seconds": round(time.perf_counter() - start, 1),
                }
                print(
                    f"failures [{mode}, max_reasks={reasks}]: {counts.failed}/{counts.rows} = {counts.failure_rate:.1%} "
                    f"{counts.failures}; histogram {dict(sorted(counts.score_histogram.items()))}; "
                    f"sent {rater.stats.requests_sent}, cached {rater.stats.cache_hits}",
                    flush=True,
                )
                rater.close()
            results[mode] = per_mode
    return {"samples": len(rows), "max_tokens": args.max_tokens, "modes": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("all", "throughput", "failures"), default="all")
    parser.add_argument("--throughput_samples", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--failure_samples", type=int, default=200)
    parser.add_argument("--modes", default="text,json_schema", help="comma-separated response_format modes")
    parser.add_argument("--reask_levels", default="0,2", help="max_reasks values to run per mode, in order (shared cache)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--map_batch_size", type=int, default=16)
    parser.add_argument("--max_tokens", type=int, default=128)
    parser.add_argument("--n_threads", type=int, default=1, help="llama.cpp threads")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    from ds2_hf.assets import smollm2_gguf
    from ds2_hf.rating.llama_server import LlamaCppServer

    results: dict = {"n_threads": args.n_threads}
    with LlamaCppServer(smollm2_gguf(), alias="smollm2-135m", n_ctx=2048, n_threads=args.n_threads) as server:
        if args.part in ("all", "throughput"):
            results["throughput"] = throughput(server, args)
        if args.part in ("all", "failures"):
            results["failures"] = failure_rates(server, args)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
