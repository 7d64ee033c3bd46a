"""`RatingConfig`: every option of a rating run, one dataclass for Python, YAML and the CLI."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

BACKENDS = ("server", "transformers")
RESPONSE_FORMATS = ("auto", "json_schema", "json_object", "text")


@dataclass
class RatingConfig:
    """How to rate samples with an LLM (see `ds2_hf.rate`).

    Example:

        >>> cfg = RatingConfig(model="meta-llama/Llama-3.1-8B-Instruct", base_url=["http://tgi:8080"])
        >>> cfg.decoding()
        {'temperature': 0.0, 'top_p': None, 'max_tokens': 128, 'seed': 0}

    Everything here that changes an answer (model, template, decoding, response format, backend)
    goes into the request cache key; throughput and robustness knobs do not.
    """

    model: Optional[str] = field(
        default=None,
        metadata={"help": "Model name sent to the server (server backend) or hub id / folder to load (transformers backend)."},
    )
    backend: str = field(default="server", metadata={"help": f"One of {BACKENDS}."})
    base_url: Optional[list[str]] = field(
        default=None,
        metadata={
            "help": "OpenAI-compatible endpoint(s) (TGI, vLLM, SGLang, llama.cpp, OpenAI...), e.g. "
            "http://127.0.0.1:8080 or .../v1. Several URLs share the load. Unset: HF Inference Providers."
        },
    )
    api_key: Optional[str] = field(default=None, metadata={"help": "Bearer token for the endpoint (default: the client's, e.g. HF_TOKEN)."})
    provider: Optional[str] = field(default=None, metadata={"help": "Inference provider when base_url is unset (e.g. 'together', 'auto')."})
    template: str = field(default="ds2", metadata={"help": "Built-in template name ('ds2', 'alpagasus', 'ds2@1') or a YAML/JSON template file."})
    # decoding (part of the cache key)
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature (0 = greedy, the default)."})
    top_p: Optional[float] = field(default=None, metadata={"help": "Nucleus sampling mass (unset: server default)."})
    max_tokens: int = field(default=128, metadata={"help": "Most new tokens per answer."})
    seed: Optional[int] = field(default=0, metadata={"help": "Sampling seed sent with every request."})
    response_format: str = field(
        default="auto",
        metadata={
            "help": "Constrained decoding: 'json_schema' (template's schema), 'json_object' (any JSON), 'text' "
            "(none), or 'auto' (json_schema, falling back to text if the server rejects it)."
        },
    )
    max_sample_chars: Optional[int] = field(
        default=None, metadata={"help": "Cut longer serialized samples to this many characters (head + tail)."}
    )
    # failures
    max_reasks: int = field(default=2, metadata={"help": "Follow-up requests after an unusable answer before giving up."})
    failure_score: Optional[int] = field(
        default=None,
        metadata={"help": "Paper compatibility: give failed samples this score (the authors used 0). Default: null."},
    )
    # throughput and robustness
    concurrency: int = field(default=16, metadata={"help": "Requests in flight per process (server backend)."})
    request_timeout: float = field(default=120.0, metadata={"help": "Seconds one request may take before it is retried."})
    max_retries: int = field(default=6, metadata={"help": "Retries of a request on connection errors, timeouts, 429 and 5xx."})
    backoff_base: float = field(default=0.5, metadata={"help": "First retry delay in seconds; doubles each retry, with jitter."})
    backoff_max: float = field(default=30.0, metadata={"help": "Cap of one backoff delay in seconds."})
    max_retry_after: float = field(default=120.0, metadata={"help": "Cap on a server's Retry-After wait in seconds."})
    error_budget: float = field(
        default=0.2,
        metadata={"help": "Stop the run when more than this fraction of samples got no answer (failed after all retries, or rejected)."},
    )
    error_budget_min_samples: int = field(
        default=20, metadata={"help": "Samples to finish before the error budget is checked."}
    )
    # cache
    cache: bool = field(default=True, metadata={"help": "Keep every answer in a SQLite cache so reruns resend nothing."})
    cache_path: Optional[str] = field(
        default=None, metadata={"help": "SQLite file of the request cache (default: $HF_HOME/ds2_hf/rating/requests.sqlite)."}
    )
    # output
    record_metadata: bool = field(default=True, metadata={"help": "Add rating_model and rating_template columns."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar with rate, cache hits and failures."})
    # transformers backend
    gguf_file: Optional[str] = field(default=None, metadata={"help": "GGUF file name inside `model` (transformers backend)."})
    device_map: Optional[str] = field(default=None, metadata={"help": "transformers device_map (default: 'auto' when CUDA is available)."})
    dtype: str = field(default="auto", metadata={"help": "torch dtype for the transformers backend."})
    batch_size: int = field(default=16, metadata={"help": "Generation batch size of the transformers backend."})

    def __post_init__(self) -> None:
        if isinstance(self.base_url, str):
            self.base_url = [self.base_url]
        if self.base_url is not None:
            self.base_url = [u.rstrip("/") for u in self.base_url if u]
            if not self.base_url:
                self.base_url = None
        problems = []
        if self.backend not in BACKENDS:
            problems.append(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.response_format not in RESPONSE_FORMATS:
            problems.append(f"response_format must be one of {RESPONSE_FORMATS}, got {self.response_format!r}")
        if self.backend == "transformers" and not self.model:
            problems.append("the transformers backend needs `model` (a hub id or a local folder)")
        if self.backend == "server" and not self.model and not self.base_url:
            problems.append("give `model` (a hub id for HF Inference Providers) and/or `base_url` (your server)")
        for name in ("max_tokens", "concurrency", "batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_reasks", "max_retries", "error_budget_min_samples"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("request_timeout", "backoff_max", "max_retry_after"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be > 0, got {getattr(self, name)}")
        if self.backoff_base < 0:
            problems.append(f"backoff_base must be >= 0, got {self.backoff_base}")
        if not 0.0 <= self.error_budget <= 1.0:
            problems.append(f"error_budget is a fraction in [0, 1], got {self.error_budget}")
        if self.temperature < 0:
            problems.append(f"temperature must be >= 0, got {self.temperature}")
        if problems:
            raise ValueError("Invalid RatingConfig: " + "; ".join(problems) + ".")

    def decoding(self) -> dict[str, Any]:
        """The decoding parameters sent with (and cached under) every request."""
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens, "seed": self.seed}

    def to_dict(self, redact: bool = True) -> dict[str, Any]:
        data = asdict(self)
        if redact and data.get("api_key"):
            data["api_key"] = "***"
        return data
