"""The rating loop: cache lookups, bounded concurrency, retries, re-asks and the error budget.

One `RatingEngine` lives per process (built lazily by `ds2_hf.rating.Rater`) and rates lists of
conversations in an asyncio event loop:

- every request is first looked up in the cache; an answer is written to the cache as soon as it
  arrives, before it is parsed;
- at most ``concurrency`` requests are in flight; a request that fails on the transport is retried
  with exponential backoff and jitter, waiting at least the server's ``Retry-After``;
- an answer that cannot be parsed is followed up (the model sees its answer and why it was
  rejected) at most ``max_reasks`` times; then the sample fails with the reason and the text;
- when more than ``error_budget`` of the finished samples got no answer at all (transport failures
  after all retries, or requests the server rejected), or a backend
  reports a fatal error, the run stops with `RatingAbortedError`. Answers already received stay in
  the cache, so running the same job again resumes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from ds2_hf.prompts import PromptTemplate
from ds2_hf.rating.backends import FatalError, RetryableError, SampleError, make_backend
from ds2_hf.rating.cache import Completion, RequestCache, request_key
from ds2_hf.rating.config import RatingConfig
from ds2_hf.rating.parsing import RatingParseError, parse_rating
from ds2_hf.rating.stats import RatingStats

logger = logging.getLogger(__name__)

__all__ = ["RatingAbortedError", "RatingEngine", "SampleResult"]

CACHE_KEY_VERSION = 1  # bump when the key's layout changes (old entries then stop matching)


class RatingAbortedError(RuntimeError):
    """The run stopped because it was failing wholesale; answers received so far are cached."""


class _RequestFailed(Exception):
    def __init__(self, last: RetryableError, attempts: int):
        super().__init__(f"request_failed: {last} (gave up after {attempts} attempts)")
        self.last = last
        self.attempts = attempts


@dataclass
class SampleResult:
    """The outcome for one sample: ``values`` (column suffix -> int) or an ``error``."""

    values: dict[str, int] | None
    score: int | None
    error: str | None
    output: str | None
    no_answer: bool = False  # the request itself failed (transport, or rejected by the server)


class RatingEngine:
    """Rates conversations for one process; see the module docstring."""

    def __init__(
        self,
        config: RatingConfig,
        template: PromptTemplate,
        *,
        backend: Any = None,
        cache: RequestCache | None = None,
        progress: Any = None,
    ):
        self.config = config
        self.template = template
        self.backend = backend if backend is not None else make_backend(config, template)
        self.cache = cache
        self.progress = progress
        self.stats = RatingStats()
        if self.backend.kind == "transformers":
            self._mode = "text"
        else:
            self._mode = "json_schema" if config.response_format == "auto" else config.response_format
        self._finished = 0
        self._no_answer = 0
        self._last_transport_error: str | None = None

    # keys and bookkeeping -------------------------------------------------------------------
    def cache_key(self, messages: list[dict[str, str]], mode: str) -> str:
        return request_key(
            {
                "v": CACHE_KEY_VERSION,
                "backend": self.backend.kind,
                "model": self.config.model,
                "template": self.template.id,
                "decoding": self.config.decoding(),
                "response_format": [mode, self.backend.response_format(mode)],
                "messages": messages,
            }
        )

    def _concurrency(self) -> int:
        if self.backend.kind == "transformers":
            # Two batches' worth, so the next batch is queued while one generates.
            return 2 * self.config.batch_size
        return self.config.concurrency

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.config.backoff_max, self.config.backoff_base * (2**attempt))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    # one request, with retries --------------------------------------------------------------
    async def _send(self, messages: list[dict[str, str]], mode: str) -> tuple[Completion, str]:
        decoding = self.config.decoding()
        fell_back = False
        attempt = 0
        while True:
            self.stats.attempts += 1
            try:
                completion = await self.backend.complete(messages, decoding, mode)
            except RetryableError as err:
                self.stats.transport_errors[err.kind] += 1
                self._last_transport_error = str(err)
                if attempt >= self.config.max_retries:
                    raise _RequestFailed(err, attempt + 1) from err
                delay = self._backoff(attempt)
                if err.retry_after is not None:
                    delay = max(delay, min(err.retry_after, self.config.max_retry_after))
                attempt += 1
                self.stats.retries += 1
                logger.debug("retry %d in %.2fs after %s", attempt, delay, err)
                await asyncio.sleep(delay)
                continue
            except SampleError as err:
                # "auto": a server that rejects response_format gets the same request without it.
                if (
                    self.config.response_format == "auto"
                    and mode != "text"
                    and not fell_back
                    and err.status in (400, 422)
                ):
                    fell_back = True
                    mode = "text"
                    continue
                raise
            self.stats.requests_sent += 1
            self.stats.prompt_tokens += completion.prompt_tokens or 0
            self.stats.completion_tokens += completion.completion_tokens or 0
            if fell_back and self._mode != "text":
                logger.warning(
                    "The server rejected response_format=%s; rating continues without constrained decoding "
                    "(answers are parsed from free text).",
                    self._mode,
                )
                self._mode = "text"
                self.stats.response_format_fallback = True
            return completion, mode

    async def _answer(self, messages: list[dict[str, str]], slots: asyncio.Semaphore) -> Completion:
        mode = self._mode
        key = self.cache_key(messages, mode)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self.stats.cache_hits += 1
                return hit
        async with slots:
            completion, used_mode = await self._send(messages, mode)
        if self.cache is not None:
            if used_mode != mode:
                key = self.cache_key(messages, used_mode)
            self.cache.put(key, completion, model=self.config.model, template=self.template.id)
        return completion

    # one sample -----------------------------------------------------------------------------
    async def _rate_one(self, conversation: list[dict[str, str]], slots: asyncio.Semaphore) -> SampleResult:
        history = self.template.messages_for(conversation, max_chars=self.config.max_sample_chars)
        last_text: str | None = None
        last_error = "no_answer: nothing was generated"
        for turn in range(1 + self.config.max_reasks):
            if turn:
                self.stats.reasks += 1
            try:
                completion = await self._answer(history, slots)
            except SampleError as err:
                self._last_transport_error = str(err)
                return self._fail(f"{err.code}: {err.detail}", last_text, no_answer=True)
            except _RequestFailed as err:
                return self._fail(str(err), last_text, no_answer=True)
            last_text = completion.text
            try:
                values = parse_rating(completion.text, self.template)
            except RatingParseError as err:
                last_error = str(err)
                if completion.finish_reason == "length":
                    last_error += f" (the answer was cut at max_tokens={self.config.max_tokens})"
                history = history + [
                    {"role": "assistant", "content": completion.text or ""},
                    self.template.reask_message(str(err)),
                ]
                continue
            overall = values[self.template.fields[self.template.overall_key]]
            return self._succeed(values, self.template.compress_score(overall), completion.text)
        return self._fail(last_error, last_text)

    def _succeed(self, values: dict[str, int], score: int, text: str | None) -> SampleResult:
        self.stats.rated += 1
        self._finish()
        return SampleResult(values=values, score=score, error=None, output=text)

    def _fail(self, error: str, text: str | None, no_answer: bool = False) -> SampleResult:
        self.stats.failed += 1
        self.stats.failures[error.split(":", 1)[0]] += 1
        if no_answer:
            self._no_answer += 1
        self._finish()
        self._check_budget()
        return SampleResult(values=None, score=self.config.failure_score, error=error, output=text, no_answer=no_answer)

    def _finish(self) -> None:
        self._finished += 1
        self.stats.samples += 1
        if self.progress is not None:
            self.progress.update(1)
            self.progress.set_postfix(
                failed=self.stats.failed, cached=self.stats.cache_hits, retries=self.stats.retries, refresh=False
            )

    def _check_budget(self) -> None:
        cfg = self.config
        if self._finished < cfg.error_budget_min_samples:
            return
        if self._no_answer > cfg.error_budget * self._finished:
            where = ", ".join(cfg.base_url) if cfg.base_url else f"the inference provider for {cfg.model}"
            raise RatingAbortedError(
                f"Rating stopped: {self._no_answer} of {self._finished} samples got no answer from {where} "
                f"(up to {cfg.max_retries} retries each; error budget {cfg.error_budget:.0%}). Last error: "
                f"{self._last_transport_error}. Check that the server is up and reachable and that samples fit "
                "its context, then run the same command again: answers already received are in the cache and "
                "will not be requested again."
            )

    # a list of samples ----------------------------------------------------------------------
    async def rate(self, conversations: list[list[dict[str, str]]]) -> list[SampleResult]:
        """Rate conversations (lists of ``{"role", "content"}``); results keep the input order."""
        slots = asyncio.Semaphore(self._concurrency())
        tasks = [asyncio.ensure_future(self._rate_one(c, slots)) for c in conversations]
        started = time.perf_counter()
        try:
            return list(await asyncio.gather(*tasks))
        except FatalError as err:
            raise RatingAbortedError(f"Rating stopped: {err}") from err
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.stats.seconds += time.perf_counter() - started
