"""Generation and scoring backends for the evaluation harness.

- ``TransformersBackend``: batched greedy generation with stop sequences, per-continuation
  log-likelihoods, and one-forward-pass next-token scores for lettered choices (MMLU).
- ``ServerBackend``: generation through a running server (vLLM, TGI, llama.cpp,
  ``transformers serve``). ``api="completions"`` posts the raw prompt to the OpenAI completions
  route (``/v1/completions``), which keeps the protocol's no-chat-template prompts;
  ``api="chat"`` goes through ``huggingface_hub.InferenceClient.chat_completion`` and so through
  the server's chat template (recorded in the results; not comparable with the paper's numbers).
  Servers do not give prompt log-likelihoods uniformly, so multiple-choice tasks are scored by a
  ``TransformersBackend`` passed as ``scorer``.

    >>> from ds2_hf.evaluation.backends import TransformersBackend
    >>> backend = TransformersBackend.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")
    >>> backend.generate(["Q: What is 2 + 2?\\nA:"], max_new_tokens=8, stop=["\\n"])
    [' 4']
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut ``text`` at the earliest occurrence of any stop sequence.

    >>> truncate_at_stop("42\\n\\nQ: next", ["\\n\\n", "Q:"])
    '42'
    """
    cut = len(text)
    for s in stop:
        if s:
            index = text.find(s)
            if index != -1:
                cut = min(cut, index)
    return text[:cut]


class Backend(Protocol):
    """What the harness needs from a model."""

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, stop: Sequence[str]) -> list[str]: ...

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]: ...

    def choice_logprobs(self, prompts: Sequence[str], choices: Sequence[str]) -> list[list[float]]: ...

    def describe(self) -> dict[str, Any]: ...


def _batches(order: Sequence[int], size: int, lengths: Sequence[int] | None = None) -> list[list[int]]:
    """Consecutive chunks of ``order`` (sorted longest first) of at most ``size`` items.

    With ``lengths``, a chunk also ends before an item shorter than 3/4 of the chunk's first (longest)
    item, so left padding never wastes more than a quarter of a batch's compute.
    """
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < size and (lengths is None or lengths[i] * 4 >= lengths[batches[-1][0]] * 3):
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


