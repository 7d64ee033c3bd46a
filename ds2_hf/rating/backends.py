"""Where ratings are generated: an OpenAI-compatible server, or a local `transformers` model.

Both backends expose one coroutine, ``complete(messages, decoding, response_format) -> Completion``,
and report failures as one of three exceptions the engine knows how to handle:

- `RetryableError`: the request may succeed if sent again (connection errors, timeouts, 429, 5xx,
  a garbled response body); carries the server's ``Retry-After`` when it sent one;
- `SampleError`: this request will not succeed as it is (400/413/422: e.g. the sample is longer
  than the model's context); the sample fails with the reason, the run goes on;
- `FatalError`: no request will succeed (bad URL or model name, refused credentials, offline mode);
  the run stops at once with the message.

    >>> backend = make_backend(RatingConfig(model="smollm2", base_url=["http://127.0.0.1:8080"]), get_template("ds2"))
    >>> completion = await backend.complete([{"role": "user", "content": "..."}], {"max_tokens": 64}, "json_schema")

Clients and models are built lazily inside the process and event loop that use them.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import logging
import time
from typing import Any

from ds2_hf.prompts import PromptTemplate
from ds2_hf.rating.cache import Completion
from ds2_hf.rating.config import RatingConfig

logger = logging.getLogger(__name__)

__all__ = [
    "BackendError",
    "FatalError",
    "RetryableError",
    "SampleError",
    "ServerBackend",
    "TransformersBackend",
    "make_backend",
    "parse_retry_after",
]


class BackendError(Exception):
    """Base of the failures a backend reports."""


class RetryableError(BackendError):
    def __init__(self, kind: str, detail: str, retry_after: float | None = None):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.retry_after = retry_after


class SampleError(BackendError):
    def __init__(self, code: str, detail: str, status: int | None = None):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.status = status


class FatalError(BackendError):
    pass


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date).

    >>> parse_retry_after("3")
    3.0
    """
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def response_format_payload(mode: str, template: PromptTemplate, via_base_url: bool) -> dict[str, Any] | None:
    """The ``response_format`` sent for a mode (`RatingConfig.response_format`, minus ``auto``).

    Through a ``base_url``, `huggingface_hub` rewrites OpenAI's ``json_schema`` form into TGI's
    ``{"type": "json_object", "value": schema}``; llama.cpp reads the schema from ``schema`` instead.
    So for endpoints we send ``json_object`` with the schema under both names: TGI and llama.cpp
    constrain to the schema, servers that know neither key (vLLM) still constrain to JSON.
    """
    if mode == "text":
        return None
    if mode == "json_object":
        return {"type": "json_object"}
    if mode == "json_schema":
        schema = template.json_schema()
        if via_base_url:
            return {"type": "json_object", "value": schema, "schema": schema}
        return {"type": "json_schema", "json_schema": {"name": "rating", "schema": schema, "strict": True}}
    raise ValueError(f"Unknown response_format mode {mode!r}")


def _http_detail(response: Any) -> str:
    try:
        text = response.text
    except Exception:  # a streamed or closed body has no text; the status says enough
        text = ""
    return " ".join(str(text).split())[:300]


