"""`rate(...)`: the `datasets.map` transform that rates every sample with an LLM.

    >>> import ds2_hf
    >>> rater = ds2_hf.rate(model="meta-llama/Llama-3.1-8B-Instruct", base_url="http://tgi:8080")
    >>> rated = ds.map(rater, batched=True, batch_size=256)
    >>> print(rater.summary())

Columns added (``<field>`` per template field; DS2: overall, rarity, complexity, informativeness):

- ``score``: the compressed score (DS2: ``clip(overall, 4, 9) - 4`` in 0..5), null on failure;
- ``score_<field>``: the raw integer of each field, null on failure;
- ``rating_error``: null, or why the sample has no score (``code: detail``);
- ``rating_output``: the model's last answer text (kept on failure too);
- ``rating_model``, ``rating_template``: what produced the rating (``record_metadata=True``).

The transform object holds only its configuration: the client, model, cache connection and event
loop are built lazily in each process, so ``num_proc`` works and `datasets` computes the same
fingerprint for the same configuration (a second identical ``map`` is served from its cache).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import weakref
from collections.abc import Mapping
from typing import Any

from ds2_hf.prompts import PromptTemplate, get_template
from ds2_hf.rating.config import RatingConfig
from ds2_hf.rating.stats import RatingStats

logger = logging.getLogger(__name__)

__all__ = ["Rater", "rate"]


class _Runtime:
    """Per-process state: an event loop on a worker thread, the engine, the cache, the progress bar."""

    def __init__(self, config: RatingConfig, template: PromptTemplate):
        from ds2_hf.rating.cache import RequestCache, default_cache_path
        from ds2_hf.rating.engine import RatingEngine

        self.pid = os.getpid()
        # A loop of our own on a thread works the same in scripts, notebooks (which already run a
        # loop) and `num_proc` workers, and keeps HTTP connections alive across batches.
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="ds2-rating-loop", daemon=True)
        self.thread.start()
        self.cache = RequestCache(config.cache_path or default_cache_path()) if config.cache else None
        progress = None
        if config.progress:
            from tqdm.auto import tqdm

            progress = tqdm(desc=f"rating ({config.model or 'model'})", unit=" samples", dynamic_ncols=True)
        self.progress = progress
        self.engine = RatingEngine(config, template, cache=self.cache, progress=progress)

    def run(self, coro: Any) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def close(self) -> None:
        if self.pid != os.getpid():
            return
        if self.loop.is_running():
            try:
                self.run(self.engine.backend.aclose())
            except Exception:  # the outcome of the run is already decided; closing must not mask it
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)
        if self.progress is not None:
            self.progress.close()
        if self.cache is not None:
            self.cache.close()


_LIVE: "weakref.WeakSet[Rater]" = weakref.WeakSet()


@atexit.register
def _log_summaries() -> None:  # pragma: no cover - runs at interpreter exit
    for rater in list(_LIVE):
        runtime = rater.__dict__.get("_runtime")
        if runtime is not None and runtime.pid == os.getpid() and rater.stats.samples:
            logger.info("rating summary (pid %d):\n%s", os.getpid(), rater.summary())


def _is_lazy_batch(batch: Any) -> bool:
    return hasattr(batch, "pa_table") and hasattr(batch, "keys_to_format")


class Rater:
    """A picklable, fingerprint-stable `datasets.map` transform; build it with `ds2_hf.rate`.

    Works with ``batched=True`` (recommended: the samples of a batch are rated concurrently) and
    ``batched=False``. With the default (Python) format it returns the batch's Arrow table with the
    rating columns appended, so their types hold even when a batch is all failures or all
    successes; ``map(remove_columns=...)`` is then ignored: drop columns before or after rating.
    """

    def __init__(self, config: RatingConfig, template: PromptTemplate | None = None):
        self.config = config
        self.template = template if template is not None else get_template(config.template)
        self._runtime: _Runtime | None = None

    # pickling: configuration only -----------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "template": self.template}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.config = state["config"]
        self.template = state["template"]
        self._runtime = None

    def __repr__(self) -> str:
        where = self.config.base_url or self.config.provider or self.config.backend
        return f"Rater(model={self.config.model!r}, via={where!r}, template={self.template.id!r})"

    # runtime --------------------------------------------------------------------------------
    def _ensure_runtime(self) -> _Runtime:
        if self._runtime is None or self._runtime.pid != os.getpid():
            self._runtime = _Runtime(self.config, self.template)
            _LIVE.add(self)
        return self._runtime

    @property
    def stats(self) -> RatingStats:
        """Counters of the work done by this object in this process (empty before the first batch)."""
        runtime = self._runtime
        return runtime.engine.stats if runtime is not None and runtime.pid == os.getpid() else RatingStats()

    def summary(self) -> str:
        """Requests sent, cache hits, failures by reason, tokens and samples/s in this process."""
        return self.stats.summary()

    def close(self) -> None:
        """Close the client, the cache connection and the worker thread (a later call reopens them)."""
        if self._runtime is not None:
            self._runtime.close()
            self._runtime = None

    # the transform --------------------------------------------------------------------------
    @property
    def column_names(self) -> list[str]:
        names = ["score"] + [f"score_{suffix}" for suffix in self.template.fields.values()]
        names += ["rating_error", "rating_output"]
        if self.config.record_metadata:
            names += ["rating_model", "rating_template"]
        return names

    def rate_conversations(self, conversations: list[list[dict[str, str]]]) -> list[Any]:
        """Rate already normalised conversations; returns `SampleResult`s in order."""
        runtime = self._ensure_runtime()
        return runtime.run(runtime.engine.rate(conversations))

    def _columns(self, results: list[Any]) -> dict[str, list[Any]]:
        n = len(results)
        columns: dict[str, list[Any]] = {"score": [r.score for r in results]}
        for suffix in self.template.fields.values():
            columns[f"score_{suffix}"] = [r.values[suffix] if r.values else None for r in results]
        columns["rating_error"] = [r.error for r in results]
        columns["rating_output"] = [r.output for r in results]
        if self.config.record_metadata:
            columns["rating_model"] = [self.config.model] * n
            columns["rating_template"] = [self.template.id] * n
        return columns

    def _arrow_types(self) -> dict[str, Any]:
        import pyarrow as pa

        types = {name: pa.int64() for name in self.column_names if name.startswith("score")}
        types.update({name: pa.string() for name in self.column_names if name.startswith("rating_")})
        return types

    def features(self) -> Any:
        """`datasets.Features` of the added columns, e.g. for ``map(features=...)`` on a formatted dataset."""
        from datasets import Features, Value

        return Features({name: Value("int64" if name.startswith("score") else "string") for name in self.column_names})

    def __call__(self, batch: Mapping[str, Any], *args: Any) -> Any:
        if args:
            raise TypeError(
                "The rating transform takes the whole batch: call ds.map(rater, batched=True) without "
                "input_columns/with_indices/with_rank."
            )
        from ds2_hf.text import detect_format, to_messages

        if _is_lazy_batch(batch):
            table = batch.pa_table
            fmt = detect_format(table.column_names)
            needed = [c for c in ("messages", "instruction", "input", "output", "prompt", "completion") if c in table.column_names]
            rows = table.select(needed).to_pylist()
        else:
            fmt = detect_format(batch.keys())
            table = None
            rows = _rows_of(batch, fmt)
        conversations = [to_messages(row, fmt) for row in rows]
        results = self.rate_conversations(conversations) if conversations else []
        columns = self._columns(results)
        if table is not None:
            # An Arrow table keeps nullable column types even in an all-null batch (datasets infers
            # a `null` type from a list of Nones and then refuses later values).
            import pyarrow as pa

            types = self._arrow_types()
            for name, values in columns.items():
                array = pa.array(values, type=types[name])
                if name in table.column_names:
                    table = table.set_column(table.column_names.index(name), name, array)
                else:
                    table = table.append_column(name, array)
            return table
        if not _is_batched_dict(batch, fmt):
            return {name: values[0] for name, values in columns.items()}
        return columns


def _is_batched_dict(batch: Mapping[str, Any], fmt: str) -> bool:
    column = {"messages": "messages", "alpaca": "instruction", "prompt_completion": "prompt"}[fmt]
    value = batch[column]
    if hasattr(value, "tolist") and not isinstance(value, (list, str)):
        value = value.tolist()
    if isinstance(value, str) or value is None:
        return False
    # A single example's `messages` (or conversational prompt) is a list of message dicts.
    return not (isinstance(value, list) and value and isinstance(value[0], Mapping))


def _rows_of(batch: Mapping[str, Any], fmt: str) -> list[dict[str, Any]]:
    def plain(v: Any) -> Any:
        return v.tolist() if hasattr(v, "tolist") and not isinstance(v, (str, list)) else v

    data = {k: plain(v) for k, v in batch.items()}
    if not _is_batched_dict(data, fmt):
        return [data]
    n = len(next(iter(data.values())))
    return [{k: v[i] for k, v in data.items()} for i in range(n)]


def rate(
    model: str | None = None,
    base_url: str | list[str] | None = None,
    *,
    template: str | PromptTemplate | None = None,
    config: RatingConfig | None = None,
    **options: Any,
) -> Rater:
    """Build the rating transform for ``ds.map(..., batched=True)``.

    Args:
        model: the model name the server serves (server backend) or a hub id / folder to load
            (``backend="transformers"``).
        base_url: one or more OpenAI-compatible endpoints (TGI, vLLM, SGLang, llama.cpp server,
            the OpenAI API...); several share the load. Without it, requests go to HF Inference
            Providers for ``model``.
        template: a built-in template name (``"ds2"``, the default; ``"alpagasus"``), a YAML/JSON
            file, or a `PromptTemplate`.
        config: a full `RatingConfig`; ``model``/``base_url``/``options`` override its fields.
        **options: any other `RatingConfig` field (``concurrency=32``, ``cache_path=...``,
            ``response_format="json_object"``, ``backend="transformers"``...).

    Example:

        >>> from datasets import Dataset
        >>> ds = Dataset.from_list([{"instruction": "Add 2 and 3.", "output": "5"}])
        >>> rated = ds.map(rate(model="smollm2-135m", base_url="http://127.0.0.1:8080"), batched=True)
        >>> rated[0]["score"], rated[0]["rating_error"]
        (1, None)
    """
    from dataclasses import fields, replace

    valid = {f.name for f in fields(RatingConfig)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise TypeError(f"rate() got unknown options {unknown}; valid RatingConfig fields: {sorted(valid)}")
    overrides: dict[str, Any] = dict(options)
    if model is not None:
        overrides["model"] = model
    if base_url is not None:
        overrides["base_url"] = [base_url] if isinstance(base_url, str) else list(base_url)
    template_obj = template if isinstance(template, PromptTemplate) else None
    if template_obj is not None:
        overrides["template"] = template_obj.id
    elif template is not None:
        overrides["template"] = str(template)
    cfg = replace(config, **overrides) if config is not None else RatingConfig(**overrides)
    return Rater(cfg, template_obj)