class TransformersBackend:
    """A causal LM loaded with ``transformers``; greedy decoding, fp32/bf16 as loaded."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        batch_size: int = 8,
        name: str | None = None,
        share_prefix: bool = True,
        progress: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.share_prefix = share_prefix
        self.progress = progress
        self.name = name or getattr(model.config, "_name_or_path", "model")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        limits = [
            getattr(model.config, "max_position_embeddings", None),
            tokenizer.model_max_length if tokenizer.model_max_length < 10**7 else None,
        ]
        self.max_length = min(x for x in limits if x) if any(limits) else 4096

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        gguf_file: str | None = None,
        dtype: Any = "auto",
        device: str | None = None,
        batch_size: int = 8,
    ) -> TransformersBackend:
        """Load a hub id, a local folder, or a ``.gguf`` file path (or folder + ``gguf_file``)."""
        import torch

        from ds2_hf.models import load_causal_lm

        path = Path(str(name_or_path)).expanduser()
        if gguf_file is None and path.suffix == ".gguf":
            if not path.is_file():
                raise FileNotFoundError(f"GGUF file not found: {path}")
            name_or_path, gguf_file = path.parent, path.name
        if isinstance(dtype, str) and dtype not in ("auto",):
            dtype = getattr(torch, dtype)
        model, tokenizer = load_causal_lm(name_or_path, gguf_file=gguf_file, dtype=dtype)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model.to(device)
        return cls(model, tokenizer, batch_size=batch_size, name=str(path if path.exists() else name_or_path))

    def _progress(self, batches: list[Any], desc: str) -> Any:
        from tqdm.auto import tqdm

        return tqdm(batches, desc=desc, unit="batch", leave=False, disable=not self.progress or len(batches) < 2)

    @property
    def _cache_kwarg(self) -> str:
        import inspect

        # transformers renamed `past_key_values` to `cache` during 5.x.
        return "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "transformers",
            "model": self.name,
            "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
            "device": str(self.device),
            "batch_size": self.batch_size,
            "max_length": self.max_length,
        }

    # -- generation --------------------------------------------------------------------------

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, stop: Sequence[str] = ()) -> list[str]:
        """Greedy continuations of each prompt, cut at the first stop sequence (the stop text is dropped)."""
        import torch
        from transformers import GenerationConfig

        tok = self.tokenizer
        encoded = [tok(p)["input_ids"] for p in prompts]
        budget = max(1, self.max_length - max_new_tokens)
        truncated = sum(len(ids) > budget for ids in encoded)
        if truncated:
            logger.warning("%d prompt(s) longer than %d tokens were cut from the left.", truncated, budget)
        encoded = [ids[-budget:] for ids in encoded]
        eos = self.model.generation_config.eos_token_id
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=tok.pad_token_id,
            eos_token_id=eos if eos is not None else tok.eos_token_id,
            stop_strings=[s for s in stop if s] or None,
        )
        outputs: list[str] = [""] * len(prompts)
        # Longest first so padding per batch stays small and memory peaks early.
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        for batch in self._progress(_batches(order, self.batch_size, [len(ids) for ids in encoded]), "generate"):
            input_ids, attention = self._left_pad([encoded[i] for i in batch])
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=input_ids, attention_mask=attention, generation_config=config, tokenizer=tok
                )
            new_tokens = out[:, input_ids.shape[1] :]
            for i, text in zip(batch, tok.batch_decode(new_tokens, skip_special_tokens=True)):
                outputs[i] = truncate_at_stop(text, stop)
        return outputs

    def _left_pad(self, sequences: Sequence[Sequence[int]]) -> tuple[Any, Any]:
        import torch

        width = max(len(s) for s in sequences)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(sequences), width), pad, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            if seq:
                ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
                mask[row, width - len(seq) :] = 1
        return ids.to(self.device), mask.to(self.device)

    # -- scoring -----------------------------------------------------------------------------

    def _context_ids(self, context: str) -> list[int]:
        ids = self.tokenizer(context)["input_ids"] if context else []
        if not ids:  # score from the start of text
            start = self.tokenizer.bos_token_id
            ids = [start if start is not None else self.tokenizer.eos_token_id]
        return ids

    def _forward_last(self, sequences: Sequence[Sequence[int]], keep: int) -> Any:
        """Log-probabilities over the vocabulary at the last ``keep`` positions of each left-padded row."""
        import torch

        input_ids, attention = self._left_pad(sequences)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = self.model(
                input_ids=input_ids, attention_mask=attention, position_ids=positions, logits_to_keep=keep
            ).logits
        return torch.log_softmax(logits.float(), dim=-1)

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        """Sum of log-probabilities of each ``continuation`` token given its ``context``.

        Requests sharing a context (a multiple-choice question's answers) reuse one forward pass over
        the context through the KV cache; the rest are batched whole.
        """
        groups: dict[str, list[int]] = {}
        for i, (context, _) in enumerate(requests):
            groups.setdefault(context, []).append(i)
        scores: list[float | None] = [None] * len(requests)
        if self.share_prefix:
            for context, idx in self._progress(list(groups.items()), "score"):
                if len(idx) > 1:
                    values = self._shared_context(context, [requests[i][1] for i in idx])
                    if values is not None:
                        for i, v in zip(idx, values):
                            scores[i] = v
        rest = [i for i, s in enumerate(scores) if s is None]
        for i, v in zip(rest, self._loglikelihood_whole([requests[i] for i in rest])):
            scores[i] = v
        return [float(s) for s in scores]  # type: ignore[arg-type]

    def _continuation_ids(self, continuation: str) -> list[int]:
        cont = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
        if not cont:
            raise ValueError(f"Continuation {continuation!r} encodes to no tokens; nothing to score.")
        return cont

    def _shared_context(self, context: str, continuations: Sequence[str]) -> list[float] | None:
        """Score continuations of one context from a cached context pass; None if it does not fit or fails."""
        import copy

        import torch

        ctx = self._context_ids(context)
        conts = [self._continuation_ids(c) for c in continuations]
        if len(ctx) + max(len(c) for c in conts) > self.max_length:
            return None
        try:
            with torch.inference_mode():
                out = self.model(input_ids=torch.tensor([ctx], device=self.device), use_cache=True)
                first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
                cache = getattr(out, "cache", None) or out.past_key_values
                values: list[float] = []
                for chunk in _batches(range(len(conts)), self.batch_size):
                    rows = [conts[i] for i in chunk]
                    width = max(len(r) for r in rows)
                    ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
                    mask = torch.zeros((len(rows), len(ctx) + width), dtype=torch.long)
                    mask[:, : len(ctx)] = 1
                    for r, cont in enumerate(rows):
                        ids[r, : len(cont)] = torch.tensor(cont)
                        mask[r, len(ctx) : len(ctx) + len(cont)] = 1
                    positions = torch.arange(len(ctx), len(ctx) + width).expand(len(rows), -1)
                    chunk_cache = copy.deepcopy(cache)
                    chunk_cache.batch_repeat_interleave(len(rows))
                    logits = self.model(
                        input_ids=ids.to(self.device),
                        attention_mask=mask.to(self.device),
                        position_ids=positions.to(self.device),
                        use_cache=True,
                        **{self._cache_kwarg: chunk_cache},
                    ).logits
                    logprobs = torch.log_softmax(logits.float(), dim=-1)
                    for r, cont in enumerate(rows):
                        total = float(first[cont[0]])
                        for j in range(1, len(cont)):
                            total += float(logprobs[r, j - 1, cont[j]])
                        values.append(total)
            return values
        except (AttributeError, NotImplementedError, TypeError) as err:
            # Caches without batch expansion (some architectures): score whole sequences instead.
            logger.info("Shared-context scoring unavailable for %s (%s); scoring whole sequences.", self.name, err)
            self.share_prefix = False
            return None

    def _loglikelihood_whole(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        import torch

        if not requests:
            return []
        items = []
        for context, continuation in requests:
            cont = self._continuation_ids(continuation)
            ids = (self._context_ids(context) + cont)[-self.max_length :]
            items.append((ids, min(len(cont), len(ids) - 1)))
        scores = [0.0] * len(items)
        order = sorted(range(len(items)), key=lambda i: -len(items[i][0]))
        for batch in self._progress(_batches(order, self.batch_size, [len(ids) for ids, _ in items]), "score"):
            keep = max(items[i][1] for i in batch) + 1
            logprobs = self._forward_last([items[i][0] for i in batch], keep)
            for row, i in enumerate(batch):
                ids, n = items[i]
                # logits at position t predict token t+1: the last n+1 kept positions minus the final one.
                picked = logprobs[row, keep - n - 1 : keep - 1]
                targets = torch.tensor(ids[-n:], dtype=torch.long, device=logprobs.device)
                scores[i] = float(picked.gather(-1, targets[:, None]).sum())
        return scores

    def choice_logprobs(self, prompts: Sequence[str], choices: Sequence[str]) -> list[list[float]]:
        """Per prompt, the log-probability of each choice as the next token (one forward pass per prompt).

        Falls back to full continuation log-likelihoods when a choice is not a single token.
        """
        token_ids = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in choices]
        if any(len(t) != 1 for t in token_ids) or len({t[0] for t in token_ids}) != len(choices):
            flat = self.loglikelihood([(p, c) for p in prompts for c in choices])
            k = len(choices)
            return [flat[i * k : (i + 1) * k] for i in range(len(prompts))]
        wanted = [t[0] for t in token_ids]
        encoded = [self._context_ids(p)[-self.max_length :] for p in prompts]
        out: list[list[float]] = [[] for _ in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        for batch in self._progress(_batches(order, self.batch_size, [len(ids) for ids in encoded]), "score"):
            logprobs = self._forward_last([encoded[i] for i in batch], keep=1)
            for row, i in enumerate(batch):
                out[i] = [float(logprobs[row, -1, t]) for t in wanted]
        return out


class ServerBackend:
    """Generation from a running OpenAI-compatible server; scoring delegated to ``scorer``."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api: str = "completions",
        scorer: Backend | None = None,
        max_concurrency: int = 8,
        timeout: float = 600.0,
        api_key: str | None = None,
    ) -> None:
        if api not in ("completions", "chat"):
            raise ValueError(f"api must be 'completions' (raw prompts) or 'chat' (chat template), got {api!r}")
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.model = model
        self.api = api
        self.scorer = scorer
        self.max_concurrency = max(1, max_concurrency)
        self.timeout = timeout
        self.api_key = api_key
        self._client: Any = None

    def describe(self) -> dict[str, Any]:
        info = {"backend": "server", "base_url": self.base_url, "model": self.model, "api": self.api}
        if self.api == "chat":
            info["note"] = "prompts went through the server's chat template"
        if self.scorer is not None:
            info["scorer"] = self.scorer.describe()
        return info

    def _complete(self, prompt: str, max_new_tokens: int, stop: Sequence[str]) -> str:
        from huggingface_hub import get_session
        from huggingface_hub.utils import hf_raise_for_status

        payload: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": max_new_tokens,
            "temperature": 0.0,
        }
        if stop:
            payload["stop"] = list(stop)
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        # InferenceClient has no raw-prompt call for OpenAI-compatible servers (its text_generation speaks
        # TGI's native schema), so we post to /v1/completions with huggingface_hub's own HTTP session.
        response = get_session().post(
            f"{self.base_url}/v1/completions", json=payload, headers=headers, timeout=self.timeout
        )
        hf_raise_for_status(response)
        return response.json()["choices"][0]["text"] or ""

    def _chat(self, prompt: str, max_new_tokens: int, stop: Sequence[str]) -> str:
        if self._client is None:
            from huggingface_hub import InferenceClient

            self._client = InferenceClient(base_url=f"{self.base_url}/v1", api_key=self.api_key, timeout=self.timeout)
        out = self._client.chat_completion(
            messages=[{"role": "user", "content": prompt}],
            model=self.model,
            max_tokens=max_new_tokens,
            temperature=0.0,
            stop=list(stop) or None,
        )
        return out.choices[0].message.content or ""

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, stop: Sequence[str] = ()) -> list[str]:
        """Greedy (temperature 0) completions, requested concurrently so the server can batch them."""
        call = self._complete if self.api == "completions" else self._chat
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            texts = list(pool.map(lambda p: call(p, max_new_tokens, stop), prompts))
        # Servers differ in whether they include or honour stop strings; cut client-side as well.
        return [truncate_at_stop(t, stop) for t in texts]

    def _need_scorer(self) -> Backend:
        if self.scorer is None:
            raise ValueError(
                "Multiple-choice tasks (mmlu, truthfulqa) need log-likelihoods, which this harness computes "
                "with transformers: give the server backend a scorer (EvalConfig.model must then be loadable "
                "by transformers), or drop those tasks."
            )
        return self.scorer

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        return self._need_scorer().loglikelihood(requests)

    def choice_logprobs(self, prompts: Sequence[str], choices: Sequence[str]) -> list[list[float]]:
        return self._need_scorer().choice_logprobs(prompts, choices)