def classify_error(err: BaseException, url: str | None) -> BackendError:
    """Map a client exception to retryable / per-sample / fatal."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    where = url or "the inference provider"
    if isinstance(err, BackendError):
        return err
    if isinstance(err, OfflineModeIsEnabled):
        return FatalError(
            f"HF_HUB_OFFLINE=1 makes huggingface_hub refuse every request, even to {where}. Unset HF_HUB_OFFLINE "
            "in the process that rates (or set huggingface_hub.constants.HF_HUB_OFFLINE = False)."
        )
    if isinstance(err, (asyncio.TimeoutError, TimeoutError)):
        return RetryableError("timeout", f"no answer from {where} in time")
    if isinstance(err, HfHubHTTPError) and getattr(err, "response", None) is not None:
        response = err.response
        status = int(response.status_code)
        detail = _http_detail(response)
        if status in (408, 425, 429) or status >= 500:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            return RetryableError(f"http_{status}", detail or f"HTTP {status} from {where}", retry_after)
        if status in (401, 403):
            return FatalError(
                f"{where} refused the credentials (HTTP {status}: {detail}). Pass api_key= / --api_key, or set HF_TOKEN."
            )
        if status == 404:
            return FatalError(
                f"{where} answered 404 ({detail}). Check base_url (the server root or its /v1, e.g. "
                "http://host:8080) and that `model` names a model the server serves."
            )
        return SampleError("bad_request", f"HTTP {status}: {detail}", status)
    try:
        import httpx2

        transport_errors: tuple[type[BaseException], ...] = (httpx2.TransportError, ConnectionError)
    except ImportError:  # pragma: no cover - huggingface_hub 2.x depends on httpx2
        transport_errors = (ConnectionError,)
    if isinstance(err, transport_errors):
        return RetryableError("connection", f"{type(err).__name__}: {err or 'connection failed'} ({where})")
    if isinstance(err, (ValueError, KeyError, TypeError, IndexError, AttributeError)):
        # A 200 whose body is not a chat completion: a proxy or server glitch, worth another try.
        return RetryableError("bad_response", f"{type(err).__name__}: {str(err)[:200]} ({where})")
    if isinstance(err, OSError):
        return RetryableError("connection", f"{type(err).__name__}: {err} ({where})")
    return FatalError(f"Unexpected error talking to {where}: {type(err).__name__}: {err}")


class ServerBackend:
    """Any OpenAI-compatible chat server through `huggingface_hub.AsyncInferenceClient.chat_completion`.

    Several ``base_url``s share the load: each attempt goes to the endpoint with the fewest requests
    in flight, skipping for a moment one that just failed.
    """

    kind = "server"

    def __init__(self, config: RatingConfig, template: PromptTemplate):
        self.config = config
        self.template = template
        self.endpoints: list[str | None] = list(config.base_url) if config.base_url else [None]
        self._clients: dict[str | None, Any] = {}
        self._in_flight = {e: 0 for e in self.endpoints}
        self._cooldown_until = {e: 0.0 for e in self.endpoints}
        self._round_robin = itertools.count()

    def _client(self, endpoint: str | None) -> Any:
        client = self._clients.get(endpoint)
        if client is None:
            from huggingface_hub import AsyncInferenceClient

            kwargs: dict[str, Any] = {"timeout": self.config.request_timeout}
            if self.config.api_key:
                kwargs["api_key"] = self.config.api_key
            if endpoint is not None:
                kwargs["base_url"] = endpoint
            else:
                kwargs["provider"] = self.config.provider
            client = AsyncInferenceClient(**kwargs)
            self._clients[endpoint] = client
        return client

    def _pick(self) -> str | None:
        if len(self.endpoints) == 1:
            return self.endpoints[0]
        now = time.monotonic()
        start = next(self._round_robin)
        order = [self.endpoints[(start + i) % len(self.endpoints)] for i in range(len(self.endpoints))]
        return min(order, key=lambda e: (self._cooldown_until[e] > now, self._in_flight[e]))

    def response_format(self, mode: str) -> dict[str, Any] | None:
        return response_format_payload(mode, self.template, via_base_url=self.config.base_url is not None)

    async def complete(self, messages: list[dict[str, str]], decoding: dict[str, Any], mode: str) -> Completion:
        endpoint = self._pick()
        client = self._client(endpoint)
        self._in_flight[endpoint] += 1
        try:
            out = await asyncio.wait_for(
                client.chat_completion(
                    messages,
                    model=self.config.model,
                    max_tokens=decoding.get("max_tokens"),
                    temperature=decoding.get("temperature"),
                    top_p=decoding.get("top_p"),
                    seed=decoding.get("seed"),
                    response_format=self.response_format(mode),
                ),
                timeout=self.config.request_timeout,
            )
            choice = out.choices[0]
            usage = getattr(out, "usage", None)
            return Completion(
                text=choice.message.content,
                finish_reason=choice.finish_reason,
                prompt_tokens=getattr(usage, "prompt_tokens", None),
                completion_tokens=getattr(usage, "completion_tokens", None),
            )
        except asyncio.CancelledError:
            raise
        except BaseException as err:  # noqa: BLE001 - every failure is classified, none swallowed
            if isinstance(err, (KeyboardInterrupt, SystemExit)):
                raise
            classified = classify_error(err, endpoint)
            if isinstance(classified, RetryableError):
                self._cooldown_until[endpoint] = time.monotonic() + 2.0
            raise classified from err
        finally:
            self._in_flight[endpoint] -= 1

    async def aclose(self) -> None:
        for client in self._clients.values():
            try:
                await client.close()
            except Exception:  # closing a client whose loop is gone must not mask the real outcome
                pass
        self._clients.clear()


class TransformersBackend:
    """A local causal LM: batched `generate` with the model's chat template and left padding.

    Requests from concurrent samples are gathered into batches of ``config.batch_size``; generation
    runs in a worker thread so the event loop keeps collecting the next batch. No constrained
    decoding: answers are parsed from text (``response_format`` is recorded as ``text``).
    """

    kind = "transformers"

    def __init__(self, config: RatingConfig, template: PromptTemplate):
        self.config = config
        self.template = template
        self._model: Any = None
        self._tokenizer: Any = None
        self._queue: list[tuple[list[dict[str, str]], dict[str, Any], asyncio.Future]] = []
        self._worker: asyncio.Task | None = None
        self.batch_sizes: list[int] = []  # one entry per `generate` call

    def response_format(self, mode: str) -> None:
        return None

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch

        from ds2_hf.models import load_causal_lm

        device_map = self.config.device_map
        if device_map is None and torch.cuda.is_available():
            device_map = "auto"
        model, tokenizer = load_causal_lm(
            self.config.model,
            gguf_file=self.config.gguf_file,
            dtype=self.config.dtype,
            device_map=device_map,
            padding_side="left",
        )
        model.eval()
        if model.generation_config is not None and model.generation_config.pad_token_id is None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
        self._model, self._tokenizer = model, tokenizer

    def _generate(self, batch: list[tuple[list[dict[str, str]], dict[str, Any]]]) -> list[Completion]:
        import torch

        self._load()
        tokenizer, model = self._tokenizer, self._model
        decoding = batch[0][1]
        prompts = [tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m, _ in batch]
        encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        temperature = float(decoding.get("temperature") or 0.0)
        kwargs: dict[str, Any] = {"max_new_tokens": int(decoding["max_tokens"]), "pad_token_id": tokenizer.pad_token_id}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature)
            if decoding.get("top_p") is not None:
                kwargs["top_p"] = float(decoding["top_p"])
            if decoding.get("seed") is not None:
                torch.manual_seed(int(decoding["seed"]))
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            output = model.generate(**encoded, **kwargs)
        new_tokens = output[:, encoded["input_ids"].shape[1] :]
        eos_ids = model.generation_config.eos_token_id
        eos_ids = set(eos_ids if isinstance(eos_ids, list) else [eos_ids]) | {tokenizer.eos_token_id}
        results = []
        for row, mask in zip(new_tokens.tolist(), encoded["attention_mask"].tolist()):
            end = next((i for i, tok in enumerate(row) if tok in eos_ids), None)
            kept = row if end is None else row[:end]
            results.append(
                Completion(
                    text=tokenizer.decode(kept, skip_special_tokens=True),
                    finish_reason="length" if end is None else "stop",
                    prompt_tokens=int(sum(mask)),
                    completion_tokens=len(kept),
                )
            )
        return results

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            # Let every sample task that is about to ask get into this batch.
            for _ in range(3):
                await asyncio.sleep(0)
            first = self._queue[0][1]
            batch = [item for item in self._queue if item[1] == first][: self.config.batch_size]
            for item in batch:
                self._queue.remove(item)
            self.batch_sizes.append(len(batch))
            try:
                results = await loop.run_in_executor(None, self._generate, [(m, d) for m, d, _ in batch])
            except Exception as err:  # noqa: BLE001 - reported to every waiting sample
                fatal = FatalError(f"transformers generation failed for {self.config.model}: {type(err).__name__}: {err}")
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(fatal)
                continue
            for (_, _, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)

    async def complete(self, messages: list[dict[str, str]], decoding: dict[str, Any], mode: str) -> Completion:
        future = asyncio.get_running_loop().create_future()
        self._queue.append((messages, dict(decoding), future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.ensure_future(self._drain())
        return await future

    async def aclose(self) -> None:
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()


def make_backend(config: RatingConfig, template: PromptTemplate) -> ServerBackend | TransformersBackend:
    """The backend `config.backend` names."""
    if config.backend == "transformers":
        return TransformersBackend(config, template)
    return ServerBackend(config, template)
